//! The existence filter: a guard against reads of keys that exist nowhere.
//!
//! Negative caching stores one "not found" entry per missing key, so a
//! client that asks for random ids still sends every one of them to the
//! origin once. An [`ExistenceFilter`] holds every key that exists (a
//! Bloom filter, built at start-up from a key source the application
//! gives, such as all product ids) and answers "does not exist" for the
//! others without asking the origin: [`CacheAsideLayer`](crate::CacheAsideLayer)
//! answers such a read with a configured response (default `404`, empty
//! body) and [`ReadThroughLayer`](crate::ReadThroughLayer) with its "not
//! found" value.
//!
//! - **No false negatives.** A key inserted ([`ExistenceFilter::insert`],
//!   [`ExistenceFilter::load`]) is always reported present.
//! - **False positives at a bounded rate.** A key that does not exist is
//!   reported present (and so sent to the origin) with probability about
//!   [`false_positive_rate`](ExistenceFilterBuilder::false_positive_rate)
//!   (default [`DEFAULT_FALSE_POSITIVE_RATE`], 1 %) while the filter holds
//!   at most [`expected_items`](ExistenceFilterBuilder::expected_items)
//!   keys (default [`DEFAULT_EXPECTED_ITEMS`], one million); past that the
//!   rate grows. Memory: about 9.6 bits per key at 1 %, 1.2 MB for a
//!   million keys.
//! - **Asked on misses only.** The layers consult the filter when the
//!   store holds no entry for the key, never on a hit: a hit costs what it
//!   cost without it.
//! - **Off by default**: a layer without a filter asks the origin for
//!   every miss.
//!
//! The Bloom filter is [`fastbloom`](https://docs.rs/fastbloom)'s
//! `AtomicBloomFilter`: its bits are atomics, so inserts and reads from
//! any task need no lock; it is seedable, so every process computes the
//! same bits for a key; and it exposes its words and each key's source
//! hash, which is what sharing it between instances takes. (The
//! `bloomfilter` crate needs `&mut self` to insert and offers neither.)
//!
//! # Shared across instances
//!
//! With [`ExistenceFilterBuilder::shared`] (for example over a
//! [`RedisStore`](crate::store::RedisStore)) each instance keeps its local
//! copy and the store keeps the union of all of them: a snapshot of the
//! bits and a log of the keys inserted since (their hashes). What holds:
//!
//! - A key whose [`insert`](ExistenceFilter::insert) returned `Ok` on any
//!   instance is reported present by every instance sharing the filter,
//!   from the moment `insert` returned. An instance whose local copy says
//!   "absent" reads the log's new part (one small round trip) before it
//!   answers, so it is never behind an insert that completed.
//! - An answer "present" never needs the store.
//! - When the store cannot be reached, a key the local copy does not hold
//!   is reported present (fail-open: the origin is asked), so an outage
//!   costs origin queries, never a wrong "does not exist".
//! - An `insert` that could not reach the store returns
//!   [`FilterError::Unshared`]: the key is present on this instance at
//!   once and on the others once this instance reaches the store again
//!   (it then publishes its whole copy). Until then another instance may
//!   answer "does not exist" for it.
//!
//! ```
//! use tower_cache::filter::ExistenceFilter;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let products = ExistenceFilter::builder()
//!     .expected_items(100_000)
//!     .false_positive_rate(0.001)
//!     .build();
//! // The key source: every id in the database, at start-up.
//! products.load((1..=10_000u64).map(|id| id.to_string())).await.unwrap();
//! assert!(products.may_contain("42").await);
//! // A product created later.
//! products.insert("10001").await.unwrap();
//! assert!(products.may_contain("10001").await);
//! # }
//! ```

mod builder;
mod share;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fastbloom::AtomicBloomFilter;

use crate::store::StoreError;
pub use builder::{
    DEFAULT_EXPECTED_ITEMS, DEFAULT_FALSE_POSITIVE_RATE, DEFAULT_MAX_LOG_ITEMS, DEFAULT_SEED,
    ExistenceFilterBuilder,
};
pub use share::{FilterShare, FilterSpec, FilterUpdate, LogPosition};

/// Why an insert or a load did not reach the shared store. The keys are
/// in the local copy all the same.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The shared store could not be reached (its error is the
    /// [`source`](std::error::Error::source)); the local copy is published
    /// whole at the next contact.
    #[error("existence filter not shared: {0}")]
    Unshared(#[source] StoreError),
}

/// Counters of an [`ExistenceFilter`], from [`ExistenceFilter::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Keys inserted through this handle (loads included).
    pub inserted: u64,
    /// Checks the local copy answered "absent" and the shared store was
    /// read to confirm.
    pub shared_reads: u64,
    /// Checks answered "present" because the shared store could not be
    /// read (fail-open).
    pub fail_open: u64,
}

