//! The live dashboard at `/`: one HTML page (inline script, style and SVG
//! chart; nothing to build, nothing fetched from elsewhere) that polls
//! `/dashboard.json` every second. The app draws the rows of the routes
//! into the page as they stand when it serves it, so it shows them before
//! the script's first answer, and without a script.
//!
//! Per route, the counts come from the route's [`Profile`]; the store-wide
//! figures (L1 and L2 hits, the Redis circuit breaker, pending
//! invalidations, the write-behind queue) from the same metrics registry
//! `/metrics` renders, so the page and a Prometheus scrape agree. The hit
//! ratio history is kept here, so a reloaded page still shows the last
//! minutes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_cache::metrics as names;
use tower_cache::{Profile, ProfileStats};

/// The page; the app fills in the rows of the routes where it says
/// `<!-- rows -->`.
const PAGE: &str = include_str!("dashboard.html");

/// How far back the hit-ratio chart reaches.
const WINDOW: Duration = Duration::from_secs(300);
/// How often a sample of the hit ratios is taken (at most: samples are
/// taken when the page asks).
const INTERVAL: Duration = Duration::from_secs(1);
/// The strategy of each cached route, as the page names it.
const STRATEGIES: [(&str, &str); 6] = [
    ("/products/{id}", "cache-aside"),
    ("/users/{id}", "read-through"),
    ("/me", "cache-aside, per user"),
    ("/products/{id}/price", "write-through"),
    ("/products/{id}/views", "write-behind"),
    ("/reports/top", "refresh-ahead"),
];
/// Each sample is the hit ratio over this long before it: a route read a
/// few times a second draws a line, not a comb of 0 and 100 %.
const SPAN: Duration = Duration::from_secs(10);

/// The dashboard's routes, `/` and `/dashboard.json`, over the profiles of
/// the cached routes and the app's metrics registry.
pub fn routes(profiles: Vec<Profile>, metrics: PrometheusHandle) -> Router {
    let dashboard = Dashboard(Arc::new(Inner {
        profiles,
        metrics,
        started: Instant::now(),
        history: Mutex::new(History::default()),
    }));
    Router::new()
        .route("/", get(page))
        .route("/dashboard.json", get(snapshot))
        .with_state(dashboard)
}

#[derive(Clone)]
struct Dashboard(Arc<Inner>);

struct Inner {
    profiles: Vec<Profile>,
    metrics: PrometheusHandle,
    started: Instant,
    history: Mutex<History>,
}

/// The hit ratios of the last [`WINDOW`], one sample per interval.
#[derive(Default)]
struct History {
    last_at: Option<Instant>,
    samples: VecDeque<Sample>,
    /// The totals of the newest sample that left the window.
    before: Vec<(u64, u64)>,
}

/// The hit ratio of each route over the [`SPAN`] before `t` (`None`: no
/// request then).
#[derive(Clone, Serialize)]
struct Sample {
    /// Seconds since the app started.
    t: f64,
    ratios: Vec<Option<f64>>,
    /// Per route, reads answered from the cache and all reads so far.
    #[serde(skip)]
    totals: Vec<(u64, u64)>,
}

/// What one route shows.
#[derive(Serialize)]
struct RouteView {
    route: String,
    strategy: &'static str,
    hit: u64,
    stale: u64,
    miss: u64,
    coalesced: u64,
    bypass: u64,
    requests: u64,
    /// `(hit + stale) / requests`; `None` before the first request.
    hit_ratio: Option<f64>,
}

/// The store-wide figures; `None` where the app has no such part (no
/// Redis, say).
#[derive(Serialize)]
struct StoreView {
    l1_hits: Option<f64>,
    l2_hits: Option<f64>,
    l2_breaker_open: Option<f64>,
    l2_errors: Option<f64>,
    invalidations_pending: Option<f64>,
    write_behind_queue_depth: Option<f64>,
    write_behind_flushes: Option<f64>,
}

#[derive(Serialize)]
struct Snapshot {
    uptime_s: f64,
    routes: Vec<RouteView>,
    store: StoreView,
    window_s: u64,
    history: Vec<Sample>,
}

