//! The keys read most often, kept in process in front of a store that
//! holds nothing here (an L2-only route).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use heavykeeper::TopK;
use metrics::{Counter, Gauge};

use super::{MemoryStore, Resident, Store, StoreError};
use crate::clock;
use crate::entry::Entry;
use crate::metrics as names;

/// How many keys [`HotKeys`] tracks as hot, by default.
pub const DEFAULT_HOT_KEYS: usize = 16;
/// How long [`HotKeys`] keeps a copy of a hot key's entry, by default.
pub const DEFAULT_HOT_TTL: Duration = Duration::from_secs(1);
/// How many reads (as the sketch counts them) make a key hot, by default.
pub const DEFAULT_HOT_MIN_READS: u64 = 32;
/// How many bytes the copies of hot entries may hold, by default.
pub const DEFAULT_HOT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// How often (in reads of the inner store) the hot keys are reported in
/// metrics.
const REPORT_EVERY: u64 = 256;

/// Keeps the entries of the keys read most often in process, for a short
/// time, in front of a store that holds nothing in process (a
/// [`RedisStore`](super::RedisStore) alone, for a route that runs
/// L2-only), so that one hot key does not cost a Redis call per read.
///
/// - **Which keys**: a `HeavyKeeper` top-k sketch counts the reads that went
///   to the inner store; a key among the top [`top`](HotKeysBuilder::top)
///   (default [`DEFAULT_HOT_KEYS`], 16) with at least
///   [`min_reads`](HotKeysBuilder::min_reads) counted reads (default
///   [`DEFAULT_HOT_MIN_READS`], 32; the sketch's counts decay, so a key
///   that cools down leaves) is hot. [`HotKeys::top`] lists them, and
///   `tower_cache_hot_key_reads{rank}` reports their counts.
/// - **The copies**: a hot key's entry read from the inner store is kept
///   in a small [`MemoryStore`] (default [`DEFAULT_HOT_MAX_BYTES`], 4 MiB)
///   for at most [`ttl`](HotKeysBuilder::ttl) (default
///   [`DEFAULT_HOT_TTL`], 1 s) and answers reads without waiting
///   ([`Store::resident`]); `tower_cache_hot_hits_total` counts them.
/// - **What it guarantees**: a remove, write or tag invalidation made
///   through this store drops the copies it concerns before it returns,
///   and a read that raced with it does not put an older copy back. An
///   invalidation made by another instance is not seen here: a copy may
///   be served up to the `ttl` after it. Where that is too long, keep the
///   `ttl` short, or use a [`TieredStore`](super::TieredStore), whose L1
///   follows every instance's invalidations.
///
/// ```
/// use std::time::Duration;
/// use tower_cache::store::{HotKeys, MemoryStore};
///
/// // In an application, the inner store is a RedisStore.
/// let store = HotKeys::builder(MemoryStore::default())
///     .top(8)
///     .ttl(Duration::from_millis(500))
///     .build();
/// assert!(store.top().is_empty());
/// ```
pub struct HotKeys<S> {
    inner: S,
    hot: Arc<Hot>,
}

struct Hot {
    copies: MemoryStore,
    sketch: Mutex<TopK<String>>,
    min_reads: u64,
    ttl: Duration,
    copies_kept: bool,
    /// Moves on every invalidation made through the store, under the write
    /// lock: a read copies an entry under the read lock, and only when no
    /// invalidation happened while it read, so no copy older than an
    /// invalidation is ever visible after it.
    generation: RwLock<u64>,
    reads: AtomicU64,
    hits: Counter,
    ranks: Vec<Gauge>,
}

impl<S> std::fmt::Debug for HotKeys<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotKeys")
            .field("ttl", &self.hot.ttl)
            .field("min_reads", &self.hot.min_reads)
            .finish_non_exhaustive()
    }
}

impl<S: Clone> Clone for HotKeys<S> {
    fn clone(&self) -> Self {
        HotKeys {
            inner: self.inner.clone(),
            hot: self.hot.clone(),
        }
    }
}

/// Builds [`HotKeys`].
#[derive(Debug, Clone)]
pub struct HotKeysBuilder<S> {
    inner: S,
    top: usize,
    ttl: Duration,
    min_reads: u64,
    max_bytes: u64,
    copies: bool,
}

impl<S> HotKeysBuilder<S> {
    /// Counts and reports the hot keys but keeps no copies of them: for a
    /// store with an L1 of its own (a [`TieredStore`](super::TieredStore)),
    /// whose copies follow every instance's invalidations, where copies
    /// kept here would not. Default: copies are kept.
    #[must_use]
    pub fn track_only(mut self) -> Self {
        self.copies = false;
        self
    }

    /// How many keys can be hot at once. Default: [`DEFAULT_HOT_KEYS`] (16).
    #[must_use]
    pub fn top(mut self, top: usize) -> Self {
        self.top = top.max(1);
        self
    }

    /// How long a copy of a hot entry is kept (never past the entry's own
    /// lifetime). Default: [`DEFAULT_HOT_TTL`] (1 s).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many counted reads make a key hot. Default:
    /// [`DEFAULT_HOT_MIN_READS`] (32).
    #[must_use]
    pub fn min_reads(mut self, min_reads: u64) -> Self {
        self.min_reads = min_reads;
        self
    }

