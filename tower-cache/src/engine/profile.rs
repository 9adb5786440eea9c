//! A named policy with its counters.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::Policy;

/// Counters of one [`Profile`], from [`Profile::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileStats {
    /// Reads answered with a fresh entry.
    pub hits: u64,
    /// Reads that loaded (or waited for a load).
    pub misses: u64,
    /// Reads answered with a stale entry.
    pub stale: u64,
    /// Requests that bypassed the cache.
    pub bypasses: u64,
    /// Loader calls.
    pub loads: u64,
    /// Loader calls that failed.
    pub load_errors: u64,
    /// Reads that waited for another caller's load.
    pub joined: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Background refreshes skipped because the limit was reached.
    pub refreshes_skipped: u64,
}

#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    bypasses: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    joined: AtomicU64,
    refreshes: AtomicU64,
    refreshes_skipped: AtomicU64,
}

struct Meters {
    hit: Counter,
    miss: Counter,
    stale: Counter,
    bypass: Counter,
    loads: Counter,
    load_errors: Counter,
    load_seconds: Histogram,
    refreshes: Counter,
}

struct Inner {
    name: Arc<str>,
    policy: Policy,
    counts: Counts,
    meters: Meters,
}

/// A [`Policy`] with a name, and the counters kept under that name.
///
/// Each layer instance has one. The name labels the metrics it reports
/// through the [`metrics`] facade (`cache="<name>"`):
/// `tower_cache_requests_total{result="hit"|"miss"|"stale"|"bypass"}`,
/// `tower_cache_loads_total`, `tower_cache_load_errors_total`,
/// `tower_cache_load_seconds` and `tower_cache_refreshes_total`. Metric
/// handles are taken when the profile is created, so install the metrics
/// recorder before building layers.
///
/// ```
/// use std::time::Duration;
/// use tower_cache::{Policy, Profile};
///
/// let profile = Profile::new("/products/{id}", Policy::ttl(Duration::from_secs(30)));
/// assert_eq!(profile.stats().hits, 0);
/// ```
#[derive(Clone)]
pub struct Profile {
    inner: Arc<Inner>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.inner.name)
            .field("policy", &self.inner.policy)
            .finish()
    }
}

impl Profile {
    /// A profile named `name` (a metrics label: the route, the method).
    pub fn new(name: impl Into<String>, policy: Policy) -> Self {
        let name: String = name.into();
        let result = |r: &'static str| metrics::counter!("tower_cache_requests_total", "cache" => name.clone(), "result" => r);
        let meters = Meters {
            hit: result("hit"),
            miss: result("miss"),
            stale: result("stale"),
            bypass: result("bypass"),
            loads: metrics::counter!("tower_cache_loads_total", "cache" => name.clone()),
            load_errors: metrics::counter!("tower_cache_load_errors_total", "cache" => name.clone()),
            load_seconds: metrics::histogram!("tower_cache_load_seconds", "cache" => name.clone()),
            refreshes: metrics::counter!("tower_cache_refreshes_total", "cache" => name.clone()),
        };
        Profile {
            inner: Arc::new(Inner {
                name: name.into(),
                policy,
                counts: Counts::default(),
                meters,
            }),
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// A profile with the same name and a changed policy, and counters of
    /// its own.
    #[must_use]
    pub fn map_policy(&self, f: impl FnOnce(Policy) -> Policy) -> Profile {
        Profile::new(self.name(), f(self.inner.policy.clone()))
    }

    /// The counters so far.
    pub fn stats(&self) -> ProfileStats {
        let c = &self.inner.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProfileStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            stale: get(&c.stale),
            bypasses: get(&c.bypasses),
            loads: get(&c.loads),
            load_errors: get(&c.load_errors),
            joined: get(&c.joined),
            refreshes: get(&c.refreshes),
            refreshes_skipped: get(&c.refreshes_skipped),
        }
    }

    fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_hit(&self) {
        Self::bump(&self.inner.counts.hits);
        self.inner.meters.hit.increment(1);
    }
    pub(crate) fn record_miss(&self) {
        Self::bump(&self.inner.counts.misses);
        self.inner.meters.miss.increment(1);
    }
    pub(crate) fn record_stale(&self) {
        Self::bump(&self.inner.counts.stale);
        self.inner.meters.stale.increment(1);
    }
    /// Records a request that bypassed the cache. The only public
    /// recorder: hits, misses and stale answers are counted by the engine,
    /// but an application may decide by itself to answer without the cache
    /// (a request with credentials, say), and counts that here so the
    /// profile's ratio stays true.
    pub fn record_bypass(&self) {
        Self::bump(&self.inner.counts.bypasses);
        self.inner.meters.bypass.increment(1);
        tracing::trace!(cache = %self.inner.name, "bypass");
    }
    pub(crate) fn record_load(&self, took: Duration) {
        Self::bump(&self.inner.counts.loads);
        self.inner.meters.loads.increment(1);
        self.inner.meters.load_seconds.record(took.as_secs_f64());
    }
    pub(crate) fn record_load_error(&self) {
        Self::bump(&self.inner.counts.load_errors);
        self.inner.meters.load_errors.increment(1);
    }
    pub(crate) fn record_joined(&self) {
        Self::bump(&self.inner.counts.joined);
    }
    pub(crate) fn record_refresh(&self) {
        Self::bump(&self.inner.counts.refreshes);
        self.inner.meters.refreshes.increment(1);
    }
    pub(crate) fn record_refresh_skipped(&self) {
        Self::bump(&self.inner.counts.refreshes_skipped);
    }
}