/// Reads answered from the cache, and all reads, of `s`.
fn served(s: &ProfileStats) -> (u64, u64) {
    let cached = s.hits + s.stale;
    (cached, cached + s.misses + s.coalesced + s.bypasses)
}

/// `cached / all`, or `None` when there was no request.
fn ratio((cached, all): (u64, u64)) -> Option<f64> {
    (all > 0).then(|| cached as f64 / all as f64)
}

impl History {
    /// Takes a sample of `stats` at `now` (seconds `t` since the start)
    /// unless the last one is younger than [`INTERVAL`], and forgets those
    /// older than [`WINDOW`].
    fn sample(&mut self, now: Instant, t: f64, stats: &[ProfileStats]) {
        if self.last_at.is_some_and(|at| now - at < INTERVAL) {
            return;
        }
        let totals: Vec<(u64, u64)> = stats.iter().map(served).collect();
        // The totals a span ago: of the newest sample at least that old.
        let base = self
            .samples
            .iter()
            .rev()
            .find(|s| s.t <= t - SPAN.as_secs_f64())
            .map_or(&self.before, |s| &s.totals);
        let ratios = totals
            .iter()
            .enumerate()
            .map(|(i, &(cached, all))| {
                let (was_cached, was_all) = base.get(i).copied().unwrap_or((0, 0));
                ratio((
                    cached.saturating_sub(was_cached),
                    all.saturating_sub(was_all),
                ))
            })
            .collect();
        self.samples.push_back(Sample { t, ratios, totals });
        let oldest = t - WINDOW.as_secs_f64();
        while self.samples.front().is_some_and(|s| s.t < oldest) {
            if let Some(gone) = self.samples.pop_front() {
                self.before = gone.totals;
            }
        }
        self.last_at = Some(now);
    }
}

/// The page, with the rows of the routes as they stand now, so that it
/// shows them before its script first asks for more.
async fn page(State(d): State<Dashboard>) -> Html<String> {
    let rows: String = d.routes().iter().map(RouteView::row).collect();
    Html(PAGE.replacen("<!-- rows -->", &rows, 1))
}

/// The page's name of the strategy of `route`.
fn strategy(route: &str) -> &'static str {
    STRATEGIES
        .iter()
        .find(|(r, _)| *r == route)
        .map_or("", |(_, s)| s)
}

/// A hit ratio as the page writes it.
fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".to_owned(), |r| format!("{:.1} %", 100.0 * r))
}

/// `text` safe inside an HTML element or a quoted attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl RouteView {
    fn new(profile: &Profile, s: &ProfileStats) -> Self {
        RouteView {
            route: profile.name().to_owned(),
            strategy: strategy(profile.name()),
            hit: s.hits,
            stale: s.stale,
            miss: s.misses,
            coalesced: s.coalesced,
            bypass: s.bypasses,
            requests: served(s).1,
            hit_ratio: ratio(served(s)),
        }
    }

    /// The table row the page's script keeps current (the same cells).
    fn row(&self) -> String {
        let route = escape(&self.route);
        let mut row = format!(
            "<tr data-route=\"{route}\"><td><code>{route}</code></td><td class=\"strategy\">{}</td>",
            escape(self.strategy)
        );
        let counts = [
            ("hit", self.hit),
            ("stale", self.stale),
            ("miss", self.miss),
            ("coalesced", self.coalesced),
            ("bypass", self.bypass),
            ("requests", self.requests),
        ];
        for (field, n) in counts {
            row.push_str(&format!("<td data-field=\"{field}\">{n}</td>"));
        }
        row.push_str(&format!(
            "<td data-field=\"hit_ratio\" class=\"ratio\">{}</td></tr>",
            percent(self.hit_ratio)
        ));
        row
    }
}

impl Dashboard {
    /// What each route shows now.
    fn routes(&self) -> Vec<RouteView> {
        self.0
            .profiles
            .iter()
            .map(|p| RouteView::new(p, &p.stats()))
            .collect()
    }
}

