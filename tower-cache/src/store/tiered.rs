//! L1 in front of L2, coherent across instances through Redis pub/sub.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{MemoryStore, RedisStore, Store, StoreError};
use crate::clock;
use crate::entry::Entry;

/// Default cap on how long an L1 copy lives: 30 s.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(30);
/// Default wait before L2 is tried again after it failed: 1 s.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Default consecutive L2 failures that open the circuit breaker: 3.
pub const DEFAULT_FAILURE_THRESHOLD: u64 = 3;

/// Counters of a [`TieredStore`], from [`TieredStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TieredStats {
    /// Reads answered by L1.
    pub l1_hits: u64,
    /// Reads answered by L2 (and copied into L1).
    pub l2_hits: u64,
    /// L2 operations that failed (error or timeout).
    pub l2_errors: u64,
    /// L2 operations skipped because the circuit breaker was open.
    pub l2_skipped: u64,
    /// Times L2 became unavailable (circuit breaker opened).
    pub outages: u64,
    /// Invalidations published for other instances.
    pub invalidations_published: u64,
    /// Invalidations received from other instances and applied to L1.
    pub invalidations_received: u64,
    /// Times the invalidation channel was (re)subscribed.
    pub subscriptions: u64,
}

#[derive(Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    l2_errors: AtomicU64,
    l2_skipped: AtomicU64,
    outages: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    subscriptions: AtomicU64,
}

/// Consecutive failures open it; while open, L2 is skipped; after the retry
/// interval one call probes L2; a success closes it.
struct Breaker {
    threshold: u64,
    retry_ms: u64,
    failures: AtomicU64,
    /// 0 when closed; otherwise when the next probe may go out.
    open_until: AtomicU64,
}

impl Breaker {
    fn allow(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = clock::now_ms();
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + self.retry_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }
}

struct Inner {
    l1: MemoryStore,
    l2: RedisStore,
    l1_ttl: Duration,
    publish_puts: bool,
    channel: String,
    instance: String,
    breaker: Breaker,
    counters: Arc<Counters>,
    subscribed: watch::Receiver<bool>,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A [`MemoryStore`] (L1) in front of a [`RedisStore`] (L2).
///
/// - **Reads** try L1, then L2; an L2 hit is copied into L1 for at most
///   [`TieredStoreBuilder::l1_ttl`] (default 30 s) and never past the
///   entry's own stale window.
/// - **Writes and removes** go to both. Every remove and tag invalidation,
///   and by default every write, is published on a Redis channel; every
///   other `TieredStore` on that channel drops the key or tag from its L1.
///   An instance ignores its own messages.
/// - **Fail-open**: an L2 error or timeout never reaches the caller; the
///   store answers from L1 (a read that misses L1 is a miss). After
///   [`TieredStoreBuilder::failure_threshold`] consecutive failures
///   (default 3) a circuit breaker stops calling L2, logs one warning, and
///   probes it again every [`TieredStoreBuilder::retry_interval`] (default
///   1 s). When L2 answers again the store logs once, clears its L1 (it may
///   have missed invalidations) and carries on. The invalidation
///   subscription reconnects by itself and clears L1 when it comes back.
///
/// Cloning is cheap and shares everything. The background subscriber stops
/// when the last clone is dropped.
///
/// ```no_run
/// use tower_cache::store::{MemoryStore, RedisStore, Store, TieredStore};
/// use tower_cache::Entry;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let l1 = MemoryStore::new(64 * 1024 * 1024);
/// let l2 = RedisStore::new("redis://127.0.0.1:6379").expect("valid URL");
/// let store = TieredStore::builder(l1, l2).build();
/// store.ready().await; // subscribed to invalidations
/// store.put("k", Entry::new("v")).await.unwrap();
/// store.remove("k").await.unwrap(); // every other instance drops "k" from its L1
/// # }
/// ```
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("l1", &self.inner.l1)
            .field("l2", &self.inner.l2)
            .field("channel", &self.inner.channel)
            .finish()
    }
}

/// Builds a [`TieredStore`].
#[derive(Debug)]
pub struct TieredStoreBuilder {
    l1: MemoryStore,
    l2: RedisStore,
    l1_ttl: Duration,
    retry_interval: Duration,
    failure_threshold: u64,
    publish_puts: bool,
    channel: Option<String>,
}

