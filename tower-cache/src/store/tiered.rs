//! L1 in front of L2, coherent across instances through Redis pub/sub.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{RwLock, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::breaker::{Breaker, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_INTERVAL};
use super::replay::{DEFAULT_MAX_PENDING_INVALIDATIONS, Invalidation, ReplayQueue};
use super::{MemoryStore, RedisStore, Store, StoreError};
use crate::clock;
use crate::entry::Entry;

/// Default cap on how long an L1 copy lives: 30 s.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(30);
/// How many tag invalidations L1 remembers to refuse entries loaded before
/// them.
const SEEN_TAGS: u64 = 10_000;
/// Stripes of the per-key invalidation generation.
const STRIPES: usize = 64;

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
    /// Removes and tag invalidations that could not reach L2 and are
    /// waiting to be replayed.
    pub invalidations_pending: u64,
    /// Removes and tag invalidations replayed to L2 after it came back.
    pub invalidations_replayed: u64,
    /// Times the replay queue overflowed (each costs one namespace-wide
    /// L2 invalidation on recovery).
    pub pending_overflows: u64,
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
    replayed: AtomicU64,
}

/// Fences between L1 copies of L2 reads and invalidations. Every
/// invalidation applied to L1 (local or received) bumps a generation under
/// a write lock: per key stripe for a key, globally for a tag or a clear. A
/// read takes a snapshot before it goes to L2 and copies what it found into
/// L1 under the read locks, only if the snapshot is unchanged, so a value
/// read just before an invalidation is never put back into L1 after it.
struct Fences {
    global: RwLock<u64>,
    stripes: Box<[RwLock<u64>]>,
}

impl Fences {
    fn new() -> Self {
        Fences {
            global: RwLock::new(0),
            stripes: (0..STRIPES).map(|_| RwLock::new(0)).collect(),
        }
    }

    fn stripe(&self, key: &str) -> &RwLock<u64> {
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        &self.stripes[(h.finish() as usize) % self.stripes.len()]
    }

    async fn snapshot(&self, key: &str) -> (u64, u64) {
        let global = *self.global.read().await;
        (global, *self.stripe(key).read().await)
    }
}

/// What the store and its invalidation subscriber share.
struct Shared {
    l1: MemoryStore,
    l2: RedisStore,
    l1_ttl: Duration,
    publish_puts: bool,
    channel: String,
    instance: String,
    breaker: Breaker,
    counters: Counters,
    fences: Fences,
    /// When each recently invalidated tag was last invalidated, as this
    /// instance saw it.
    seen_tags: moka::future::Cache<String, u64>,
    /// The latest namespace-wide invalidation this instance saw.
    seen_all: AtomicU64,
    /// What missed L2; replayed before L2 is read again.
    replay: ReplayQueue,
}

struct Inner {
    shared: Arc<Shared>,
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
///   [`TieredStoreBuilder::l1_ttl`] (default 30 s, never more than L2's
///   [`max_ttl`](super::RedisStoreBuilder::max_ttl)) and never past the
///   entry's own stale window. A copy is not made when an invalidation of
///   the key (or any tag invalidation) was applied while L2 was being read,
///   so a value read just before a remove is never put back into L1 after
///   it.
/// - **Writes and removes** go to both. Every remove and tag invalidation,
///   and by default every write, is published on a Redis channel; every
///   other `TieredStore` on that channel drops the key or tag from its L1.
///   An instance ignores its own messages. L1 refuses an entry whose
///   [`Entry::stored_at`] is not after a tag invalidation it has seen (one
///   loaded before the invalidation and written after it).
/// - **Fail-open**: an L2 error or timeout never reaches the caller; the
///   store answers from L1 (a read that misses L1 is a miss). After
///   [`TieredStoreBuilder::failure_threshold`] consecutive failures
///   (default 3) a circuit breaker stops calling L2, logs one warning, and
///   probes it again every [`TieredStoreBuilder::retry_interval`] (default
///   1 s). When L2 answers again the store logs once, clears its L1 (it may
///   have missed invalidations) and carries on. Only a call started after
///   the breaker opened can close it. The invalidation subscription
///   reconnects by itself and clears L1 when it comes back.
/// - **Nothing removed or overwritten during an outage comes back**: a
///   remove or tag invalidation that could not reach L2 (error, timeout,
///   breaker open), and the key of a write L2 did not take, is kept (up to
///   [`TieredStoreBuilder::max_pending_invalidations`], default 10 000
///   distinct keys and tags) and replayed to L2, and published, before L2
///   is read again and as soon as the subscription is back. When more pile
///   up than that, the store drops the list and instead invalidates every
///   L2 entry of its namespace on recovery
///   ([`RedisStore::invalidate_all`]): L2 starts cold, but never serves
///   what was removed while it was away.
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
        let shared = &self.inner.shared;
        f.debug_struct("TieredStore")
            .field("l1", &shared.l1)
            .field("l2", &shared.l2)
            .field("channel", &shared.channel)
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
    max_pending: usize,
}