async fn snapshot(State(d): State<Dashboard>) -> Response {
    let stats: Vec<ProfileStats> = d.0.profiles.iter().map(Profile::stats).collect();
    let now = Instant::now();
    let uptime_s = (now - d.0.started).as_secs_f64();
    let history = {
        let mut history =
            d.0.history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        history.sample(now, uptime_s, &stats);
        history.samples.iter().cloned().collect()
    };
    let routes =
        d.0.profiles
            .iter()
            .zip(&stats)
            .map(|(p, s)| RouteView::new(p, s))
            .collect();
    let text = d.0.metrics.render();
    let value = |name| metric(&text, name);
    let store = StoreView {
        l1_hits: value(names::L1_HITS_TOTAL),
        l2_hits: value(names::L2_HITS_TOTAL),
        l2_breaker_open: value(names::L2_BREAKER_OPEN),
        l2_errors: value(names::L2_ERRORS_TOTAL),
        invalidations_pending: value(names::INVALIDATIONS_PENDING),
        write_behind_queue_depth: value(names::WRITE_BEHIND_QUEUE_DEPTH),
        write_behind_flushes: value(names::WRITE_BEHIND_BATCHES_TOTAL),
    };
    let body = Snapshot {
        uptime_s,
        routes,
        store,
        window_s: WINDOW.as_secs(),
        history,
    };
    let mut res = axum::Json(body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The sum of every series of the metric `name` in the Prometheus text
/// `text`, or `None` when it has none.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.as_bytes().first()? {
                b' ' => rest,
                b'{' => &rest[rest.rfind('}')? + 1..],
                _ => return None,
            };
            value.trim().parse::<f64>().ok()
        })
        .reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_the_series_of_one_name_only() {
        let text = "# TYPE tower_cache_l1_hits_total counter\n\
                    tower_cache_l1_hits_total 3\n\
                    tower_cache_l1_hits_totally 100\n\
                    q{cache=\"a\"} 1\n\
                    q{cache=\"b } \"} 2.5\n";
        assert_eq!(metric(text, "tower_cache_l1_hits_total"), Some(3.0));
        assert_eq!(metric(text, "q"), Some(3.5));
        assert_eq!(metric(text, "absent"), None);
    }

    #[test]
    fn a_row_is_drawn_with_its_counts_and_ratio_escaped() {
        let profile = Profile::new("/a<b>/{id}", tower_cache::Policy::default());
        let stats = ProfileStats {
            hits: 2,
            misses: 1,
            ..ProfileStats::default()
        };
        let row = RouteView::new(&profile, &stats).row();
        assert!(
            row.starts_with("<tr data-route=\"/a&lt;b&gt;/{id}\">"),
            "{row}"
        );
        assert!(row.contains("<td data-field=\"hit\">2</td>"), "{row}");
        assert!(row.contains(">66.7 %</td></tr>"), "{row}");
        let cold = RouteView::new(&profile, &ProfileStats::default()).row();
        assert!(cold.contains(">–</td></tr>"), "{cold}");
    }

    #[test]
    fn a_sample_is_the_ratio_over_the_span_before_it_bypasses_included() {
        let mut h = History::default();
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let stats = |hits, misses, bypasses| ProfileStats {
            hits,
            misses,
            bypasses,
            ..ProfileStats::default()
        };
        h.sample(at(0), 0.0, &[stats(0, 0, 0)]);
        h.sample(at(1), 1.0, &[stats(3, 1, 0)]);
        // Too soon for another sample.
        h.sample(at(1), 1.5, &[stats(3, 1, 2)]);
        h.sample(at(2), 2.0, &[stats(4, 1, 3)]);
        // Ten seconds on, the span starts at the sample of second 2.
        h.sample(at(12), 12.0, &[stats(6, 1, 3)]);
        h.sample(at(30), 30.0, &[stats(6, 1, 3)]);
        let ratios: Vec<Option<f64>> = h.samples.iter().map(|s| s.ratios[0]).collect();
        assert_eq!(ratios, [None, Some(0.75), Some(0.5), Some(1.0), None]);
        h.sample(at(400), 400.0, &[stats(7, 2, 3)]);
        assert_eq!(h.samples.len(), 1, "older samples are forgotten");
        assert_eq!(h.samples[0].ratios[0], Some(0.5));
    }
}