impl TieredStoreBuilder {
    /// Longest time an entry stays in L1 before it is read from L2 again.
    /// Bounds how long a missed invalidation can be served. Default:
    /// [`DEFAULT_L1_TTL`] (30 s).
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = ttl;
        self
    }

    /// How often L2 is probed while the circuit breaker is open. Default:
    /// [`DEFAULT_RETRY_INTERVAL`] (1 s).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Consecutive L2 failures that open the circuit breaker. Default:
    /// [`DEFAULT_FAILURE_THRESHOLD`] (3).
    pub fn failure_threshold(mut self, failures: u64) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// Whether writes are published so other instances drop their L1 copy
    /// of the key. Default: `true`. Removes and tag invalidations are
    /// always published.
    pub fn publish_puts(mut self, publish: bool) -> Self {
        self.publish_puts = publish;
        self
    }

    /// The pub/sub channel for invalidations. Default: the L2 prefix
    /// followed by `invalidate`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Builds the store and starts its invalidation subscriber (task
    /// `tower_cache.invalidations`). Must be called within a Tokio runtime.
    pub fn build(self) -> TieredStore {
        let channel = self
            .channel
            .unwrap_or_else(|| format!("{}invalidate", self.l2.prefix()));
        let instance = format!("{:016x}", rand::random::<u64>());
        let counters = Arc::new(Counters::default());
        let (tx, rx) = watch::channel(false);
        let listener = tokio::spawn(
            listen(
                self.l2.client().clone(),
                channel.clone(),
                instance.clone(),
                self.l1.clone(),
                counters.clone(),
                tx,
            )
            .instrument(tracing::info_span!("tower_cache.invalidations", %channel)),
        );
        TieredStore {
            inner: Arc::new(Inner {
                l1: self.l1,
                l2: self.l2,
                l1_ttl: self.l1_ttl,
                publish_puts: self.publish_puts,
                channel,
                instance,
                breaker: Breaker {
                    threshold: self.failure_threshold,
                    retry_ms: self.retry_interval.as_millis() as u64,
                    failures: AtomicU64::new(0),
                    open_until: AtomicU64::new(0),
                },
                counters,
                subscribed: rx,
                listener,
            }),
        }
    }
}

impl TieredStore {
    /// A builder over `l1` and `l2` with the defaults.
    pub fn builder(l1: MemoryStore, l2: RedisStore) -> TieredStoreBuilder {
        TieredStoreBuilder {
            l1,
            l2,
            l1_ttl: DEFAULT_L1_TTL,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            publish_puts: true,
            channel: None,
        }
    }

    /// A tiered store over `l1` and `l2` with the defaults.
    pub fn new(l1: MemoryStore, l2: RedisStore) -> Self {
        Self::builder(l1, l2).build()
    }

    /// The L1 store.
    pub fn l1(&self) -> &MemoryStore {
        &self.inner.l1
    }

    /// The L2 store.
    pub fn l2(&self) -> &RedisStore {
        &self.inner.l2
    }

    /// Waits until the invalidation subscriber is subscribed. Returns at
    /// once when it already is.
    pub async fn ready(&self) {
        let mut rx = self.inner.subscribed.clone();
        // The sender lives as long as the subscriber task, which lives as
        // long as `self`.
        let _ = rx.wait_for(|subscribed| *subscribed).await;
    }

    /// Whether L2 is currently used (circuit breaker closed).
    pub fn l2_available(&self) -> bool {
        self.inner.breaker.open_until.load(Ordering::Acquire) == 0
    }

    /// Current counters.
    pub fn stats(&self) -> TieredStats {
        let c = &self.inner.counters;
        TieredStats {
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            l2_errors: c.l2_errors.load(Ordering::Relaxed),
            l2_skipped: c.l2_skipped.load(Ordering::Relaxed),
            outages: c.outages.load(Ordering::Relaxed),
            invalidations_published: c.published.load(Ordering::Relaxed),
            invalidations_received: c.received.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
        }
    }

    /// Runs `op` against L2 through the circuit breaker. `None` when L2 was
    /// skipped or failed.
    async fn l2_call<T, Fut>(&self, op: impl FnOnce() -> Fut) -> Option<T>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let inner = &*self.inner;
        if !inner.breaker.allow() {
            inner.counters.l2_skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match op().await {
            Ok(v) => {
                self.on_l2_success();
                Some(v)
            }
            Err(error) => {
                self.on_l2_error(&error);
                None
            }
        }
    }