impl TieredStoreBuilder {
    /// Longest time an entry stays in L1 before it is read from L2 again.
    /// Bounds how long a missed invalidation can be served. Capped at L2's
    /// [`max_ttl`](super::RedisStoreBuilder::max_ttl). Default:
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

    /// How many distinct removes and tag invalidations are kept for replay
    /// while L2 cannot be reached. Past that, they are dropped and every L2
    /// entry of the namespace is invalidated on recovery instead. Default:
    /// [`DEFAULT_MAX_PENDING_INVALIDATIONS`] (10 000).
    pub fn max_pending_invalidations(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Builds the store and starts its invalidation subscriber (task
    /// `tower_cache.invalidations`). Must be called within a Tokio runtime.
    pub fn build(self) -> TieredStore {
        let channel = self
            .channel
            .unwrap_or_else(|| format!("{}invalidate", self.l2.prefix()));
        let instance = format!("{:016x}", rand::random::<u64>());
        let l1_ttl = self.l1_ttl.min(self.l2.max_ttl());
        let op_timeout = self.l2.op_timeout();
        let seen_tags = moka::future::Cache::builder()
            .max_capacity(SEEN_TAGS)
            .time_to_live(self.l2.max_ttl().max(Duration::from_millis(1)))
            .build();
        let shared = Arc::new(Shared {
            l1: self.l1,
            l2: self.l2,
            l1_ttl,
            publish_puts: self.publish_puts,
            channel: channel.clone(),
            instance,
            breaker: Breaker::new(self.failure_threshold, self.retry_interval, op_timeout),
            counters: Counters::default(),
            fences: Fences::new(),
            seen_tags,
            seen_all: AtomicU64::new(0),
            replay: ReplayQueue::new(self.max_pending),
        });
        let (tx, rx) = watch::channel(false);
        let listener = tokio::spawn(
            listen(shared.clone(), tx)
                .instrument(tracing::info_span!("tower_cache.invalidations", %channel)),
        );
        TieredStore {
            inner: Arc::new(Inner {
                shared,
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
            max_pending: DEFAULT_MAX_PENDING_INVALIDATIONS,
        }
    }

    /// A tiered store over `l1` and `l2` with the defaults.
    pub fn new(l1: MemoryStore, l2: RedisStore) -> Self {
        Self::builder(l1, l2).build()
    }

    /// The L1 store.
    pub fn l1(&self) -> &MemoryStore {
        &self.inner.shared.l1
    }

    /// The L2 store.
    pub fn l2(&self) -> &RedisStore {
        &self.inner.shared.l2
    }

    /// How long an L1 copy lives at most: [`TieredStoreBuilder::l1_ttl`]
    /// capped at L2's `max_ttl`.
    pub fn l1_ttl(&self) -> Duration {
        self.inner.shared.l1_ttl
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
        !self.inner.shared.breaker.is_open()
    }

    /// Current counters.
    pub fn stats(&self) -> TieredStats {
        let shared = &*self.inner.shared;
        let c = &shared.counters;
        let (pending, overflows) = shared.replay.counts();
        TieredStats {
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            l2_errors: c.l2_errors.load(Ordering::Relaxed),
            l2_skipped: c.l2_skipped.load(Ordering::Relaxed),
            outages: c.outages.load(Ordering::Relaxed),
            invalidations_published: c.published.load(Ordering::Relaxed),
            invalidations_received: c.received.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            invalidations_pending: pending,
            invalidations_replayed: c.replayed.load(Ordering::Relaxed),
            pending_overflows: overflows,
        }
    }
}

impl Shared {
    /// Runs `op` against L2 through the circuit breaker, after replaying
    /// what L2 missed. `None` when L2 was skipped or failed.
    async fn l2_call<T, Fut>(&self, op: impl FnOnce() -> Fut) -> Option<T>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some(generation) = self.breaker.allow() else {
            self.counters.l2_skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if self.replay.has_pending()
            && let Err(error) = self.replay_pending().await
        {
            self.on_l2_error(&error);
            return None;
        }
        match op().await {
            Ok(v) => {
                self.on_l2_success(generation).await;
                Some(v)
            }
            Err(error) => {
                self.on_l2_error(&error);
                None
            }
        }
    }

    async fn on_l2_success(&self, generation: u64) {
        if self.breaker.on_success(generation) {
            tracing::info!("cache L2 (Redis) is back; clearing L1 of what it may have missed");
            self.clear_l1().await;
        }
    }

    fn on_l2_error(&self, error: &StoreError) {
        self.counters.l2_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tower_cache_l2_errors_total").increment(1);
        if self.breaker.on_failure(error) {
            self.counters.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "cache L2 (Redis) unavailable; serving from L1 until it returns");
        } else {
            tracing::debug!(%error, "cache L2 (Redis) call failed");
        }
    }

    async fn clear_l1(&self) {
        let mut generation = self.fences.global.write().await;
        *generation += 1;
        self.l1.clear();
    }

    async fn drop_key_from_l1(&self, key: &str) {
        let mut generation = self.fences.stripe(key).write().await;
        *generation += 1;
        let _ = self.l1.remove(key).await;
    }

    async fn drop_tag_from_l1(&self, tag: &str) -> Result<(), StoreError> {
        self.seen_tags.insert(tag.to_owned(), clock::now_ms()).await;
        let mut generation = self.fences.global.write().await;
        *generation += 1;
        self.l1.remove_tag(tag).await
    }

    /// Copies an L2 read into L1 unless an invalidation was applied since
    /// `before` was taken.
    async fn fill_l1(&self, key: &str, entry: Entry, before: (u64, u64)) {
        let global = self.fences.global.read().await;
        let stripe = self.fences.stripe(key).read().await;
        if (*global, *stripe) == before {
            self.l1.put_capped(key, entry, Some(self.l1_ttl)).await;
        }
    }

    /// Whether L1 may hold `entry`: not when a tag invalidation (or a
    /// namespace-wide one) seen here was issued at or after it was loaded.
    async fn l1_admits(&self, entry: &Entry) -> bool {
        if self.seen_all.load(Ordering::Acquire) >= entry.stored_at {
            return false;
        }
        for tag in entry.tags.iter() {
            if let Some(at) = self.seen_tags.get(tag).await
                && at >= entry.stored_at
            {
                return false;
            }
        }
        true
    }

    fn message(&self, kind: char, name: &str) -> String {
        format!("{}|{}|{}", self.instance, kind, name)
    }

    /// Publishes an invalidation; `true` when it was published.
    async fn publish(&self, kind: char, name: &str) -> bool {
        let msgs = [self.message(kind, name)];
        let l2 = &self.l2;
        let channel = self.channel.as_str();
        let published = self
            .l2_call(|| l2.apply_invalidations(false, &[], &[], channel, &msgs))
            .await
            .is_some();
        if published {
            self.counters.published.fetch_add(1, Ordering::Relaxed);
        }
        published
    }

    /// Applies to L2, and publishes, the removes and tag invalidations that
    /// missed it.
    async fn replay_pending(&self) -> Result<(), StoreError> {
        let replayed = self
            .replay
            .replay(|whole, items| async move {
                let mut keys = Vec::new();
                let mut tags = Vec::new();
                let mut messages = Vec::with_capacity(items.len() + 1);
                if whole {
                    messages.push(self.message('a', ""));
                }
                for item in &items {
                    match item {
                        Invalidation::Key(k) => {
                            keys.push(k.as_str());
                            messages.push(self.message('k', k));
                        }
                        Invalidation::Tag(t) => {
                            tags.push(t.as_str());
                            messages.push(self.message('t', t));
                        }
                    }
                }
                self.l2
                    .apply_invalidations(whole, &keys, &tags, &self.channel, &messages)
                    .await?;
                if whole {
                    self.seen_all.fetch_max(clock::now_ms(), Ordering::AcqRel);
                }
                self.counters
                    .published
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
                Ok(items)
            })
            .await?;
        if let Some(replayed) = replayed {
            self.counters
                .replayed
                .fetch_add(replayed as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Store for TieredStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let shared = &*self.inner.shared;
        if let Ok(Some(hit)) = shared.l1.get(key).await {
            shared.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit));
        }
        let before = shared.fences.snapshot(key).await;
        let Some(Some(entry)) = shared.l2_call(|| shared.l2.get_direct(key)).await else {
            return Ok(None);
        };
        if !shared.l1_admits(&entry).await {
            return Ok(None);
        }
        shared.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
        shared.fill_l1(key, entry.clone(), before).await;
        Ok(Some(entry))
    }

    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        let shared = &*self.inner.shared;
        let admitted = shared.l1_admits(&entry).await;
        let l2_entry = entry.clone();
        let stored = shared
            .l2_call(|| shared.l2.put_direct(key, l2_entry))
            .await
            .is_some();
        {
            // Written after L2, under the key's fence, so a concurrent read
            // of the old L2 value cannot overwrite it in L1.
            let mut generation = shared.fences.stripe(key).write().await;
            *generation += 1;
            if admitted {
                shared.l1.put_capped(key, entry, Some(shared.l1_ttl)).await;
            } else {
                let _ = shared.l1.remove(key).await;
            }
        }
        // A write L2 did not take (or other instances did not hear of)
        // becomes a pending remove of the key: L2 never serves a value
        // older than one the application saw written.
        if !stored || (shared.publish_puts && !shared.publish('k', key).await) {
            shared.replay.keep(Invalidation::Key(key.to_owned()));
        }
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let shared = &*self.inner.shared;
        shared.drop_key_from_l1(key).await;
        let removed = shared
            .l2_call(|| shared.l2.remove_direct(key))
            .await
            .is_some();
        // Again once L2 is done: a read that fetched the old value from L2
        // meanwhile must not leave it in L1.
        shared.drop_key_from_l1(key).await;
        if !(removed && shared.publish('k', key).await) {
            shared.replay.keep(Invalidation::Key(key.to_owned()));
        }
        Ok(())
    }

    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        let shared = &*self.inner.shared;
        shared.drop_tag_from_l1(tag).await?;
        let invalidated = shared
            .l2_call(|| shared.l2.remove_tag_direct(tag))
            .await
            .is_some();
        // Again once L2 is done, for reads that fetched tagged values
        // from L2 meanwhile.
        shared.drop_tag_from_l1(tag).await?;
        if !(invalidated && shared.publish('t', tag).await) {
            shared.replay.keep(Invalidation::Tag(tag.to_owned()));
        }
        Ok(())
    }
}

/// The invalidation subscriber: subscribes, applies other instances'
/// invalidations to L1, and on losing the connection resubscribes with
/// backoff, clearing L1 and replaying what L2 missed once it is back.
async fn listen(shared: Arc<Shared>, subscribed: watch::Sender<bool>) {
    let client = shared.l2.client().clone();
    let mut backoff = Duration::from_millis(50);
    let mut ever_subscribed = false;
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&shared.channel).await?;
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
        shared
            .counters
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
        if ever_subscribed {
            shared.clear_l1().await;
            tracing::info!("invalidation channel re-subscribed; L1 cleared");
        }
        ever_subscribed = true;
        subscribed.send_replace(true);
        if shared.replay.has_pending()
            && let Err(error) = shared.replay_pending().await
        {
            tracing::debug!(%error, "replaying missed invalidations failed; will retry");
        }
        // Redis answers again: close the breaker now rather than when
        // traffic that misses L1 happens to probe it.
        if shared.breaker.is_open() {
            let generation = shared.breaker.generation();
            if shared.l2.ping().await.is_ok() {
                shared.on_l2_success(generation).await;
            }
        }

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
            if from == shared.instance {
                continue;
            }
            let applied = match kind {
                "k" => {
                    shared.drop_key_from_l1(name).await;
                    Ok(())
                }
                "t" => shared.drop_tag_from_l1(name).await,
                "a" => {
                    shared.seen_all.fetch_max(clock::now_ms(), Ordering::AcqRel);
                    shared.clear_l1().await;
                    Ok(())
                }
                _ => continue,
            };
            if applied.is_ok() {
                shared.counters.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Logged once per loss: reconnection attempts log at debug level.
        subscribed.send_replace(false);
        tracing::warn!("invalidation channel lost; L1 may miss invalidations until it returns");
    }
}