/// A set of the keys that exist, with no false negatives and a bounded
/// rate of false positives: see the [module docs](self). Cloning is cheap;
/// clones share the filter.
#[derive(Clone)]
pub struct ExistenceFilter {
    inner: Arc<Inner>,
}

struct Inner {
    bloom: AtomicBloomFilter,
    shared: Option<Shared>,
    inserted: AtomicU64,
    shared_reads: AtomicU64,
    fail_open: AtomicU64,
}

/// The shared form: the store, and how far this copy has read it.
struct Shared {
    share: Arc<dyn FilterShare>,
    spec: FilterSpec,
    /// The snapshot epoch and log position this copy has applied.
    at: Mutex<LogPosition>,
    /// Set when an insert or a load missed the store: the whole copy is
    /// published at the next contact.
    republish: AtomicBool,
    max_log: u64,
}

impl std::fmt::Debug for ExistenceFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExistenceFilter")
            .field("num_bits", &self.num_bits())
            .field("num_hashes", &self.num_hashes())
            .field("shared", &self.inner.shared.as_ref().map(|s| &s.spec.name))
            .finish()
    }
}

impl Default for ExistenceFilter {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl ExistenceFilter {
    /// A builder, with the defaults: [`DEFAULT_EXPECTED_ITEMS`] keys at
    /// [`DEFAULT_FALSE_POSITIVE_RATE`], in process only.
    pub fn builder() -> ExistenceFilterBuilder {
        ExistenceFilterBuilder::default()
    }

    fn from_parts(bloom: AtomicBloomFilter, shared: Option<Shared>) -> Self {
        ExistenceFilter {
            inner: Arc::new(Inner {
                bloom,
                shared,
                inserted: AtomicU64::new(0),
                shared_reads: AtomicU64::new(0),
                fail_open: AtomicU64::new(0),
            }),
        }
    }

    /// Bits in the filter.
    pub fn num_bits(&self) -> usize {
        self.inner.bloom.num_bits()
    }

    /// Bits set per key.
    pub fn num_hashes(&self) -> u32 {
        self.inner.bloom.num_hashes()
    }

    /// The counters so far.
    pub fn stats(&self) -> FilterStats {
        let i = &self.inner;
        FilterStats {
            inserted: i.inserted.load(Ordering::Relaxed),
            shared_reads: i.shared_reads.load(Ordering::Relaxed),
            fail_open: i.fail_open.load(Ordering::Relaxed),
        }
    }

    /// Whether the local copy holds `key`, without asking the shared
    /// store. `false` means "not inserted through this copy nor read from
    /// the store yet"; use [`may_contain`](Self::may_contain) for the
    /// answer a layer acts on.
    pub fn contains_local(&self, key: &str) -> bool {
        self.inner.bloom.contains(key)
    }

    /// Whether `key` may exist: `false` only when it was never inserted
    /// on any instance sharing the filter (as of this call). A shared
    /// filter whose local copy says "absent" reads what other instances
    /// inserted since it last looked, and answers `true` when the store
    /// cannot be read.
    pub async fn may_contain(&self, key: &str) -> bool {
        let bloom = &self.inner.bloom;
        let hash = bloom.source_hash(key);
        if bloom.contains_hash(hash) {
            return true;
        }
        let Some(shared) = &self.inner.shared else {
            return false;
        };
        self.inner.shared_reads.fetch_add(1, Ordering::Relaxed);
        match self.pull(shared).await {
            Ok(()) => bloom.contains_hash(hash),
            Err(error) => {
                self.inner.fail_open.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(filter = %shared.spec.name, %error, "shared existence filter unreadable; answering present");
                true
            }
        }
    }

    /// Inserts `key`: from now on every check of it on this instance, and
    /// (when shared and `Ok`) on every instance sharing the filter, says
    /// present.
    ///
    /// # Errors
    ///
    /// [`FilterError::Unshared`] when the shared store could not be
    /// reached: the key is in the local copy, and reaches the others at
    /// this instance's next contact with the store.
    pub async fn insert(&self, key: &str) -> Result<(), FilterError> {
        let bloom = &self.inner.bloom;
        let hash = bloom.source_hash(key);
        bloom.insert_hash(hash);
        self.inner.inserted.fetch_add(1, Ordering::Relaxed);
        let Some(shared) = &self.inner.shared else {
            return Ok(());
        };
        let sent = async {
            self.republish_if_due(shared).await?;
            shared.share.append(&shared.spec, &[hash]).await
        }
        .await;
        match sent {
            Ok(len) => {
                if len > shared.max_log {
                    self.compact(shared).await;
                }
                Ok(())
            }
            Err(error) => {
                shared.republish.store(true, Ordering::Release);
                Err(FilterError::Unshared(error))
            }
        }
    }

