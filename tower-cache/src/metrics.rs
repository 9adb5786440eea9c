//! The metrics tower-cache emits, with their names, labels and meaning.
//!
//! Every metric goes through the [`metrics`](https://docs.rs/metrics)
//! facade, so any recorder works (`metrics-exporter-prometheus`, say).
//! Each is registered, and so reads 0, as soon as what emits it exists: a
//! layer's metrics when its [`Profile`](crate::Profile) is created (with
//! the layer), a write-behind queue's when its worker is made, a store's
//! when it is built. Their descriptions and units are given to the
//! recorder at the same moments ([`describe`]), so a Prometheus scrape
//! shows `# HELP` and `# TYPE` for each from the start. Install the
//! recorder before building layers and stores: what is created before it
//! reports to no one.
//!
//! Per layer, labelled `cache` with the layer's name (the route):
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `tower_cache_requests_total` | counter | `cache`, `result` | reads, by how they were answered: `hit` (a fresh entry), `stale` (a stale entry: stale-while-revalidate, stale-if-error), `miss` (this read loaded), `coalesced` (this read waited for another read's load of the key: single flight), `bypass` (the cache was not used) |
//! | `tower_cache_loads_total` | counter | `cache` | loader (origin) calls |
//! | `tower_cache_load_errors_total` | counter | `cache` | loader calls that failed or timed out |
//! | `tower_cache_load_seconds` | histogram (s) | `cache` | how long loader calls took |
//! | `tower_cache_refreshes_total` | counter | `cache` | background refreshes started |
//! | `tower_cache_refreshes_skipped_total` | counter | `cache` | background refreshes not started: the limit of refreshes in flight was reached |
//! | `tower_cache_undecodable_total` | counter | `cache` | stored entries the layer could not decode, removed |
//! | `tower_cache_filtered_total` | counter | `cache` | reads the layer's existence filter answered "does not exist" without asking the origin (not counted in `tower_cache_requests_total`) |
//!
//! Per write-behind layer, labelled `cache` with its name:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `tower_cache_write_behind_queue_depth` | gauge | `cache` | writes acknowledged and not yet taken by the worker |
//! | `tower_cache_write_behind_batches_total` | counter | `cache` | batches delivered (writer calls that succeeded) |
//! | `tower_cache_write_behind_flush_seconds` | histogram (s) | `cache` | how long a batch took to deliver, retries included |
//! | `tower_cache_write_behind_coalesced_total` | counter | `cache` | writes folded into a later write to the same key |
//! | `tower_cache_write_behind_retries_total` | counter | `cache` | writer calls retried |
//! | `tower_cache_write_behind_dead_letters_total` | counter | `cache` | writes given up on after every retry |
//!
//! Per process, from the Redis and tiered stores (summed over the stores
//! of the process; no labels):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `tower_cache_l1_hits_total` | counter | tiered store reads answered by L1 |
//! | `tower_cache_l1_unsynced_total` | counter | tiered store reads answered by an L1 entry held out of sync, to be revalidated |
//! | `tower_cache_l2_hits_total` | counter | tiered store reads answered by L2 (and copied into L1) |
//! | `tower_cache_l2_errors_total` | counter | Redis operations that failed (error or timeout) |
//! | `tower_cache_l2_skipped_total` | counter | tiered store operations that skipped Redis, its circuit breaker open |
//! | `tower_cache_l2_breaker_open` | gauge | circuit breakers in front of Redis open now: 1 while a store skips Redis, 0 while it uses it |
//! | `tower_cache_l2_outages_total` | counter | times a circuit breaker opened |
//! | `tower_cache_store_corrupt_total` | counter | Redis entries that failed their checksum or key check, removed |
//! | `tower_cache_invalidations_pending` | gauge | removes and tag invalidations that missed Redis, waiting to be replayed |
//! | `tower_cache_invalidations_deferred_total` | counter | removes and tag invalidations that missed Redis and were kept for replay |
//! | `tower_cache_invalidations_replayed_total` | counter | kept removes and tag invalidations replayed to Redis |
//! | `tower_cache_invalidation_overflows_total` | counter | times too many invalidations were kept and the namespace was to be invalidated whole instead |
//! | `tower_cache_invalidations_published_total` | counter | invalidations a tiered store published for other instances |
//! | `tower_cache_invalidations_received_total` | counter | invalidations a tiered store received from other instances |
//! | `tower_cache_invalidation_subscriptions_total` | counter | times a tiered store (re)subscribed to the invalidation channel |
//! | `tower_cache_hot_hits_total` | counter | reads answered by a copy of a hot key's entry ([`HotKeys`](crate::store::HotKeys)) |
//! | `tower_cache_hot_key_reads` | gauge | label `rank` (1 = hottest): the reads the hot-key sketch counted for the key at that rank, 0 when no key is |
//!
//! The hit ratio of a route is
//! `(hit + stale) / (hit + stale + miss + coalesced + bypass)`:
//!
//! ```text
//! sum by (cache) (rate(tower_cache_requests_total{result=~"hit|stale"}[5m]))
//!   / sum by (cache) (rate(tower_cache_requests_total[5m]))
//! ```
//!
//! The same names are in [`ALL`], for dashboards and tests:
//!
//! ```
//! let requests = tower_cache::metrics::ALL
//!     .iter()
//!     .find(|m| m.name == tower_cache::metrics::REQUESTS_TOTAL)
//!     .expect("listed");
//! assert_eq!(requests.labels, ["cache", "result"]);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use ::metrics::{Counter, Unit, describe_counter, describe_gauge, describe_histogram};

/// `tower_cache_requests_total{cache, result}`: reads by how they were
/// answered (see [`result`]).
pub const REQUESTS_TOTAL: &str = "tower_cache_requests_total";
/// `tower_cache_loads_total{cache}`: loader calls.
pub const LOADS_TOTAL: &str = "tower_cache_loads_total";
/// `tower_cache_load_errors_total{cache}`: loader calls that failed.
pub const LOAD_ERRORS_TOTAL: &str = "tower_cache_load_errors_total";
/// `tower_cache_load_seconds{cache}`: loader call durations.
pub const LOAD_SECONDS: &str = "tower_cache_load_seconds";
/// `tower_cache_refreshes_total{cache}`: background refreshes started.
pub const REFRESHES_TOTAL: &str = "tower_cache_refreshes_total";
/// `tower_cache_refreshes_skipped_total{cache}`: background refreshes not
/// started.
pub const REFRESHES_SKIPPED_TOTAL: &str = "tower_cache_refreshes_skipped_total";
/// `tower_cache_undecodable_total{cache}`: entries that did not decode.
pub const UNDECODABLE_TOTAL: &str = "tower_cache_undecodable_total";
/// `tower_cache_filtered_total{cache}`: reads the existence filter
/// answered without the origin.
pub const FILTERED_TOTAL: &str = "tower_cache_filtered_total";
/// `tower_cache_write_behind_queue_depth{cache}`: writes waiting for the
/// worker.
pub const WRITE_BEHIND_QUEUE_DEPTH: &str = "tower_cache_write_behind_queue_depth";
/// `tower_cache_write_behind_batches_total{cache}`: batches delivered.
pub const WRITE_BEHIND_BATCHES_TOTAL: &str = "tower_cache_write_behind_batches_total";
/// `tower_cache_write_behind_flush_seconds{cache}`: batch delivery
/// durations.
pub const WRITE_BEHIND_FLUSH_SECONDS: &str = "tower_cache_write_behind_flush_seconds";
/// `tower_cache_write_behind_coalesced_total{cache}`: writes folded into
/// another.
pub const WRITE_BEHIND_COALESCED_TOTAL: &str = "tower_cache_write_behind_coalesced_total";
/// `tower_cache_write_behind_retries_total{cache}`: writer calls retried.
pub const WRITE_BEHIND_RETRIES_TOTAL: &str = "tower_cache_write_behind_retries_total";
/// `tower_cache_write_behind_dead_letters_total{cache}`: writes given up
/// on.
pub const WRITE_BEHIND_DEAD_LETTERS_TOTAL: &str = "tower_cache_write_behind_dead_letters_total";
/// `tower_cache_l1_hits_total`: tiered reads answered by L1.
pub const L1_HITS_TOTAL: &str = "tower_cache_l1_hits_total";
/// `tower_cache_l1_unsynced_total`: tiered reads answered by an L1 entry
/// held out of sync, to be revalidated.
pub const L1_UNSYNCED_TOTAL: &str = "tower_cache_l1_unsynced_total";
/// `tower_cache_l2_hits_total`: tiered reads answered by L2.
pub const L2_HITS_TOTAL: &str = "tower_cache_l2_hits_total";
/// `tower_cache_l2_errors_total`: Redis operations that failed.
pub const L2_ERRORS_TOTAL: &str = "tower_cache_l2_errors_total";
/// `tower_cache_l2_skipped_total`: tiered operations that skipped Redis.
pub const L2_SKIPPED_TOTAL: &str = "tower_cache_l2_skipped_total";
/// `tower_cache_l2_breaker_open`: circuit breakers open now.
pub const L2_BREAKER_OPEN: &str = "tower_cache_l2_breaker_open";
/// `tower_cache_l2_outages_total`: times a circuit breaker opened.
pub const L2_OUTAGES_TOTAL: &str = "tower_cache_l2_outages_total";
/// `tower_cache_store_corrupt_total`: Redis entries that failed their
/// checks.
pub const STORE_CORRUPT_TOTAL: &str = "tower_cache_store_corrupt_total";
/// `tower_cache_invalidations_pending`: invalidations waiting for Redis.
pub const INVALIDATIONS_PENDING: &str = "tower_cache_invalidations_pending";
/// `tower_cache_invalidations_deferred_total`: invalidations kept for
/// replay.
pub const INVALIDATIONS_DEFERRED_TOTAL: &str = "tower_cache_invalidations_deferred_total";
/// `tower_cache_invalidations_replayed_total`: kept invalidations
/// replayed.
pub const INVALIDATIONS_REPLAYED_TOTAL: &str = "tower_cache_invalidations_replayed_total";
/// `tower_cache_invalidation_overflows_total`: times the replay list
/// overflowed.
pub const INVALIDATION_OVERFLOWS_TOTAL: &str = "tower_cache_invalidation_overflows_total";
/// `tower_cache_invalidations_published_total`: invalidations published.
pub const INVALIDATIONS_PUBLISHED_TOTAL: &str = "tower_cache_invalidations_published_total";
/// `tower_cache_invalidations_received_total`: invalidations received.
pub const INVALIDATIONS_RECEIVED_TOTAL: &str = "tower_cache_invalidations_received_total";
/// `tower_cache_invalidation_subscriptions_total`: (re)subscriptions to
/// the invalidation channel.
pub const INVALIDATION_SUBSCRIPTIONS_TOTAL: &str = "tower_cache_invalidation_subscriptions_total";
/// Counter: reads answered by a copy of a hot key's entry.
pub const HOT_HITS_TOTAL: &str = "tower_cache_hot_hits_total";
/// Gauge, label `rank`: the reads counted for the key at that rank of the
/// hot keys.
pub const HOT_KEY_READS: &str = "tower_cache_hot_key_reads";

/// The values of the `result` label of [`REQUESTS_TOTAL`].
pub mod result {
    /// Answered with a fresh entry.
    pub const HIT: &str = "hit";
    /// Answered with a stale entry.
    pub const STALE: &str = "stale";
    /// Loaded by this read.
    pub const MISS: &str = "miss";
    /// Answered by another read's load, which this one waited for.
    pub const COALESCED: &str = "coalesced";
    /// Answered without the cache.
    pub const BYPASS: &str = "bypass";
    /// Every value, in this order.
    pub const ALL: [&str; 5] = [HIT, STALE, MISS, COALESCED, BYPASS];
}

/// What kind of metric it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observed values.
    Histogram,
}

