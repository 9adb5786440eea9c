//! The [`ExistenceFilter`] builder: its knobs and their defaults.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use fastbloom::AtomicBloomFilter;

use super::{ExistenceFilter, FilterShare, FilterSpec, LogPosition, Shared};

/// Default number of keys the filter is sized for: one million.
pub const DEFAULT_EXPECTED_ITEMS: usize = 1_000_000;
/// Default false-positive rate at [`DEFAULT_EXPECTED_ITEMS`] keys: 1 %.
pub const DEFAULT_FALSE_POSITIVE_RATE: f64 = 0.01;
/// Default hash seed. Instances that share a filter must use the same.
pub const DEFAULT_SEED: u128 = 0x7463_6163_6865_2d65_7869_7374_7330_0001;
/// Default number of keys the shared log holds before it is folded into
/// the snapshot: 65,536 (512 KiB of hashes).
pub const DEFAULT_MAX_LOG_ITEMS: u64 = 65_536;

/// Builds an [`ExistenceFilter`].
pub struct ExistenceFilterBuilder {
    expected_items: usize,
    false_positive_rate: f64,
    seed: u128,
    shared: Option<(String, Arc<dyn FilterShare>)>,
    max_log: u64,
}

impl std::fmt::Debug for ExistenceFilterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExistenceFilterBuilder")
            .field("expected_items", &self.expected_items)
            .field("false_positive_rate", &self.false_positive_rate)
            .field("shared", &self.shared.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

impl Default for ExistenceFilterBuilder {
    fn default() -> Self {
        ExistenceFilterBuilder {
            expected_items: DEFAULT_EXPECTED_ITEMS,
            false_positive_rate: DEFAULT_FALSE_POSITIVE_RATE,
            seed: DEFAULT_SEED,
            shared: None,
            max_log: DEFAULT_MAX_LOG_ITEMS,
        }
    }
}

impl ExistenceFilterBuilder {
    /// How many keys the filter is sized for; more can be inserted, at a
    /// growing false-positive rate. Default: [`DEFAULT_EXPECTED_ITEMS`]
    /// (1,000,000).
    #[must_use]
    pub fn expected_items(mut self, n: usize) -> Self {
        self.expected_items = n.max(1);
        self
    }

    /// The share of absent keys reported present (and so sent to the
    /// origin) at [`expected_items`](Self::expected_items) keys, kept
    /// within `1e-9..=0.5`. Default: [`DEFAULT_FALSE_POSITIVE_RATE`]
    /// (0.01).
    #[must_use]
    pub fn false_positive_rate(mut self, rate: f64) -> Self {
        self.false_positive_rate = if rate.is_nan() {
            DEFAULT_FALSE_POSITIVE_RATE
        } else {
            rate.clamp(1e-9, 0.5)
        };
        self
    }

    /// The hash seed; instances sharing a filter must agree on it.
    /// Default: [`DEFAULT_SEED`].
    #[must_use]
    pub fn seed(mut self, seed: u128) -> Self {
        self.seed = seed;
        self
    }

    /// Shares the filter named `name` through `share` (a
    /// [`RedisStore`](crate::store::RedisStore)) with every instance that
    /// builds it with the same name and shape: see the
    /// [module docs](super#shared-across-instances). Default: in process
    /// only.
    #[must_use]
    pub fn shared(mut self, name: impl Into<String>, share: impl FilterShare) -> Self {
        self.shared = Some((name.into(), Arc::new(share)));
        self
    }

    /// How many keys the shared log holds before the instance that
    /// appends past it folds it into the snapshot. Default:
    /// [`DEFAULT_MAX_LOG_ITEMS`] (65,536).
    #[must_use]
    pub fn max_log_items(mut self, n: u64) -> Self {
        self.max_log = n.max(1);
        self
    }

    /// An empty filter; fill it with [`ExistenceFilter::load`].
    pub fn build(self) -> ExistenceFilter {
        let bloom = AtomicBloomFilter::with_false_pos(self.false_positive_rate)
            .seed(&self.seed)
            .expected_items(self.expected_items);
        let shared = self.shared.map(|(name, share)| Shared {
            share,
            spec: FilterSpec {
                name,
                num_bits: bloom.num_bits() as u64,
                num_hashes: bloom.num_hashes(),
                seed: self.seed,
            },
            at: Mutex::new(LogPosition::default()),
            republish: AtomicBool::new(false),
            max_log: self.max_log,
        });
        ExistenceFilter::from_parts(bloom, shared)
    }
}
