//! L1 in front of L2, coherent across instances through Redis pub/sub.

mod builder;
mod channel;
mod fence;
mod listener;
mod seen;
mod unsynced;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::redis::breaker::{Breaker, Ticket};
use super::redis::replay::{Invalidation, ReplayQueue};
use super::{Lease, MemoryStore, RedisStore, Resident, Store, StoreError};
use crate::clock;
use crate::entry::Entry;
use crate::metrics::Tally;
pub use builder::TieredStoreBuilder;
use channel::{Message, Notice};
use fence::Fences;
use seen::Seen;
pub use unsynced::DEFAULT_MAX_UNSYNCED;

/// Default cap on how long an L1 copy lives: 30 s.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(30);
/// Counters of a [`TieredStore`], from [`TieredStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TieredStats {
    /// Reads answered by L1.
    pub l1_hits: u64,
    /// Reads answered by an L1 entry held out of sync, to be revalidated
    /// (see *Out of sync* on [`TieredStore`]).
    pub l1_unsynced: u64,
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
    l1_unsynced: Tally,
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
            l1_unsynced: Tally::named(crate::metrics::L1_UNSYNCED_TOTAL),
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
    /// How long L1 serves entries while the invalidation channel is down.
    max_unsynced: Duration,
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
///   1 s). When L2 answers again the store logs once, marks its L1 out of
///   sync (it may have missed invalidations; see below) and carries on.
///   Only a call started after the breaker opened can close it. The
///   invalidation subscription reconnects by itself and marks L1 out of
///   sync when it comes back.
/// - **Out of sync, not dropped**: when the invalidation channel comes
///   back (or L2 does), every entry L1 holds is marked out of sync, in
///   O(1) (a sync epoch moves; an entry stored under an older one is out
///   of sync), instead of L1 being cleared. An entry out of sync is never
///   a hit ([`Store::resident`] and the L1 itself do not serve it); a read
///   of it asks L2, which is the truth when it answers. L2's entry, when
///   it has one, answers and replaces it in L1 (no origin load when Redis
///   kept its data). When L2 has none, the read is a miss: the entry may
///   have been removed, or its tag invalidated, while this instance could
///   not hear of it, so a value invalidated while Redis was away is not
///   served once Redis answers. Its callers share one load per key (the
///   engine's single flight), so a Redis restart costs at most one origin
///   load per hot key per instance. When L2 cannot be asked (the breaker
///   is open, or the channel is down and L2 times out), the read answers
///   with the L1 entry **to be revalidated**: its freshness ended, so the
///   engine treats it as any entry past its TTL under the reading route's
///   policy. On a route with a stale-while-revalidate window (or an entry
///   with its own, as an HTTP origin sends them) it is served stale at
///   once while one background reload per key replaces it; on a route
///   without one it is a miss, since the route never serves a value that
///   may be stale (with only a stale-if-error window, it is served if the
///   reload fails). An entry an invalidation seen here refuses is never
///   answered. L1 is marked once L2 answers again after the channel comes
///   back (the reads revalidating it then find L2), and at the latest
///   [`TieredStoreBuilder::max_unsynced`] after the channel was lost.
/// - **Bounded staleness while cut off**: the subscriber pings the channel
///   (every fifth of [`TieredStoreBuilder::max_unsynced`], at most every
///   second). While the channel is lost (its connection ended or a ping
///   went unanswered, as with a paused Redis), L1 is marked out of sync
///   `max_unsynced` (default 5 s) after the channel last answered, and
///   again every `max_unsynced` until it is back: no L1 entry is served as
///   fresh for longer than that after the channel was lost or after it was
///   stored, so a write on another instance is seen here within about
///   that window even though its notice cannot travel.
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

    /// Whether the invalidation subscriber is subscribed now: `false` from
    /// when it finds the channel lost (its connection ended, or a ping went
    /// unanswered) until it is subscribed again.
    #[must_use]
    pub fn subscribed(&self) -> bool {
        *self.inner.subscribed.borrow()
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
            l1_unsynced: c.l1_unsynced.get(),
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
        let Some(call) = self.breaker.allow() else {
            self.counters.l2_skipped.incr();
            return None;
        };
        if self.replay.has_pending()
            && let Err(error) = self.replay_pending().await
        {
            self.on_l2_error(&error, call);
            return None;
        }
        match op().await {
            Ok(v) => {
                self.on_l2_success(call).await;
                Some(v)
            }
            Err(error) => {
                self.on_l2_error(&error, call);
                None
            }
        }
    }

    /// Records a call that succeeded; when it closed the breaker, marks L1
    /// out of sync (it may have missed invalidations meanwhile) and
    /// returns `true`.
    async fn on_l2_success(&self, call: Ticket) -> bool {
        if !self.breaker.on_success(call) {
            return false;
        }
        tracing::info!("cache L2 (Redis) is back; L1 entries are revalidated as they are read");
        self.mark_unsynced().await;
        true
    }

    fn on_l2_error(&self, error: &StoreError, call: Ticket) {
        self.counters.l2_errors.incr();
        if self.breaker.on_failure(error, call) {
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

    /// Marks every L1 entry out of sync: each is revalidated on its next
    /// read (see *Out of sync* on [`TieredStore`]). A copy of an L2 read
    /// under way is not made.
    async fn mark_unsynced(&self) {
        let mut generation = self.fences.global.write().await;
        *generation += 1;
        self.l1.mark_unsynced();
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

    /// Reads L2 (and copies a hit into L1); with `versioned`, L2's
    /// invalidation version is read in the same call. `None` when L2 could
    /// not be asked (breaker open, error, timeout).
    async fn read_l2(&self, key: &str, versioned: bool) -> Option<(Option<Entry>, Option<u64>)> {
        let shared = &*self.inner.shared;
        let before = shared.fences.snapshot(key).await;
        let (entry, version) = if versioned {
            shared
                .l2_call(|| shared.l2.get_versioned_direct(key))
                .await
                .map(|(entry, version)| {
                    shared.seen.observe(version);
                    (entry, Some(version))
                })?
        } else {
            shared
                .l2_call(|| shared.l2.get_direct(key))
                .await
                .map(|entry| (entry, None))?
        };
        let Some(entry) = entry else {
            return Some((None, version));
        };
        if !shared.seen.admits(&entry).await {
            return Some((None, version));
        }
        shared.counters.l2_hits.incr();
        shared.fill_l1(key, entry.clone(), before).await;
        Some((Some(entry), version))
    }

    /// What a read answers with an entry L1 holds out of sync when L2
    /// could not be asked: the entry, to be revalidated (no longer fresh),
    /// unless an invalidation seen here refuses it.
    async fn revalidate(&self, unsynced: Option<Resident>) -> Option<Entry> {
        let shared = &*self.inner.shared;
        let entry = unsynced?.entry().clone();
        if !shared.seen.admits(&entry).await {
            return None;
        }
        shared.counters.l1_unsynced.incr();
        Some(unsynced::to_revalidate(entry, clock::now_ms()))
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
        let unsynced = match shared.l1.held(key, clock::now_ms()) {
            // The hit path, inline.
            Some((hit, true)) => {
                shared.counters.l1_hits.incr();
                return Ok(Some(hit.entry().clone()));
            }
            Some((held, false)) => Some(held),
            None => None,
        };
        // L2 is the truth when it answers: an entry it no longer has may
        // have been removed while L1 could not hear of it.
        Ok(match self.read_l2(key, false).await {
            Some((entry, _)) => entry,
            None => self.revalidate(unsynced).await,
        })
    }

    /// L2's version with the read, or the latest one seen here when L1
    /// answered or L2 could not (never newer than L2's: only more
    /// refusals). Never an error.
    async fn get_versioned(&self, key: &str) -> Result<(Option<Entry>, u64), StoreError> {
        let shared = &*self.inner.shared;
        let latest = || shared.seen.latest();
        let unsynced = match shared.l1.held(key, clock::now_ms()) {
            Some((hit, true)) => {
                shared.counters.l1_hits.incr();
                return Ok((Some(hit.entry().clone()), latest()));
            }
            Some((held, false)) => Some(held),
            None => None,
        };
        Ok(match self.read_l2(key, true).await {
            Some((entry, version)) => (entry, version.unwrap_or_else(latest)),
            None => (self.revalidate(unsynced).await, latest()),
        })
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
    /// (an entry loaded then never reaches L2, and L1 is marked out of
    /// sync when L2 returns, so it is not served before L2 vouches for
    /// it): never an error.
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
