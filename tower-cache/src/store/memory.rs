//! The in-process L1 store, on moka.

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::policy::{EvictionPolicy, Expiry};
use moka::sync::Cache;

use super::{Store, StoreError};
use crate::clock;
use crate::entry::Entry;

/// Default L1 capacity: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What an entry costs in memory beyond its key, payload and tags: moka's
/// bookkeeping (its entry and access records, the order queues, the hash
/// table slot) and the allocator's headers. Counted in every entry's
/// weight so that the capacity bounds resident memory, not only payload
/// bytes. Measured with the `l1_memory` bench binary (about 1.1× the
/// capacity in resident memory with 1 KiB entries; `l1_memory per-entry`
/// compares the bytes per entry with a plain moka cache's).
pub const ENTRY_OVERHEAD_BYTES: usize = 352;

/// An entry as L1 holds it, shared by every read.
struct Slot {
    entry: Entry,
    /// When this copy leaves L1; never later than `entry.stale_until`.
    evict_at: u64,
    /// The store's sync epoch when this copy was stored: one older than the
    /// store's is out of sync ([`MemoryStore::mark_unsynced`]).
    epoch: u64,
    /// A form of the entry decoded by its reader, made once by the first
    /// read that asks for it.
    decoded: OnceLock<Kept>,
    /// Where the bytes of decoded forms are counted.
    budget: Arc<DecodedBudget>,
}

/// A decoded form and the bytes it was counted for.
struct Kept {
    form: Box<dyn Any + Send + Sync>,
    bytes: u64,
}

/// The bytes all kept decoded forms hold, and their bound.
struct DecodedBudget {
    used: AtomicU64,
    max: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(kept) = self.decoded.get() {
            self.budget.used.fetch_sub(kept.bytes, Ordering::Relaxed);
        }
    }
}

/// What a form decoded from an entry holds in memory beyond the entry
/// itself and its own `size_of`: what [`Resident::decoded`] counts against
/// the store's bound on decoded forms.
pub trait Footprint {
    /// Bytes held on the heap (an estimate is fine; larger is safer).
    fn footprint(&self) -> usize;
}

/// An entry held in process, read without waiting: what
/// [`Store::resident`] returns. It shares the stored entry (nothing is
/// copied) and keeps beside it a form of the entry decoded once, by the
/// first reader that asks ([`Resident::decoded`]), for every later read.
#[derive(Clone)]
pub struct Resident(Arc<Slot>);

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Resident").field(&self.0.entry).finish()
    }
}

impl Resident {
    /// The entry.
    #[must_use]
    pub fn entry(&self) -> &Entry {
        &self.0.entry
    }

    /// The entry decoded as a `T`: made by `decode` on the first call, kept
    /// with the entry for as long as L1 holds it and returned as it is on
    /// every later call. Decoded forms count against the store's bound
    /// ([`MemoryStoreBuilder::max_decoded_bytes`]), with their `size_of`
    /// and [`Footprint`].
    ///
    /// `None` when `decode` fails (nothing is kept, a later call tries
    /// again), when the form kept is not a `T`, or when keeping it would
    /// pass the bound (the caller decodes the entry itself, as it would
    /// without this store).
    ///
    /// ```
    /// use tower_cache::store::{Footprint, MemoryStore, Store};
    /// use tower_cache::Entry;
    ///
    /// struct Number(u32);
    /// impl Footprint for Number {
    ///     fn footprint(&self) -> usize { 0 }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let l1 = MemoryStore::default();
    /// l1.put("k", Entry::new("42")).await.unwrap();
    /// let resident = l1.resident("k", tower_cache::now_ms()).expect("held in process");
    /// let parse = |e: &Entry| Some(Number(std::str::from_utf8(e.value()).ok()?.parse().ok()?));
    /// assert_eq!(resident.decoded(parse).map(|n| n.0), Some(42));
    /// # }
    /// ```
    pub fn decoded<T: Footprint + Any + Send + Sync>(
        &self,
        decode: impl FnOnce(&Entry) -> Option<T>,
    ) -> Option<&T> {
        let slot = &*self.0;
        if let Some(kept) = slot.decoded.get() {
            return kept.form.downcast_ref();
        }
        let budget = &*slot.budget;
        if budget.used.load(Ordering::Relaxed) >= budget.max {
            return None;
        }
        let form = decode(&slot.entry)?;
        let bytes = u64::try_from(std::mem::size_of::<T>() + form.footprint()).unwrap_or(u64::MAX);
        if budget
            .used
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes)
            > budget.max
        {
            budget.used.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        let kept = Kept {
            form: Box::new(form),
            bytes,
        };
        if slot.decoded.set(kept).is_err() {
            // Another read kept its form first.
            budget.used.fetch_sub(bytes, Ordering::Relaxed);
        }
        slot.decoded.get()?.form.downcast_ref()
    }
}

