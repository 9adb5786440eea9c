//! A named policy with its counters.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::metrics::{Counter, Histogram};

use super::Policy;
use crate::metrics::Tally;

/// Counters of one [`Profile`], from [`Profile::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileStats {
    /// Reads answered with a fresh entry.
    pub hits: u64,
    /// Reads that loaded the value themselves.
    pub misses: u64,
    /// Reads answered by another caller's load, which they waited for
    /// (single flight): a cold key read by a hundred callers at once is one
    /// miss and 99 coalesced reads.
    pub coalesced: u64,
    /// Reads answered with a stale entry.
    pub stale: u64,
    /// Requests that bypassed the cache.
    pub bypasses: u64,
    /// Loader calls.
    pub loads: u64,
    /// Loader calls that failed.
    pub load_errors: u64,
    /// Reads that found another caller's load of their key in flight and
    /// waited for it, counted when they begin to wait. Most end up
    /// `coalesced`; one whose shared load stored nothing loads alone and
    /// ends up a miss.
    pub joined: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Background refreshes skipped because the limit was reached.
    pub refreshes_skipped: u64,
    /// Reads the layer's existence filter answered "does not exist"
    /// without asking the origin (counted in none of the above).
    pub filtered: u64,
}

/// The counters, each also reported as a metric.
struct Counts {
    hits: Tally,
    misses: Tally,
    coalesced: Tally,
    stale: Tally,
    bypasses: Tally,
    loads: Tally,
    load_errors: Tally,
    joined: AtomicU64,
    refreshes: Tally,
    refreshes_skipped: Tally,
    filtered: Tally,
    undecodable: Counter,
    load_seconds: Histogram,
}

impl Counts {
    /// The counters of the profile `name`, their metrics registered (at 0)
    /// with the recorder installed now.
    fn new(name: &str) -> Self {
        crate::metrics::describe();
        let cache = || ::metrics::Label::new("cache", name.to_owned());
        let result = |r: &'static str| {
            Tally::new(::metrics::counter!(
                crate::metrics::REQUESTS_TOTAL,
                vec![cache(), ::metrics::Label::new("result", r)]
            ))
        };
        let tally = |metric: &'static str| Tally::new(::metrics::counter!(metric, vec![cache()]));
        Counts {
            hits: result(crate::metrics::result::HIT),
            misses: result(crate::metrics::result::MISS),
            coalesced: result(crate::metrics::result::COALESCED),
            stale: result(crate::metrics::result::STALE),
            bypasses: result(crate::metrics::result::BYPASS),
            loads: tally(crate::metrics::LOADS_TOTAL),
            load_errors: tally(crate::metrics::LOAD_ERRORS_TOTAL),
            joined: AtomicU64::new(0),
            refreshes: tally(crate::metrics::REFRESHES_TOTAL),
            refreshes_skipped: tally(crate::metrics::REFRESHES_SKIPPED_TOTAL),
            filtered: tally(crate::metrics::FILTERED_TOTAL),
            undecodable: ::metrics::counter!(crate::metrics::UNDECODABLE_TOTAL, vec![cache()]),
            load_seconds: ::metrics::histogram!(crate::metrics::LOAD_SECONDS, vec![cache()]),
        }
    }
}

struct Inner {
    name: Arc<str>,
    policy: Policy,
    counts: Counts,
}

/// A [`Policy`] with a name, and the counters kept under that name.
///
/// Each layer instance has one. The name labels the metrics it reports
/// through the [`metrics`](::metrics) facade (`cache="<name>"`):
/// `tower_cache_requests_total{result="hit"|"stale"|"miss"|"coalesced"|"bypass"}`,
/// `tower_cache_loads_total`, `tower_cache_load_errors_total`,
/// `tower_cache_load_seconds`, `tower_cache_refreshes_total`,
/// `tower_cache_refreshes_skipped_total`, `tower_cache_filtered_total` and
/// `tower_cache_undecodable_total` (the table in [`crate::metrics`] says
/// what each means). They are registered, and described, when the profile
/// is created, so they read 0 until the first request: install the metrics
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
        Profile {
            inner: Arc::new(Inner {
                counts: Counts::new(&name),
                name: name.into(),
                policy,
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
        ProfileStats {
            hits: c.hits.get(),
            misses: c.misses.get(),
            coalesced: c.coalesced.get(),
            stale: c.stale.get(),
            bypasses: c.bypasses.get(),
            loads: c.loads.get(),
            load_errors: c.load_errors.get(),
            joined: c.joined.load(Ordering::Relaxed),
            refreshes: c.refreshes.get(),
            refreshes_skipped: c.refreshes_skipped.get(),
            filtered: c.filtered.get(),
        }
    }

    pub(crate) fn record_hit(&self) {
        self.inner.counts.hits.incr();
    }
    pub(crate) fn record_miss(&self) {
        self.inner.counts.misses.incr();
    }
    /// Records a read answered by another caller's load it waited for.
    pub(crate) fn record_coalesced(&self) {
        self.inner.counts.coalesced.incr();
    }
    pub(crate) fn record_stale(&self) {
        self.inner.counts.stale.incr();
    }
    /// Records a request that bypassed the cache. The only public
    /// recorder: hits, misses and stale answers are counted by the engine,
    /// but an application may decide by itself to answer without the cache
    /// (a request with credentials, say), and counts that here so the
    /// profile's ratio stays true.
    pub fn record_bypass(&self) {
        self.inner.counts.bypasses.incr();
        tracing::trace!(cache = %self.inner.name, "bypass");
    }
    pub(crate) fn record_load(&self, took: Duration) {
        let c = &self.inner.counts;
        c.loads.incr();
        c.load_seconds.record(took.as_secs_f64());
    }
    pub(crate) fn record_load_error(&self) {
        self.inner.counts.load_errors.incr();
    }
    pub(crate) fn record_joined(&self) {
        self.inner.counts.joined.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_refresh(&self) {
        self.inner.counts.refreshes.incr();
    }
    pub(crate) fn record_refresh_skipped(&self) {
        self.inner.counts.refreshes_skipped.incr();
    }
    /// Records a read the existence filter answered without the origin.
    pub(crate) fn record_filtered(&self) {
        self.inner.counts.filtered.incr();
    }
    /// Records a stored entry that did not decode, removed.
    pub(crate) fn record_undecodable(&self) {
        self.inner.counts.undecodable.increment(1);
    }
}