/// One metric tower-cache emits.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// What it counts or measures.
    pub unit: Unit,
    /// The labels it carries.
    pub labels: &'static [&'static str],
    /// What it means (Prometheus' `# HELP`).
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

const CACHE: &[&str] = &["cache"];
const NONE: &[&str] = &[];
use Kind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric tower-cache emits, as the tables above list them.
pub const ALL: &[Metric] = &[
    metric(
        REQUESTS_TOTAL,
        C,
        Unit::Count,
        &["cache", "result"],
        "Reads by how they were answered: hit, stale, miss (this read loaded), coalesced (it waited for another read's load), bypass.",
    ),
    metric(LOADS_TOTAL, C, Unit::Count, CACHE, "Loader (origin) calls."),
    metric(
        LOAD_ERRORS_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Loader calls that failed or timed out.",
    ),
    metric(
        LOAD_SECONDS,
        H,
        Unit::Seconds,
        CACHE,
        "How long loader calls took.",
    ),
    metric(
        REFRESHES_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Background refreshes started.",
    ),
    metric(
        REFRESHES_SKIPPED_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Background refreshes not started: the limit of refreshes in flight was reached.",
    ),
    metric(
        UNDECODABLE_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Stored entries the layer could not decode, removed.",
    ),
    metric(
        FILTERED_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Reads the existence filter answered 'does not exist' without asking the origin.",
    ),
    metric(
        WRITE_BEHIND_QUEUE_DEPTH,
        G,
        Unit::Count,
        CACHE,
        "Writes acknowledged and not yet taken by the write-behind worker.",
    ),
    metric(
        WRITE_BEHIND_BATCHES_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Write-behind batches delivered (writer calls that succeeded).",
    ),
    metric(
        WRITE_BEHIND_FLUSH_SECONDS,
        H,
        Unit::Seconds,
        CACHE,
        "How long a write-behind batch took to deliver, retries included.",
    ),
    metric(
        WRITE_BEHIND_COALESCED_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Writes folded into a later write to the same key.",
    ),
    metric(
        WRITE_BEHIND_RETRIES_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Write-behind writer calls retried.",
    ),
    metric(
        WRITE_BEHIND_DEAD_LETTERS_TOTAL,
        C,
        Unit::Count,
        CACHE,
        "Writes given up on after every retry.",
    ),
    metric(
        L1_HITS_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Tiered store reads answered by L1.",
    ),
    metric(
        L1_UNSYNCED_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Tiered store reads answered by an L1 entry held out of sync (the invalidation channel was lost), to be revalidated.",
    ),
    metric(
        L2_HITS_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Tiered store reads answered by L2 (Redis) and copied into L1.",
    ),
    metric(
        L2_ERRORS_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Redis operations that failed (error or timeout).",
    ),
    metric(
        L2_SKIPPED_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Tiered store operations that skipped Redis, its circuit breaker open.",
    ),
    metric(
        L2_BREAKER_OPEN,
        G,
        Unit::Count,
        NONE,
        "Circuit breakers in front of Redis open now: 1 while a store skips Redis, 0 while it uses it.",
    ),
    metric(
        L2_OUTAGES_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Times a circuit breaker in front of Redis opened.",
    ),
    metric(
        STORE_CORRUPT_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Redis entries that failed their checksum or key check, removed.",
    ),
    metric(
        INVALIDATIONS_PENDING,
        G,
        Unit::Count,
        NONE,
        "Removes and tag invalidations that missed Redis, waiting to be replayed.",
    ),
    metric(
        INVALIDATIONS_DEFERRED_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Removes and tag invalidations that missed Redis and were kept for replay.",
    ),
    metric(
        INVALIDATIONS_REPLAYED_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Kept removes and tag invalidations replayed to Redis.",
    ),
    metric(
        INVALIDATION_OVERFLOWS_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Times too many invalidations were kept and the namespace was to be invalidated whole instead.",
    ),
    metric(
        INVALIDATIONS_PUBLISHED_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Invalidations a tiered store published for other instances.",
    ),
    metric(
        INVALIDATIONS_RECEIVED_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Invalidations a tiered store received from other instances and applied to L1.",
    ),
    metric(
        INVALIDATION_SUBSCRIPTIONS_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Times a tiered store (re)subscribed to the invalidation channel.",
    ),
    metric(
        HOT_HITS_TOTAL,
        C,
        Unit::Count,
        NONE,
        "Reads answered by a copy of a hot key's entry.",
    ),
    metric(
        HOT_KEY_READS,
        G,
        Unit::Count,
        &["rank"],
        "Reads the hot-key sketch counted for the key at this rank (1 = hottest); 0 when no key is.",
    ),
];

