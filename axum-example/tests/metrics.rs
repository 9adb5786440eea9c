//! What the example app's `/metrics` shows: every tower-cache metric
//! described and at 0 from the start, and callers of a stampede counted
//! as what they were.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod support;

use std::time::Instant;

use support::App;
use tower_cache::metrics::{self as names, ALL, Kind};
use tower_cache_tests::{PATIENCE, RedisServer};

/// The cached routes of the app, as their layers name them.
const ROUTES: [&str; 6] = [
    "/products/{id}",
    "/users/{id}",
    "/me",
    "/products/{id}/price",
    "/products/{id}/views",
    "/reports/top",
];

/// The sample lines of the metric `name` (the name alone or with labels).
fn samples<'a>(text: &'a str, name: &'a str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .collect()
}

/// The value of the sample line `series` (name and labels, as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

fn requests(text: &str, route: &str, result: &str) -> f64 {
    let series = format!(
        "{}{{cache=\"{route}\",result=\"{result}\"}}",
        names::REQUESTS_TOTAL
    );
    value(text, &series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_described_and_reads_zero_before_any_request() {
    let redis = RedisServer::start();
    let app = App::start(&[("REDIS_URL", &redis.url())]).await;
    let text = app.text("/metrics").await;
    for m in ALL {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "summary",
        };
        assert!(
            text.contains(&format!("# HELP {} {}\n", m.name, m.help)),
            "# HELP {}:\n{text}",
            m.name
        );
        assert!(
            text.contains(&format!("# TYPE {} {kind}\n", m.name)),
            "# TYPE {} {kind}:\n{text}",
            m.name
        );
        // The invalidation channel is subscribed before the app serves.
        if m.name == names::INVALIDATION_SUBSCRIPTIONS_TOTAL {
            continue;
        }
        let sampled = match m.kind {
            Kind::Histogram => format!("{}_count", m.name),
            Kind::Counter | Kind::Gauge => m.name.to_owned(),
        };
        let lines = samples(&text, &sampled);
        assert!(
            !lines.is_empty() && lines.iter().all(|l| l.ends_with(" 0")),
            "{} reads 0 before any request: {lines:?}",
            m.name
        );
    }
    for route in ROUTES {
        for result in names::result::ALL {
            assert_eq!(requests(&text, route, result), 0.0, "{route} {result}");
        }
    }

    // And they move: a miss, then a hit from L1.
    for _ in 0..2 {
        app.get("/products/5").await;
    }
    let text = app.text("/metrics").await;
    assert_eq!(requests(&text, "/products/{id}", "miss"), 1.0);
    assert_eq!(requests(&text, "/products/{id}", "hit"), 1.0);
    assert_eq!(value(&text, names::L1_HITS_TOTAL), Some(1.0));
    assert_eq!(value(&text, names::L2_BREAKER_OPEN), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_of_a_cold_stampede_are_one_miss_and_the_rest_coalesced() {
    const CALLERS: usize = 200;
    // The database takes 3 s: the first request's load is in flight while
    // the others arrive.
    let app = App::start(&[("ORIGIN_DELAY_MS", "3000")]).await;
    let get = |app: &App| {
        let req = app.client.get(app.url("/products/42"));
        tokio::spawn(async move {
            let res = req.send().await.unwrap();
            let header = |name| {
                res.headers()
                    .get(name)
                    .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let answer = (res.status(), header("x-cache"), header("cache-status"));
            res.bytes().await.unwrap();
            answer
        })
    };
    let first = get(&app);
    // The first request is loading once the database has been asked.
    let deadline = Instant::now() + PATIENCE;
    while app.origin_queries("/products/{id}").await == 0 {
        assert!(Instant::now() < deadline, "the first request never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let rest: Vec<_> = (1..CALLERS).map(|_| get(&app)).collect();
    let mut answers = vec![first.await.unwrap()];
    for t in rest {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|(status, _, _)| status.is_success()));
    let collapsed = answers
        .iter()
        .filter(|(_, _, status)| status.contains("collapsed"))
        .count();
    let hits = answers.iter().filter(|(_, x, _)| x == "HIT").count();
    let text = app.text("/metrics").await;
    let route = "/products/{id}";
    assert_eq!(app.origin_queries(route).await, 1);
    assert_eq!(requests(&text, route, "miss"), 1.0, "only the first loaded");
    // Those that arrived while it loaded waited for it, and are counted
    // as such, as their `Cache-Status` says; any that came after it was
    // stored are hits.
    assert!(collapsed > 0, "no caller waited for the load: {answers:?}");
    assert_eq!(requests(&text, route, "coalesced"), collapsed as f64);
    assert_eq!(requests(&text, route, "hit"), hits as f64);
    assert_eq!(collapsed + hits, CALLERS - 1, "{answers:?}");
}