    /// How many bytes the copies may hold. Default:
    /// [`DEFAULT_HOT_MAX_BYTES`] (4 MiB).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Builds the store.
    #[must_use]
    pub fn build(self) -> HotKeys<S> {
        names::describe();
        let ranks = (1..=self.top)
            .map(|rank| {
                let gauge = metrics::gauge!(names::HOT_KEY_READS, "rank" => rank.to_string());
                gauge.set(0.0);
                gauge
            })
            .collect();
        HotKeys {
            inner: self.inner,
            hot: Arc::new(Hot {
                copies: MemoryStore::builder()
                    .max_bytes(self.max_bytes)
                    .lru()
                    .build(),
                // A sketch some hundred times wider than the keys it reports:
                // HeavyKeeper's own advice for counts near the truth.
                sketch: Mutex::new(TopK::new(self.top, (self.top * 128).max(1024), 4, 0.9)),
                min_reads: self.min_reads,
                ttl: self.ttl,
                copies_kept: self.copies,
                generation: RwLock::new(0),
                reads: AtomicU64::new(0),
                hits: metrics::counter!(names::HOT_HITS_TOTAL),
                ranks,
            }),
        }
    }
}

impl<S: Store> HotKeys<S> {
    /// Hot keys in front of `inner`, with the defaults.
    #[must_use]
    pub fn new(inner: S) -> Self {
        Self::builder(inner).build()
    }

    /// A builder with the defaults.
    #[must_use]
    pub fn builder(inner: S) -> HotKeysBuilder<S> {
        HotKeysBuilder {
            inner,
            top: DEFAULT_HOT_KEYS,
            ttl: DEFAULT_HOT_TTL,
            min_reads: DEFAULT_HOT_MIN_READS,
            max_bytes: DEFAULT_HOT_MAX_BYTES,
            copies: true,
        }
    }

    /// The store in front of which the copies are kept.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The hot keys, hottest first, with the reads the sketch counted.
    #[must_use]
    pub fn top(&self) -> Vec<(String, u64)> {
        let sketch = self
            .hot
            .sketch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut top: Vec<_> = sketch
            .list()
            .into_iter()
            .filter(|n| n.count >= self.hot.min_reads)
            .map(|n| (n.item, n.count))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top
    }

    /// Counts a read of `key` that went to the inner store; whether `key`
    /// is hot now.
    fn counted(&self, key: &str) -> bool {
        let hot = {
            let mut sketch = self
                .hot
                .sketch
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            sketch.add(key, 1);
            sketch.contains(key) && sketch.count(key) >= self.hot.min_reads
        };
        if self
            .hot
            .reads
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(REPORT_EVERY)
        {
            self.report();
        }
        hot
    }

    fn report(&self) {
        let top = self.top();
        for (rank, gauge) in self.hot.ranks.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "a gauge of counts")]
            gauge.set(top.get(rank).map_or(0.0, |(_, count)| *count as f64));
        }
    }

    /// Reads `key` from the inner store with `read`, counts the read, and
    /// keeps a copy of what it found (`entry_of`) when the key is hot.
    async fn copied<T>(
        &self,
        key: &str,
        read: impl Future<Output = Result<T, StoreError>>,
        entry_of: impl FnOnce(&T) -> Option<&Entry>,
    ) -> Result<T, StoreError> {
        let hot = &self.hot;
        let generation = *hot
            .generation
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let found = read.await?;
        if let Some(entry) = entry_of(&found)
            && self.counted(key)
            && hot.copies_kept
        {
            let now = hot
                .generation
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if *now == generation {
                hot.copies.put_capped(key, entry.clone(), Some(hot.ttl));
            }
        }
        Ok(found)
    }

    /// Drops the copies an invalidation concerns and moves the generation,
    /// so that no read in flight puts one back.
    fn invalidated(&self, drop_copies: impl FnOnce(&MemoryStore)) {
        let mut generation = self
            .hot
            .generation
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *generation += 1;
        drop_copies(&self.hot.copies);
    }
}

impl<S: Store> Store for HotKeys<S> {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        if let Some(held) = self.hot.copies.resident(key, clock::now_ms()) {
            self.hot.hits.increment(1);
            return Ok(Some(held.entry().clone()));
        }
        self.copied(key, self.inner.get(key), Option::as_ref).await
    }

    fn resident(&self, key: &str, now_ms: u64) -> Option<Resident> {
        if let Some(held) = self.inner.resident(key, now_ms) {
            return Some(held);
        }
        let held = self.hot.copies.resident(key, now_ms)?;
        self.hot.hits.increment(1);
        Some(held)
    }

    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        let result = self.inner.put(key, entry).await;
        self.invalidated(|copies| copies.discard(key));
        result
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let result = self.inner.remove(key).await;
        self.invalidated(|copies| copies.discard(key));
        result
    }

    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        let result = self.inner.remove_tag(tag).await;
        // Few copies are held: drop them all rather than search them.
        self.invalidated(MemoryStore::clear);
        result
    }

    fn version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send + '_ {
        self.inner.version()
    }

    fn get_versioned<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(Option<Entry>, u64), StoreError>> + Send + 'a {
        self.copied(key, self.inner.get_versioned(key), |(entry, _)| {
            entry.as_ref()
        })
    }
}
