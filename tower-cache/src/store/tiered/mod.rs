//! L1 in front of L2, coherent across instances through Redis pub/sub.

mod builder;
mod channel;
mod fence;
mod listener;
mod seen;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::redis::breaker::Breaker;
use super::redis::replay::{Invalidation, ReplayQueue};
use super::{Lease, MemoryStore, RedisStore, Resident, Store, StoreError};
use crate::entry::Entry;
use crate::metrics::Tally;
pub use builder::TieredStoreBuilder;
use channel::{Message, Notice};
use fence::Fences;
use seen::Seen;

/// Default cap on how long an L1 copy lives: 30 s.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(30);
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

/// The store's counters, each also reported as a metric.
struct Counters {
    l1_hits: Tally,
    l2_hits: Tally,
    l2_errors: Tally,
    l2_skipped: Tally,
    published: Tally,
    received: Tally,
    subscriptions: Tally,
}

impl Counters {
    /// The counters, their metrics registered (at 0) with the recorder
    /// installed now.
    fn new() -> Self {
        crate::metrics::describe();
        Counters {
            l1_hits: Tally::named(crate::metrics::L1_HITS_TOTAL),
            l2_hits: Tally::named(crate::metrics::L2_HITS_TOTAL),
            l2_errors: Tally::named(crate::metrics::L2_ERRORS_TOTAL),
            l2_skipped: Tally::named(crate::metrics::L2_SKIPPED_TOTAL),
            published: Tally::named(crate::metrics::INVALIDATIONS_PUBLISHED_TOTAL),
            received: Tally::named(crate::metrics::INVALIDATIONS_RECEIVED_TOTAL),
            subscriptions: Tally::named(crate::metrics::INVALIDATION_SUBSCRIPTIONS_TOTAL),
        }
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
    /// The invalidation versions seen here, which decide what L1 admits.
    seen: Seen,
    /// What missed L2; replayed before L2 is read again.
    replay: ReplayQueue,
}

struct Inner {
    shared: Arc<Shared>,
    subscribed: watch::Receiver<bool>,
    /// The invalidation subscriber, until [`TieredStore::shutdown`].
    listener: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn take_listener(&self) -> Option<JoinHandle<()>> {
        self.listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = self.take_listener() {
            listener.abort();
        }
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
/// - **One load per key across instances**: [`Store::lease`] and
///   [`Store::release`] are L2's (see [`RedisStore`]), so every instance
///   on one Redis takes the same key's lease.
/// - **Writes and removes** go to both. Every remove and tag invalidation,
///   and by default every write, is published on a Redis channel; every
///   other `TieredStore` on that channel drops the key or tag from its L1.
///   An instance ignores its own messages. L1 refuses an entry whose
///   [`Entry::version`] is older than a tag invalidation it has seen (one
///   loaded before the invalidation and written after it). Invalidations
///   are ordered by versions kept in L2, never by the instances' clocks.
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
/// - **Metrics**, registered at 0 when the store is built: L1 and L2 hits
///   (`tower_cache_l1_hits_total`, `tower_cache_l2_hits_total`), the
///   breaker (`tower_cache_l2_breaker_open`), pending invalidations
///   (`tower_cache_invalidations_pending`) and the rest of
///   [`TieredStats`]; see [`crate::metrics`].
///
/// Cloning is cheap and shares everything. The background subscriber stops
/// at [`TieredStore::shutdown`], or when the last clone is dropped.
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

impl TieredStore {
    /// A tiered store over `l1` and `l2` with the defaults.
    #[must_use]
    pub fn new(l1: MemoryStore, l2: RedisStore) -> Self {
        Self::builder(l1, l2).build()
    }

    /// The L1 store.
    #[must_use]
    pub fn l1(&self) -> &MemoryStore {
        &self.inner.shared.l1
    }

    /// The L2 store.
    #[must_use]
    pub fn l2(&self) -> &RedisStore {
        &self.inner.shared.l2
    }

    /// How long an L1 copy lives at most: [`TieredStoreBuilder::l1_ttl`]
    /// capped at L2's `max_ttl`.
    #[must_use]
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

    /// Stops the invalidation subscriber (task `tower_cache.invalidations`)
    /// and waits for it to end; later calls return at once. The store
    /// still reads and writes both levels afterwards, but its L1 no longer
    /// hears of other instances' invalidations: call it when the process
    /// shuts down. Dropping the last clone of the store stops the
    /// subscriber too, without waiting.
    pub async fn shutdown(&self) {
        if let Some(listener) = self.inner.take_listener() {
            listener.abort();
            let _ = listener.await;
        }
    }

    /// Whether L2 is currently used (circuit breaker closed).
    #[must_use]
    pub fn l2_available(&self) -> bool {
        !self.inner.shared.breaker.is_open()
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> TieredStats {
        let shared = &*self.inner.shared;
        let c = &shared.counters;
        let (pending, overflows) = shared.replay.counts();
        TieredStats {
            l1_hits: c.l1_hits.get(),
            l2_hits: c.l2_hits.get(),
            l2_errors: c.l2_errors.get(),
            l2_skipped: c.l2_skipped.get(),
            outages: shared.breaker.outages(),
            invalidations_published: c.published.get(),
            invalidations_received: c.received.get(),
            subscriptions: c.subscriptions.get(),
            invalidations_pending: pending,
            invalidations_replayed: shared.replay.replayed(),
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
            self.counters.l2_skipped.incr();
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
        self.counters.l2_errors.incr();
        if self.breaker.on_failure(error) {
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
            self.l1.put_capped(key, entry, Some(self.l1_ttl));
        }
    }

    fn message(&self, notice: Notice) -> String {
        Message {
            from: self.instance.clone(),
            notice,
        }
        .encode()
    }

    /// Publishes an invalidation; `true` when it was published.
    async fn publish(&self, notice: Notice) -> bool {
        let msgs = [self.message(notice)];
        let l2 = &self.l2;
        let channel = self.channel.as_str();
        let published = self.l2_call(|| l2.publish(channel, &msgs)).await.is_some();
        if published {
            self.counters.published.incr();
        }
        published
    }

    /// Applies to L2, and publishes, the removes and tag invalidations that
    /// missed it.
    async fn replay_pending(&self) -> Result<(), StoreError> {
        self.replay
            .replay(|whole, items| async move {
                let (keys, tags) = Invalidation::split(&items);
                let versions = self.l2.apply_invalidations(whole, &keys, &tags).await?;
                let mut versions = versions.into_iter();
                let mut messages = Vec::with_capacity(items.len() + 1);
                if whole {
                    let version = versions.next().unwrap_or(u64::MAX);
                    self.seen.all(version);
                    self.seen.settle_all().await;
                    messages.push(self.message(Notice::All { version }));
                }
                for key in &keys {
                    messages.push(self.message(Notice::Key((*key).to_owned())));
                }
                for (tag, version) in tags.iter().zip(versions) {
                    self.seen.tag(tag, version, true).await;
                    messages.push(self.message(Notice::Tag {
                        tag: (*tag).to_owned(),
                        version,
                    }));
                }
                self.l2.publish(&self.channel, &messages).await?;
                self.counters.published.add(messages.len() as u64);
                Ok(items)
            })
            .await?;
        Ok(())
    }
}

impl TieredStore {
    /// Writes both levels, releasing in L2 the key's lease `token` holds.
    async fn put_leased(
        &self,
        key: &str,
        entry: Entry,
        token: Option<u64>,
    ) -> Result<(), StoreError> {
        let shared = &*self.inner.shared;
        let l2_entry = entry.clone();
        // `Some(false)`: L2 refused an entry loaded before an invalidation.
        let stored = shared
            .l2_call(|| shared.l2.put_leased_direct(key, l2_entry, token))
            .await;
        let admitted = stored != Some(false) && shared.seen.admits(&entry).await;
        {
            // Written after L2, under the key's fence, so a concurrent read
            // of the old L2 value cannot overwrite it in L1.
            let mut generation = shared.fences.stripe(key).write().await;
            *generation += 1;
            if admitted {
                shared.l1.put_capped(key, entry, Some(shared.l1_ttl));
            } else {
                let _ = shared.l1.remove(key).await;
            }
        }
        // A write L2 did not take (or other instances did not hear of)
        // becomes a pending remove of the key: L2 never serves a value
        // older than one the application saw written.
        let kept = match stored {
            None => false,
            Some(false) => true,
            Some(true) => !shared.publish_puts || shared.publish(Notice::Key(key.to_owned())).await,
        };
        if !kept {
            shared.replay.keep(Invalidation::Key(key.to_owned()));
        }
        Ok(())
    }
    /// invalidation version is read in the same call.
    async fn read_l2(&self, key: &str, versioned: bool) -> (Option<Entry>, Option<u64>) {
        let shared = &*self.inner.shared;
        let before = shared.fences.snapshot(key).await;
        let read = if versioned {
            shared
                .l2_call(|| shared.l2.get_versioned_direct(key))
                .await
                .map(|(entry, version)| {
                    shared.seen.observe(version);
                    (entry, Some(version))
                })
        } else {
            shared
                .l2_call(|| shared.l2.get_direct(key))
                .await
                .map(|entry| (entry, None))
        };
        let Some((Some(entry), version)) = read else {
            return (None, read.and_then(|(_, version)| version));
        };
        if !shared.seen.admits(&entry).await {
            return (None, version);
        }
        shared.counters.l2_hits.incr();
        shared.fill_l1(key, entry.clone(), before).await;
        (Some(entry), version)
    }
}

impl Store for TieredStore {
    fn resident(&self, key: &str, now_ms: u64) -> Option<Resident> {
        let shared = &*self.inner.shared;
        let hit = shared.l1.resident(key, now_ms)?;
        shared.counters.l1_hits.incr();
        Some(hit)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let shared = &*self.inner.shared;
        // The hit path, inline.
        if let Ok(Some(hit)) = shared.l1.get(key).await {
            shared.counters.l1_hits.incr();
            return Ok(Some(hit));
        }
        Ok(self.read_l2(key, false).await.0)
    }

    /// L2's version with the read, or the latest one seen here when L1
    /// answered or L2 could not (never newer than L2's: only more
    /// refusals). Never an error.
    async fn get_versioned(&self, key: &str) -> Result<(Option<Entry>, u64), StoreError> {
        let shared = &*self.inner.shared;
        let latest = || shared.seen.latest();
        if let Ok(Some(hit)) = shared.l1.get(key).await {
            shared.counters.l1_hits.incr();
            return Ok((Some(hit), latest()));
        }
        let (entry, version) = self.read_l2(key, true).await;
        Ok((entry, version.unwrap_or_else(latest)))
    }

    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        self.put_leased(key, entry, None).await
    }

    /// L2's write and release in one round trip.
    async fn put_released(&self, key: &str, entry: Entry, token: u64) -> Result<(), StoreError> {
        self.put_leased(key, entry, Some(token)).await
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
        if !(removed && shared.publish(Notice::Key(key.to_owned())).await) {
            shared.replay.keep(Invalidation::Key(key.to_owned()));
        }
        Ok(())
    }

    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        let shared = &*self.inner.shared;
        // Until L2 gives the invalidation its version, L1 refuses every
        // entry of the tag.
        shared.seen.begin(tag).await;
        shared.drop_tag_from_l1(tag).await?;
        let version = shared.l2_call(|| shared.l2.remove_tag_direct(tag)).await;
        if let Some(version) = version {
            shared.seen.tag(tag, version, true).await;
        }
        // Again once L2 is done, for reads that fetched tagged values
        // from L2 meanwhile.
        shared.drop_tag_from_l1(tag).await?;
        let published = match version {
            Some(version) => {
                shared
                    .publish(Notice::Tag {
                        tag: tag.to_owned(),
                        version,
                    })
                    .await
            }
            None => false,
        };
        if !published {
            shared.replay.keep(Invalidation::Tag(tag.to_owned()));
        }
        Ok(())
    }

    /// L2's version, or when L2 cannot be asked the latest one seen here
    /// (an entry loaded then never reaches L2, and L1 is cleared when L2
    /// returns): never an error.
    async fn version(&self) -> Result<u64, StoreError> {
        let shared = &*self.inner.shared;
        match shared.l2_call(|| shared.l2.version_direct()).await {
            Some(version) => {
                shared.seen.observe(version);
                Ok(version)
            }
            None => Ok(shared.seen.latest()),
        }
    }

    /// L2's lease. [`StoreError::Unavailable`] when L2 cannot be asked
    /// (breaker open, error, timeout): the caller loads on its own.
    async fn lease(&self, key: &str, token: u64, ttl: Duration) -> Result<Lease, StoreError> {
        let shared = &*self.inner.shared;
        shared
            .l2_call(|| shared.l2.lease_direct(key, token, ttl))
            .await
            .ok_or(StoreError::Unavailable)
    }

    async fn release(&self, key: &str, token: u64) -> Result<(), StoreError> {
        let shared = &*self.inner.shared;
        shared
            .l2_call(|| shared.l2.release_direct(key, token))
            .await
            .ok_or(StoreError::Unavailable)
    }
}