    fn on_l2_success(&self) {
        let b = &self.inner.breaker;
        b.failures.store(0, Ordering::Relaxed);
        if b.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("cache L2 (Redis) is back; clearing L1 of what it may have missed");
            self.inner.l1.clear();
        }
    }

    fn on_l2_error(&self, error: &StoreError) {
        let inner = &*self.inner;
        inner.counters.l2_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tower_cache_l2_errors_total").increment(1);
        let b = &inner.breaker;
        let failures = b.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let open = b.open_until.load(Ordering::Acquire) != 0;
        if open {
            // A failed probe: wait another interval.
            b.open_until
                .store(clock::now_ms() + b.retry_ms, Ordering::Release);
        } else if failures >= b.threshold
            && b.open_until
                .compare_exchange(
                    0,
                    clock::now_ms() + b.retry_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            inner.counters.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "cache L2 (Redis) unavailable; serving from L1 until it returns");
        } else {
            tracing::debug!(%error, "cache L2 (Redis) call failed");
        }
    }

    async fn publish(&self, kind: char, name: &str) {
        let msg = format!("{}|{}|{}", self.inner.instance, kind, name);
        let channel = self.inner.channel.clone();
        let l2 = &self.inner.l2;
        let published = self
            .l2_call(|| async move {
                let mut conn = l2.connection();
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(channel).arg(msg);
                match tokio::time::timeout(l2.op_timeout(), cmd.query_async::<i64>(&mut conn)).await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(StoreError::Backend(e.to_string())),
                    Err(_) => Err(StoreError::Timeout),
                }
            })
            .await;
        if published.is_some() {
            self.inner
                .counters
                .published
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Store for TieredStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let inner = &*self.inner;
        if let Ok(Some(hit)) = inner.l1.get(key).await {
            inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit));
        }
        let Some(Some(entry)) = self.l2_call(|| inner.l2.get(key)).await else {
            return Ok(None);
        };
        inner.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
        inner
            .l1
            .put_capped(key, entry.clone(), Some(inner.l1_ttl))
            .await;
        Ok(Some(entry))
    }

    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        let inner = &*self.inner;
        inner
            .l1
            .put_capped(key, entry.clone(), Some(inner.l1_ttl))
            .await;
        if self.l2_call(|| inner.l2.put(key, entry)).await.is_some() && inner.publish_puts {
            self.publish('k', key).await;
        }
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let inner = &*self.inner;
        inner.l1.remove(key).await?;
        if self.l2_call(|| inner.l2.remove(key)).await.is_some() {
            self.publish('k', key).await;
        }
        Ok(())
    }

    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        let inner = &*self.inner;
        inner.l1.remove_tag(tag).await?;
        if self.l2_call(|| inner.l2.remove_tag(tag)).await.is_some() {
            self.publish('t', tag).await;
        }
        Ok(())
    }
}

/// The invalidation subscriber: subscribes, applies other instances'
/// invalidations to L1, and on losing the connection resubscribes with
/// backoff, clearing L1 once it is back.
async fn listen(
    client: redis::Client,
    channel: String,
    instance: String,
    l1: MemoryStore,
    counters: Arc<Counters>,
    subscribed: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut ever_subscribed = false;
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                tracing::debug!(%error, "invalidation subscription failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                tracing::debug!("invalidation subscription timed out; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        if ever_subscribed {
            l1.clear();
            tracing::info!("invalidation channel re-subscribed; L1 cleared");
        }
        ever_subscribed = true;
        subscribed.send_replace(true);

        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let mut parts = payload.splitn(3, '|');
            let (Some(from), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                tracing::debug!(%payload, "ignoring malformed invalidation message");
                continue;
            };
            if from == instance {
                continue;
            }
            let applied = match kind {
                "k" => l1.remove(name).await,
                "t" => l1.remove_tag(name).await,
                _ => continue,
            };
            if applied.is_ok() {
                counters.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Logged once per loss: reconnection attempts log at debug level.
        subscribed.send_replace(false);
        tracing::warn!("invalidation channel lost; L1 may miss invalidations until it returns");
    }
}