struct SlotExpiry;

impl SlotExpiry {
    fn until(slot: &Slot) -> Duration {
        Duration::from_millis(slot.evict_at.saturating_sub(clock::now_ms()))
    }
}

impl Expiry<Box<str>, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(&self, _: &Box<str>, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(Self::until(slot))
    }
    fn expire_after_update(
        &self,
        _: &Box<str>,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::until(slot))
    }
}

#[derive(Default)]
struct Counters {
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// Sizes and counters of a [`MemoryStore`], from [`MemoryStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Entries currently held.
    pub entries: u64,
    /// Weighted size of the held entries, in bytes.
    pub bytes: u64,
    /// The configured capacity, in bytes.
    pub max_bytes: u64,
    /// Entries evicted to stay within capacity.
    pub evictions: u64,
    /// Entries dropped at the end of their lifetime.
    pub expirations: u64,
    /// Bytes held by the decoded forms kept beside entries
    /// ([`Resident::decoded`]), within
    /// [`MemoryStoreBuilder::max_decoded_bytes`].
    pub decoded_bytes: u64,
}

/// The in-process L1 store, on [`moka::sync::Cache`].
///
/// - **Bounded in bytes**: each entry weighs its key, payload and tags
///   ([`Entry::weight`]) plus [`ENTRY_OVERHEAD_BYTES`] of bookkeeping, and
///   decoded forms kept beside entries count their own bytes; the total
///   stays within the capacity (default [`DEFAULT_MAX_BYTES`], 64 MiB, of
///   which an eighth by default may hold decoded forms), so the capacity
///   bounds resident memory.
/// - **Expiry per entry** at the end of its stale window
///   ([`Entry::stale_until`]).
/// - **`TinyLFU` admission and eviction** by default, LRU as an option.
/// - **Shared, not copied**: a hit clones the [`bytes::Bytes`] handle, not
///   the payload; [`Store::resident`] reads an entry without waiting, with
///   a decoded form of it kept beside it ([`Resident`]).
/// - **Tag invalidation** without a tag index: moka applies the predicate
///   to reads at once and removes matching entries in the background.
///
/// Cloning a `MemoryStore` is cheap and gives a handle to the same cache.
///
/// ```
/// use tower_cache::store::{MemoryStore, Store};
/// use tower_cache::Entry;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let l1 = MemoryStore::builder().max_bytes(16 * 1024 * 1024).lru().build();
/// l1.put("k", Entry::new("v").with_tags(["t"])).await.unwrap();
/// l1.remove_tag("t").await.unwrap();
/// assert!(l1.get("k").await.unwrap().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    /// moka keeps each key behind an `Arc` of its own: a `Box<str>` in it
    /// is one allocation for the text, where an `Arc<str>` would add a
    /// second reference count and a larger allocation.
    cache: Cache<Box<str>, Arc<Slot>, foldhash::fast::RandomState>,
    counters: Arc<Counters>,
    budget: Arc<DecodedBudget>,
    /// The sync epoch: entries stored under an older one are not served
    /// by reads, only handed to [`MemoryStore::held`].
    epoch: Arc<AtomicU64>,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
    max_decoded_bytes: Option<u64>,
    lru: bool,
    name: Option<String>,
}