/// Gives the installed recorder the unit and description of every metric
/// in [`ALL`]. Layers and stores call it when they are created; an
/// application need not, unless it installs its recorder after building
/// them (their metrics then report to no one anyway).
pub fn describe() {
    for m in ALL {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// A count kept in process, for a `stats()` to read back, and reported
/// under a metric registered when the tally is made.
pub(crate) struct Tally {
    count: AtomicU64,
    counter: Counter,
}

impl Tally {
    /// A tally reporting to `counter`.
    pub(crate) fn new(counter: Counter) -> Self {
        Tally {
            count: AtomicU64::new(0),
            counter,
        }
    }

    /// A tally reporting to the unlabelled counter `name`.
    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "the stores' counters")
    )]
    pub(crate) fn named(name: &'static str) -> Self {
        Tally::new(::metrics::counter!(name))
    }

    /// Counts `n` more.
    pub(crate) fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.counter.increment(n);
    }

    /// Counts one more.
    pub(crate) fn incr(&self) {
        self.add(1);
    }

    /// The count so far.
    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::{Policy, Profile};

    /// The series lines of `name` in `text` (the name alone, or with
    /// labels), without the `_sum`/`_count` of a summary.
    fn series<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        text.lines().filter(move |l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
    }

    /// Whether `line` reads 0.
    fn reads_zero(line: &str) -> bool {
        line.rsplit(' ').next() == Some("0")
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn every_metric_is_described_and_reads_zero_before_any_event() {
        use crate::layer::write::Write;
        use crate::store::{HotKeys, MemoryStore, RedisStore, TieredStore};
        use crate::{Cache, WriteBehindLayer};

        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // What the example app builds: layers, a write-behind queue and a
        // tiered store (over a Redis that is not there: nothing happens).
        let (profile, queue, store) = ::metrics::with_local_recorder(&recorder, || {
            let profile = Profile::new("/products/{id}", Policy::default());
            let queue = WriteBehindLayer::<u64, i64, _>::new(
                Cache::new(MemoryStore::default()),
                "views",
                Policy::default(),
            )
            .pair(tower::service_fn(|_: Vec<Write<u64, i64>>| async {
                Ok::<_, std::io::Error>(())
            }));
            let l2 = RedisStore::new("redis://127.0.0.1:1").expect("a valid URL");
            let _hot = HotKeys::new(l2.clone());
            (profile, queue, TieredStore::new(MemoryStore::default(), l2))
        });
        let text = handle.render();
        for m in ALL {
            assert!(
                text.contains(&format!("# HELP {} {}\n", m.name, m.help)),
                "{} described:\n{text}",
                m.name
            );
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "summary",
            };
            assert!(
                text.contains(&format!("# TYPE {} {kind}\n", m.name)),
                "{} typed:\n{text}",
                m.name
            );
            let sampled = match m.kind {
                Kind::Histogram => format!("{}_count", m.name),
                Kind::Counter | Kind::Gauge => m.name.to_owned(),
            };
            let zero: Vec<&str> = series(&text, &sampled).collect();
            assert!(
                !zero.is_empty() && zero.iter().all(|l| reads_zero(l)),
                "{} reads 0: {zero:?}",
                m.name
            );
        }
        for r in result::ALL {
            let line = format!("{REQUESTS_TOTAL}{{cache=\"/products/{{id}}\",result=\"{r}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        drop((profile, queue));
        store.shutdown().await;
    }

    #[test]
    fn the_table_names_every_metric_once() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(names.iter().all(|n| n.starts_with("tower_cache_")));
        // The tables of the module docs list the same metrics.
        let mut listed: Vec<&str> = include_str!("metrics.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, names, "the docs' tables and ALL");
    }
}