    /// Inserts every key of `keys` (the key source: every id that exists,
    /// read at start-up) and, when shared, publishes the local copy and
    /// takes in what the other instances hold. Returns how many keys were
    /// inserted.
    ///
    /// # Errors
    ///
    /// [`FilterError::Unshared`] when the shared store could not be
    /// reached: the keys are in the local copy, which is published at the
    /// next contact with the store.
    pub async fn load<I>(&self, keys: I) -> Result<u64, FilterError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut n = 0;
        for key in keys {
            self.inner.bloom.insert(key.as_ref());
            n += 1;
        }
        self.inner.inserted.fetch_add(n, Ordering::Relaxed);
        if let Some(shared) = &self.inner.shared {
            shared.republish.store(true, Ordering::Release);
            self.republish_if_due(shared)
                .await
                .map_err(FilterError::Unshared)?;
        }
        Ok(n)
    }

    /// [`load`](Self::load) from a stream of keys (rows read from a
    /// database cursor, say).
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub async fn load_stream<S>(&self, keys: S) -> Result<u64, FilterError>
    where
        S: futures_util::Stream,
        S::Item: AsRef<str>,
    {
        use futures_util::StreamExt;
        let mut keys = std::pin::pin!(keys);
        let mut n = 0;
        while let Some(key) = keys.next().await {
            self.inner.bloom.insert(key.as_ref());
            n += 1;
        }
        self.inner.inserted.fetch_add(n, Ordering::Relaxed);
        if let Some(shared) = &self.inner.shared {
            shared.republish.store(true, Ordering::Release);
            self.republish_if_due(shared)
                .await
                .map_err(FilterError::Unshared)?;
        }
        Ok(n)
    }

    /// Reads what other instances inserted since this copy last looked
    /// (nothing to do for a filter in process only).
    ///
    /// # Errors
    ///
    /// [`FilterError::Unshared`] when the shared store could not be read.
    pub async fn sync(&self) -> Result<(), FilterError> {
        match &self.inner.shared {
            Some(shared) => self.pull(shared).await.map_err(FilterError::Unshared),
            None => Ok(()),
        }
    }

    /// Brings the local copy up to the store: publishes it first when an
    /// earlier insert missed the store, then reads the log's new part (or
    /// the whole snapshot, when it changed).
    async fn pull(&self, shared: &Shared) -> Result<(), StoreError> {
        self.republish_if_due(shared).await?;
        let asked = *lock(&shared.at);
        let update = shared.share.since(&shared.spec, asked).await?;
        self.apply(shared, &update);
        Ok(())
    }

    /// Publishes the whole local copy when an insert or load missed the
    /// store.
    async fn republish_if_due(&self, shared: &Shared) -> Result<(), StoreError> {
        if !shared.republish.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        match shared.share.publish(&shared.spec, self.words(), None).await {
            Ok(update) => {
                self.apply(shared, &update);
                Ok(())
            }
            Err(error) => {
                shared.republish.store(true, Ordering::Release);
                Err(error)
            }
        }
    }

    /// Folds the log into the snapshot once it holds more than the
    /// configured number of keys; a failure leaves the log as it is.
    async fn compact(&self, shared: &Shared) {
        if let Err(error) = self.pull(shared).await {
            tracing::debug!(filter = %shared.spec.name, %error, "existence filter log not compacted");
            return;
        }
        let at = *lock(&shared.at);
        match shared
            .share
            .publish(&shared.spec, self.words(), Some(at))
            .await
        {
            Ok(update) => self.apply(shared, &update),
            Err(error) => {
                tracing::debug!(filter = %shared.spec.name, %error, "existence filter log not compacted");
            }
        }
    }

    /// Takes in what the store answered: the keys' hashes, the snapshot
    /// when it was sent, and the position reached.
    fn apply(&self, shared: &Shared, update: &FilterUpdate) {
        let bloom = &self.inner.bloom;
        for &hash in &update.hashes {
            bloom.insert_hash(hash);
        }
        if let Some(snapshot) = &update.snapshot {
            let words = bloom.as_slice().len();
            if snapshot.len() == words * 8 {
                let other = AtomicBloomFilter::from_vec(
                    snapshot
                        .chunks_exact(8)
                        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
                        .collect(),
                )
                .seed(&shared.spec.seed)
                .hashes(bloom.num_hashes());
                bloom.union(&other);
            } else if !snapshot.is_empty() {
                tracing::warn!(
                    filter = %shared.spec.name,
                    len = snapshot.len(),
                    "shared existence filter snapshot of another size ignored"
                );
            }
        }
        let mut at = lock(&shared.at);
        let newer_epoch = at
            .epoch
            .is_none_or(|e| update.at.epoch.is_some_and(|u| u > e));
        if newer_epoch {
            *at = update.at;
        } else if at.epoch == update.at.epoch {
            at.offset = at.offset.max(update.at.offset);
        }
    }

    /// The local copy's bits, little-endian.
    fn words(&self) -> Vec<u8> {
        self.inner
            .bloom
            .as_slice()
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