impl MemoryStoreBuilder {
    /// Capacity in bytes. Default: [`DEFAULT_MAX_BYTES`] (64 MiB).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// How much of the capacity may hold decoded forms of entries
    /// ([`Resident::decoded`]: the HTTP layers keep a response there
    /// decoded, so that its hits skip the decoding); the rest holds the
    /// entries. Past it, reads decode entries each time. Default: an
    /// eighth of [`max_bytes`](Self::max_bytes); at most all of it.
    #[must_use]
    pub fn max_decoded_bytes(mut self, max_decoded_bytes: u64) -> Self {
        self.max_decoded_bytes = Some(max_decoded_bytes);
        self
    }

    /// Evict the least recently used entry first, admitting every new
    /// entry. Default: `TinyLFU`, which admits a new entry only when it is
    /// likely to be read more often than the one it would evict.
    #[must_use]
    pub fn lru(mut self) -> Self {
        self.lru = true;
        self
    }

    /// A name for the underlying moka cache, shown in its debug output.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the store.
    #[must_use]
    pub fn build(self) -> MemoryStore {
        let counters = Arc::new(Counters::default());
        let listener_counters = counters.clone();
        let decoded = self
            .max_decoded_bytes
            .unwrap_or(self.max_bytes / 8)
            .min(self.max_bytes);
        let budget = Arc::new(DecodedBudget {
            used: AtomicU64::new(0),
            max: decoded,
        });
        let mut builder = Cache::<Box<str>, Arc<Slot>>::builder()
            .max_capacity(self.max_bytes - decoded)
            .weigher(|key, slot: &Arc<Slot>| {
                u32::try_from(ENTRY_OVERHEAD_BYTES + key.len() + slot.entry.weight())
                    .unwrap_or(u32::MAX)
            })
            .expire_after(SlotExpiry)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _slot, cause| match cause {
                RemovalCause::Size => {
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    listener_counters
                        .expirations
                        .fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .eviction_policy(if self.lru {
                EvictionPolicy::lru()
            } else {
                EvictionPolicy::tiny_lfu()
            });
        if let Some(name) = &self.name {
            builder = builder.name(name);
        }
        MemoryStore {
            cache: builder.build_with_hasher(foldhash::fast::RandomState::default()),
            counters,
            budget,
            epoch: Arc::new(AtomicU64::new(0)),
            max_bytes: self.max_bytes,
        }
    }
}

impl Default for MemoryStore {
    /// A store of [`DEFAULT_MAX_BYTES`] (64 MiB) with `TinyLFU`.
    fn default() -> Self {
        MemoryStore::builder().build()
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes`, with `TinyLFU` eviction.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        MemoryStore::builder().max_bytes(max_bytes).build()
    }

    /// A builder with the defaults: 64 MiB, `TinyLFU`.
    #[must_use]
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_bytes: DEFAULT_MAX_BYTES,
            max_decoded_bytes: None,
            lru: false,
            name: None,
        }
    }

    /// Stores `entry` but keeps this copy at most `cap` (it still never
    /// outlives `entry.stale_until`). Used by the tiered store so that an
    /// L1 copy is re-read from L2 regularly.
    pub(crate) fn put_capped(&self, key: &str, entry: Entry, cap: Option<Duration>) {
        let mut evict_at = entry.stale_until;
        if let Some(cap) = cap {
            evict_at = evict_at.min(clock::after(cap));
        }
        if evict_at <= clock::now_ms() {
            self.cache.invalidate(key);
            return;
        }
        let slot = Slot {
            entry,
            evict_at,
            epoch: self.epoch.load(Ordering::Acquire),
            decoded: OnceLock::new(),
            budget: self.budget.clone(),
        };
        self.cache.insert(Box::from(key), Arc::new(slot));
    }

    /// Drops the entry under `key`, without waiting.
    pub(crate) fn discard(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Marks every entry held now as out of sync, in O(1): reads
    /// ([`Store::get`], [`Store::resident`]) no longer serve them, but
    /// [`MemoryStore::held`] still hands them out (the tiered store serves
    /// them as stale while they are reloaded). An entry stored afterwards
    /// is in sync.
    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "only the tiered store marks its L1")
    )]
    pub(crate) fn mark_unsynced(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The entry under `key` as [`Store::resident`] reads it, whether it is
    /// in sync or not: with `true` when it is.
    #[inline]
    pub(crate) fn held(&self, key: &str, now_ms: u64) -> Option<(Resident, bool)> {
        let slot = self.cache.get(key)?;
        if now_ms >= slot.evict_at {
            self.cache.invalidate(key);
            return None;
        }
        // The one check the sync epoch adds to a hit.
        let synced = slot.epoch == self.epoch.load(Ordering::Acquire);
        Some((Resident(slot), synced))
    }

    /// Current sizes and counters. Runs moka's pending maintenance first, so
    /// the sizes are exact at the time of the call.
    #[expect(
        clippy::unused_async,
        reason = "kept async: a store's statistics may need a wait"
    )]
    pub async fn stats(&self) -> MemoryStats {
        self.cache.run_pending_tasks();
        MemoryStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            max_bytes: self.max_bytes,
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            expirations: self.counters.expirations.load(Ordering::Relaxed),
            decoded_bytes: self.budget.used.load(Ordering::Relaxed),
        }
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .resident(key, clock::now_ms())
            .map(|held| held.entry().clone()))
    }

    /// Not an entry the tiered store has marked out of sync.
    fn resident(&self, key: &str, now_ms: u64) -> Option<Resident> {
        let (resident, synced) = self.held(key, now_ms)?;
        synced.then_some(resident)
    }

    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        self.put_capped(key, entry, None);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.cache.invalidate(key);
        Ok(())
    }

    fn remove_tag<'a>(
        &'a self,
        tag: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        let tag = tag.to_owned();
        async move {
            self.cache
                .invalidate_entries_if(move |_, slot| slot.entry.tags().contains(&tag))
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(v: &'static [u8], ttl_ms: u64) -> Entry {
        Entry::new(Bytes::from_static(v)).with_ttl(Duration::from_millis(ttl_ms))
    }

    #[tokio::test(start_paused = true)]
    async fn entry_is_dropped_at_end_of_stale_window() {
        let store = MemoryStore::new(1 << 20);
        store
            .put("k", entry(b"v", 1_000).with_stale(Duration::from_secs(1)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        let stale = store.get("k").await.unwrap().expect("still servable");
        assert!(!stale.is_fresh_at(clock::now_ms()));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_entry_marked_out_of_sync_is_held_but_not_served() {
        let store = MemoryStore::default();
        store.put("old", entry(b"o", 60_000)).await.unwrap();
        store.mark_unsynced();
        store.put("new", entry(b"n", 60_000)).await.unwrap();
        let now = clock::now_ms();
        assert!(store.get("old").await.unwrap().is_none());
        assert!(store.resident("old", now).is_none());
        let (held, synced) = store.held("old", now).expect("still held");
        assert_eq!(&held.entry().value()[..], b"o");
        assert!(!synced);
        assert!(store.held("new", now).is_some_and(|(_, synced)| synced));
        assert!(store.resident("new", now).is_some());
        // Stored again, it is in sync.
        store.put("old", entry(b"o2", 60_000)).await.unwrap();
        assert!(store.get("old").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn hit_shares_the_payload() {
        let store = MemoryStore::new(1 << 20);
        let value = Bytes::from(vec![7u8; 4096]);
        store.put("k", Entry::new(value.clone())).await.unwrap();
        let a = store.get("k").await.unwrap().unwrap();
        let b = store.get("k").await.unwrap().unwrap();
        assert_eq!(a.value.as_ptr(), value.as_ptr());
        assert_eq!(b.value.as_ptr(), value.as_ptr());
    }

    #[tokio::test]
    async fn a_resident_entry_is_decoded_once_for_every_read() {
        let store = MemoryStore::new(1 << 20);
        store.put("k", Entry::new("42")).await.unwrap();
        let decodes = std::sync::atomic::AtomicUsize::new(0);
        let parse = |e: &Entry| {
            decodes.fetch_add(1, Ordering::Relaxed);
            std::str::from_utf8(e.value()).ok()?.parse::<u32>().ok()
        };
        for _ in 0..3 {
            let held = store.resident("k", clock::now_ms()).expect("held");
            assert_eq!(held.decoded(parse), Some(&42));
        }
        assert_eq!(decodes.load(Ordering::Relaxed), 1);
        // A new value is decoded anew.
        store.put("k", Entry::new("7")).await.unwrap();
        let held = store.resident("k", clock::now_ms()).expect("held");
        assert_eq!(held.decoded(parse), Some(&7));
        assert_eq!(decodes.load(Ordering::Relaxed), 2);
        // A form that fails to decode is not kept.
        store.put("bad", Entry::new("x")).await.unwrap();
        let held = store.resident("bad", clock::now_ms()).expect("held");
        assert_eq!(held.decoded(parse), None);
        assert_eq!(held.decoded(parse), None);
        assert_eq!(decodes.load(Ordering::Relaxed), 4);
    }

    impl Footprint for u32 {
        fn footprint(&self) -> usize {
            0
        }
    }

    struct Form(Vec<u8>);
    impl Footprint for Form {
        fn footprint(&self) -> usize {
            self.0.capacity()
        }
    }

    #[tokio::test]
    async fn decoded_forms_stay_within_their_bound_and_leave_with_their_entries() {
        let per_form = (std::mem::size_of::<Form>() + 1000) as u64;
        let store = MemoryStore::builder()
            .max_bytes(1 << 20)
            .max_decoded_bytes(3 * per_form)
            .build();
        let decode = |_: &Entry| Some(Form(Vec::with_capacity(1000)));
        let mut kept = 0;
        for i in 0..10 {
            let key = format!("k{i}");
            store.put(&key, Entry::new("v")).await.unwrap();
            let held = store.resident(&key, clock::now_ms()).expect("held");
            if held.decoded(decode).is_some() {
                kept += 1;
            }
        }
        assert_eq!(kept, 3, "forms past the bound are not kept");
        assert_eq!(store.stats().await.decoded_bytes, 3 * per_form);
        // Past the bound, a read still gets the entry: it decodes it itself.
        assert!(store.get("k9").await.unwrap().is_some());
        for i in 0..10 {
            store.remove(&format!("k{i}")).await.unwrap();
        }
        // moka drops a removed value once no reader can still hold it
        // (epoch-based reclamation): wait for that, with a generous
        // deadline, while reads move the epochs on.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.stats().await.decoded_bytes != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a removed entry frees its form"
            );
            let _ = store.get("k0").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.put("again", Entry::new("v")).await.unwrap();
        let held = store.resident("again", clock::now_ms()).expect("held");
        assert!(
            held.decoded(decode).is_some(),
            "the freed room is used again"
        );
    }

    #[tokio::test]
    async fn the_capacity_holds_entries_and_decoded_forms_together() {
        let store = MemoryStore::builder().max_bytes(800 * 1024).lru().build();
        for i in 0..2_000 {
            let e = Entry::new(Bytes::from(vec![0u8; 1024]));
            store.put(&format!("k{i}"), e).await.unwrap();
        }
        let stats = store.stats().await;
        assert!(
            stats.bytes <= 700 * 1024,
            "an eighth is left to decoded forms: {stats:?}"
        );
        assert!(
            stats.bytes + stats.decoded_bytes <= stats.max_bytes,
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn capacity_is_in_bytes_and_evictions_are_counted() {
        let store = MemoryStore::builder().max_bytes(100 * 1024).lru().build();
        for i in 0..1_000 {
            let e = Entry::new(Bytes::from(vec![0u8; 1024]));
            store.put(&format!("k{i}"), e).await.unwrap();
        }
        let stats = store.stats().await;
        assert!(stats.bytes <= 100 * 1024, "{stats:?}");
        assert!(stats.entries < 100, "{stats:?}");
        assert!(stats.evictions >= 900, "{stats:?}");
    }

    #[tokio::test]
    async fn each_entry_weighs_its_bookkeeping_too() {
        let store = MemoryStore::new(1 << 30);
        for i in 0..10 {
            let e = Entry::new(Bytes::from(vec![0u8; 1024]));
            store.put(&format!("k{i}"), e).await.unwrap();
        }
        let stats = store.stats().await;
        assert_eq!(stats.entries, 10);
        assert!(
            stats.bytes >= 10 * (1024 + ENTRY_OVERHEAD_BYTES as u64),
            "the capacity bounds resident memory, not payload alone: {stats:?}"
        );
    }

    #[tokio::test]
    async fn tag_invalidation_spares_later_entries() {
        let store = MemoryStore::new(1 << 20);
        store
            .put("a", entry(b"1", 60_000).with_tags(["p"]))
            .await
            .unwrap();
        store
            .put("b", entry(b"2", 60_000).with_tags(["q"]))
            .await
            .unwrap();
        store.remove_tag("p").await.unwrap();
        assert!(store.get("a").await.unwrap().is_none());
        assert!(store.get("b").await.unwrap().is_some());
        store
            .put("a", entry(b"3", 60_000).with_tags(["p"]))
            .await
            .unwrap();
        assert_eq!(&store.get("a").await.unwrap().unwrap().value[..], b"3");
    }

    #[tokio::test(start_paused = true)]
    async fn capped_copy_leaves_before_the_entry_expires() {
        let store = MemoryStore::new(1 << 20);
        store.put_capped("k", entry(b"v", 60_000), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(store.get("k").await.unwrap().is_none());
    }

    /// Expiry is per entry and needs no read: moka drops each entry at the
    /// end of its own stale window (real time: moka keeps its own clock, and
    /// its timer wheel removes expired entries with about 1 s granularity).
    #[tokio::test]
    async fn entry_leaves_at_end_of_its_stale_window_without_a_read() {
        let store = MemoryStore::new(1 << 20);
        store
            .put(
                "short",
                entry(b"s", 100).with_stale(Duration::from_millis(100)),
            )
            .await
            .unwrap();
        store.put("long", entry(b"l", 60_000)).await.unwrap();
        assert_eq!(store.stats().await.entries, 2);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let stats = store.stats().await;
        assert_eq!(stats.entries, 1, "{stats:?}");
        assert_eq!(stats.expirations, 1, "{stats:?}");
        assert!(store.get("long").await.unwrap().is_some());
    }

    /// Fills a 100-entry store, reads one key often, then scans 2 000 keys
    /// read once each. Returns whether the often-read key survived.
    async fn hot_key_survives_scan(store: MemoryStore) -> bool {
        let value = || Entry::new(Bytes::from(vec![0u8; 1024]));
        for i in 0..100 {
            store.put(&format!("warm{i}"), value()).await.unwrap();
        }
        store.put("hot", value()).await.unwrap();
        for _ in 0..50 {
            assert!(store.get("hot").await.unwrap().is_some());
        }
        store.cache.run_pending_tasks();
        for i in 0..2_000 {
            store.put(&format!("scan{i}"), value()).await.unwrap();
            if i % 100 == 0 {
                store.cache.run_pending_tasks();
            }
        }
        store.cache.run_pending_tasks();
        store.get("hot").await.unwrap().is_some()
    }

    #[tokio::test]
    async fn tinylfu_keeps_a_frequently_read_key_through_a_scan_and_lru_does_not() {
        let cap = 100 * 1100;
        assert!(
            hot_key_survives_scan(MemoryStore::builder().max_bytes(cap).build()).await,
            "TinyLFU (the default) keeps the hot key"
        );
        assert!(
            !hot_key_survives_scan(MemoryStore::builder().max_bytes(cap).lru().build()).await,
            "LRU evicts it"
        );
    }
}
