//! The [`TieredStore`] builder: its knobs and their defaults.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use super::super::redis::breaker::{Breaker, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_INTERVAL};
use super::super::redis::replay::{DEFAULT_MAX_PENDING_INVALIDATIONS, ReplayQueue};
use super::super::{MemoryStore, RedisStore};
use super::fence::Fences;
use super::seen::Seen;
use super::unsynced::{DEFAULT_MAX_UNSYNCED, MIN_UNSYNCED};
use super::{Counters, DEFAULT_L1_TTL, Inner, Shared, TieredStore, listener};

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
    max_unsynced: Duration,
}

impl TieredStoreBuilder {
    /// Longest time an entry stays in L1 before it is read from L2 again.
    /// Bounds how long a missed invalidation can be served. Capped at L2's
    /// [`max_ttl`](crate::store::RedisStoreBuilder::max_ttl). Default:
    /// [`DEFAULT_L1_TTL`] (30 s).
    #[must_use]
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = ttl;
        self
    }

    /// How often L2 is probed while the circuit breaker is open. Default:
    /// [`DEFAULT_RETRY_INTERVAL`] (1 s).
    #[must_use]
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Consecutive L2 failures that open the circuit breaker. Default:
    /// [`DEFAULT_FAILURE_THRESHOLD`] (3).
    #[must_use]
    pub fn failure_threshold(mut self, failures: u64) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// Whether writes are published so other instances drop their L1 copy
    /// of the key. Default: `true`. Removes and tag invalidations are
    /// always published.
    #[must_use]
    pub fn publish_puts(mut self, publish: bool) -> Self {
        self.publish_puts = publish;
        self
    }

    /// The pub/sub channel for invalidations. Default: the L2 prefix
    /// followed by `invalidate`.
    #[must_use]
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// How many distinct removes and tag invalidations are kept for replay
    /// while L2 cannot be reached. Past that, they are dropped and every L2
    /// entry of the namespace is invalidated on recovery instead. Default:
    /// [`DEFAULT_MAX_PENDING_INVALIDATIONS`] (10 000).
    #[must_use]
    pub fn max_pending_invalidations(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Longest time L1 serves an entry while it cannot hear of other
    /// instances' invalidations: counted from when the invalidation channel
    /// was last known to work (a notice, or the answer to the ping the
    /// subscriber sends every fifth of this window), or from when the
    /// entry was stored if that is later. Past it, every entry L1 holds is
    /// marked out of sync and is reloaded on its next read (see
    /// [`TieredStore`]'s *Out of sync*), so a write on another instance is
    /// seen within about this window even without pub/sub. Entries are
    /// marked again each window for as long as the channel is down. At
    /// least 10 ms. Default: [`DEFAULT_MAX_UNSYNCED`] (5 s).
    #[must_use]
    pub fn max_unsynced(mut self, window: Duration) -> Self {
        self.max_unsynced = window;
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
        let seen = Seen::new(self.l2.max_ttl());
        let shared = Arc::new(Shared {
            l1: self.l1,
            l2: self.l2,
            l1_ttl,
            publish_puts: self.publish_puts,
            channel: channel.clone(),
            instance,
            breaker: Breaker::new(self.failure_threshold, self.retry_interval),
            counters: Counters::new(),
            fences: Fences::new(),
            seen,
            replay: ReplayQueue::new(self.max_pending),
            max_unsynced: self.max_unsynced.max(MIN_UNSYNCED),
        });
        let (tx, rx) = watch::channel(false);
        let listener = tokio::spawn(
            listener::listen(shared.clone(), tx)
                .instrument(tracing::info_span!("tower_cache.invalidations", %channel)),
        );
        TieredStore {
            inner: Arc::new(Inner {
                shared,
                subscribed: rx,
                listener: std::sync::Mutex::new(Some(listener)),
            }),
        }
    }
}

impl TieredStore {
    /// A builder over `l1` and `l2` with the defaults.
    #[must_use]
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
            max_unsynced: DEFAULT_MAX_UNSYNCED,
        }
    }
}
