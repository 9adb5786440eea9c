//! The shared-cache mode over real TCP, through the reverse proxy example:
//! freshness from the origin's headers (RFC 9111 §4.2, RFC 9213, RFC
//! 5861), what a shared cache stores (§3, §3.5), request directives
//! (§5.2.1) and revalidation (§4.3). An entry is made stale without any
//! wait by an `Age` header larger than its `max-age`.

#[allow(dead_code, reason = "each test file uses part of the harness")]
mod support;

use std::time::{Duration, SystemTime};

use http::Method;

use support::PATIENCE;
use support::client::{get, send};
use support::origin::{Answer, Origin, Received};
use support::proxy::Proxy;

async fn setup() -> (Origin, Proxy) {
    let origin = Origin::start().await;
    let proxy = Proxy::start(origin.addr()).await;
    (origin, proxy)
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Waits until the origin got `n` GETs of `path`; fails past [`PATIENCE`].
async fn until_calls(origin: &Origin, path: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while origin.calls(&Method::GET, path) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the origin got {} GETs of {path}, not {n}",
            origin.calls(&Method::GET, path)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn last(origin: &Origin, path: &str) -> Received {
    origin
        .received()
        .into_iter()
        .rev()
        .find(|r| r.path == path)
        .expect("a request of the path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_against_date_sets_freshness() {
    let (origin, proxy) = setup().await;
    let now = SystemTime::now();
    origin.answer(
        "/fresh",
        Answer::ok("a")
            .header("date", &http_date(now))
            .header("expires", &http_date(now + Duration::from_secs(600))),
    );
    origin.answer(
        "/expired",
        Answer::ok("b")
            .header("date", &http_date(now))
            .header("expires", &http_date(now - Duration::from_secs(600))),
    );
    origin.answer("/invalid", Answer::ok("c").header("expires", "0"));
    get(&proxy.url("/fresh")).await;
    assert_eq!(get(&proxy.url("/fresh")).await.x_cache(), "HIT");
    for path in ["/expired", "/invalid"] {
        get(&proxy.url(path)).await;
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "MISS", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_age_counts_against_max_age_and_in_the_age_sent() {
    let (origin, proxy) = setup().await;
    origin.answer(
        "/young",
        Answer::ok("a")
            .header("cache-control", "max-age=600")
            .header("age", "100"),
    );
    origin.answer(
        "/old",
        Answer::ok("b")
            .header("cache-control", "max-age=600")
            .header("age", "700"),
    );
    get(&proxy.url("/young")).await;
    let hit = get(&proxy.url("/young")).await;
    assert_eq!(hit.x_cache(), "HIT");
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((100..200).contains(&age), "Age {age}");
    get(&proxy.url("/old")).await;
    assert_eq!(get(&proxy.url("/old")).await.x_cache(), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_gives_heuristic_freshness_to_the_statuses_that_allow_it() {
    let (origin, proxy) = setup().await;
    let modified = http_date(SystemTime::now() - Duration::from_secs(10 * 86_400));
    origin.answer("/page", Answer::ok("a").header("last-modified", &modified));
    origin.answer(
        "/moved",
        Answer::status(302)
            .header("location", "/page")
            .header("last-modified", &modified),
    );
    get(&proxy.url("/page")).await;
    assert_eq!(get(&proxy.url("/page")).await.x_cache(), "HIT");
    get(&proxy.url("/moved")).await;
    get(&proxy.url("/moved")).await;
    assert_eq!(
        origin.calls(&Method::GET, "/moved"),
        2,
        "302 gets no heuristic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_with_etag_is_revalidated_and_304_refreshes_headers() {
    let (origin, proxy) = setup().await;
    origin.route("/a", |req| {
        if req.header("if-none-match") == Some("\"v1\"") {
            Answer::status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=600")
                .header("x-version", "2")
        } else {
            Answer::ok("the body")
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=60")
                .header("age", "120")
                .header("x-version", "1")
        }
    });
    assert_eq!(get(&proxy.url("/a")).await.header("x-version"), Some("1"));
    let revalidated = get(&proxy.url("/a")).await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "the body");
    assert_eq!(revalidated.header("x-version"), Some("2"));
    assert_eq!(last(&origin, "/a").header("if-none-match"), Some("\"v1\""));
    let hit = get(&proxy.url("/a")).await;
    assert_eq!((hit.x_cache(), hit.header("x-version")), ("HIT", Some("2")));
    assert_eq!(origin.calls(&Method::GET, "/a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_with_only_last_modified_is_revalidated_with_if_modified_since() {
    let (origin, proxy) = setup().await;
    let modified = http_date(SystemTime::now() - Duration::from_secs(3600));
    let validator = modified.clone();
    origin.route("/a", move |req| {
        if req.header("if-modified-since") == Some(validator.as_str()) {
            Answer::status(304).header("cache-control", "max-age=600")
        } else {
            Answer::ok("full")
                .header("last-modified", &validator)
                .header("cache-control", "max-age=60")
                .header("age", "120")
        }
    });
    get(&proxy.url("/a")).await;
    assert_eq!(get(&proxy.url("/a")).await.text(), "full");
    let sent = last(&origin, "/a");
    assert_eq!(sent.header("if-modified-since"), Some(modified.as_str()));
    assert_eq!(sent.header("if-none-match"), None);
    assert_eq!(get(&proxy.url("/a")).await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cache_response_is_stored_and_revalidated_on_every_use() {
    let (origin, proxy) = setup().await;
    origin.route("/a", |req| {
        if req.header("if-none-match").is_some() {
            Answer::status(304).header("cache-control", "no-cache")
        } else {
            Answer::ok("body")
                .header("cache-control", "no-cache")
                .header("etag", "\"e\"")
        }
    });
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/a")).await.text(), "body");
    }
    assert_eq!(origin.calls(&Method::GET, "/a"), 3);
    assert_eq!(last(&origin, "/a").header("if-none-match"), Some("\"e\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_and_proxy_revalidate_are_never_served_stale() {
    let (origin, proxy) = setup().await;
    for (path, directive) in [
        ("/must", "must-revalidate"),
        ("/proxy", "proxy-revalidate"),
        ("/s-maxage", "s-maxage=60"),
    ] {
        let cc = format!("max-age=60, {directive}, stale-if-error=600");
        origin.answer(
            path,
            Answer::ok("a")
                .header("cache-control", &cc)
                .header("age", "120"),
        );
        get(&proxy.url(path)).await;
        origin.answer(path, Answer::status(503));
        let reply = send(
            Method::GET,
            &proxy.url(path),
            &[("cache-control", "max-stale")],
        )
        .await;
        assert_eq!(reply.status, 503, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_stale_if_error_serves_stale_when_it_fails() {
    let (origin, proxy) = setup().await;
    origin.answer(
        "/a",
        Answer::ok("kept")
            .header("cache-control", "max-age=60, stale-if-error=600")
            .header("age", "120"),
    );
    get(&proxy.url("/a")).await;
    origin.answer("/a", Answer::status(503));
    let stale = get(&proxy.url("/a")).await;
    assert_eq!((stale.status.as_u16(), stale.x_cache()), (200, "STALE"));
    assert_eq!(stale.text(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_stale_while_revalidate_answers_at_once_and_revalidates_in_the_background() {
    let (origin, proxy) = setup().await;
    origin.route("/a", |req| {
        if req.header("if-none-match").is_some() {
            Answer::status(304)
                .header("cache-control", "max-age=600")
                .header("x-revalidated", "yes")
        } else {
            Answer::ok("old")
                .header("etag", "\"e\"")
                .header("cache-control", "max-age=60, stale-while-revalidate=600")
                .header("age", "120")
        }
    });
    get(&proxy.url("/a")).await;
    let stale = get(&proxy.url("/a")).await;
    assert_eq!((stale.text().as_str(), stale.x_cache()), ("old", "STALE"));
    until_calls(&origin, "/a", 2).await;
    assert_eq!(last(&origin, "/a").header("if-none-match"), Some("\"e\""));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let hit = get(&proxy.url("/a")).await;
        if hit.x_cache() == "HIT" {
            assert_eq!(hit.header("x-revalidated"), Some("yes"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_age_and_min_fresh_refuse_and_revalidate_entries() {
    let (origin, proxy) = setup().await;
    origin.route("/a", |req| {
        if req.header("if-none-match").is_some() {
            Answer::status(304)
                .header("cache-control", "max-age=600")
                .header("age", "100")
        } else {
            Answer::ok("a")
                .header("etag", "\"e\"")
                .header("cache-control", "max-age=600")
                .header("age", "100")
        }
    });
    get(&proxy.url("/a")).await;
    let ok = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "max-age=300")],
    )
    .await;
    assert_eq!(ok.x_cache(), "HIT");
    send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "max-age=50")],
    )
    .await;
    assert_eq!(
        origin.calls(&Method::GET, "/a"),
        2,
        "max-age=50 refused a 100 s old entry"
    );
    assert_eq!(last(&origin, "/a").header("if-none-match"), Some("\"e\""));
    send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "min-fresh=550")],
    )
    .await;
    assert_eq!(
        origin.calls(&Method::GET, "/a"),
        3,
        "min-fresh=550 refused 500 s left"
    );
    let ok = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "min-fresh=100")],
    )
    .await;
    assert_eq!(ok.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_stale_accepts_a_stale_entry() {
    let (origin, proxy) = setup().await;
    origin.answer(
        "/a",
        Answer::ok("a")
            .header("cache-control", "max-age=60")
            .header("etag", "\"e\"")
            .header("age", "90"),
    );
    get(&proxy.url("/a")).await;
    let stale = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "max-stale=600")],
    )
    .await;
    assert_eq!(stale.x_cache(), "STALE");
    let too_stale = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "max-stale=5")],
    )
    .await;
    assert_ne!(too_stale.x_cache(), "STALE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_no_cache_revalidates_and_no_store_bypasses() {
    let (origin, proxy) = setup().await;
    origin.answer(
        "/a",
        Answer::ok("a")
            .header("cache-control", "max-age=600")
            .header("etag", "\"e\""),
    );
    get(&proxy.url("/a")).await;
    let reloaded = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(reloaded.x_cache(), "MISS");
    assert_eq!(last(&origin, "/a").header("if-none-match"), Some("\"e\""));
    let bypassed = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(bypassed.x_cache(), "BYPASS");
    assert_eq!(origin.calls(&Method::GET, "/a"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_answers_from_the_cache_or_with_504() {
    let (origin, proxy) = setup().await;
    origin.answer("/a", Answer::ok("a").header("cache-control", "max-age=600"));
    let only = [("cache-control", "only-if-cached")];
    assert_eq!(send(Method::GET, &proxy.url("/a"), &only).await.status, 504);
    assert_eq!(origin.calls(&Method::GET, "/a"), 0);
    get(&proxy.url("/a")).await;
    let hit = send(Method::GET, &proxy.url("/a"), &only).await;
    assert_eq!((hit.status.as_u16(), hit.x_cache()), (200, "HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_conditionals_are_answered_from_a_fresh_entry() {
    let (origin, proxy) = setup().await;
    let modified = http_date(SystemTime::now() - Duration::from_secs(3600));
    origin.answer(
        "/a",
        Answer::ok("a")
            .header("cache-control", "max-age=600")
            .header("etag", "\"e\"")
            .header("last-modified", &modified),
    );
    get(&proxy.url("/a")).await;
    let inm = send(Method::GET, &proxy.url("/a"), &[("if-none-match", "\"e\"")]).await;
    assert_eq!((inm.status.as_u16(), inm.x_cache()), (304, "HIT"));
    let now = http_date(SystemTime::now());
    let ims = send(
        Method::GET,
        &proxy.url("/a"),
        &[("if-modified-since", &now)],
    )
    .await;
    assert_eq!(ims.status, 304);
    assert_eq!(origin.calls(&Method::GET, "/a"), 1);
    // The client asks for revalidation: the origin is asked, the client
    // still gets its 304.
    let both = send(
        Method::GET,
        &proxy.url("/a"),
        &[("if-none-match", "\"e\""), ("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(both.status, 304);
    assert_eq!(origin.calls(&Method::GET, "/a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_answered_only_with_responses_marked_shareable() {
    let (origin, proxy) = setup().await;
    origin.answer(
        "/plain",
        Answer::ok("a").header("cache-control", "max-age=600"),
    );
    origin.answer(
        "/public",
        Answer::ok("b").header("cache-control", "public, max-age=600"),
    );
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    send(Method::GET, &proxy.url("/plain"), &alice).await;
    send(Method::GET, &proxy.url("/plain"), &alice).await;
    assert_eq!(origin.calls(&Method::GET, "/plain"), 2);
    // What requests without credentials stored is not for them.
    get(&proxy.url("/plain")).await;
    assert_eq!(
        send(Method::GET, &proxy.url("/plain"), &bob)
            .await
            .x_cache(),
        "MISS"
    );
    send(Method::GET, &proxy.url("/public"), &alice).await;
    assert_eq!(
        send(Method::GET, &proxy.url("/public"), &bob)
            .await
            .x_cache(),
        "HIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_takes_the_place_of_cache_control() {
    let (origin, proxy) = setup().await;
    origin.answer(
        "/a",
        Answer::ok("a")
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "max-age=600"),
    );
    origin.answer(
        "/b",
        Answer::ok("b")
            .header("cache-control", "max-age=600")
            .header("cdn-cache-control", "no-store"),
    );
    get(&proxy.url("/a")).await;
    assert_eq!(get(&proxy.url("/a")).await.x_cache(), "HIT");
    get(&proxy.url("/b")).await;
    assert_eq!(get(&proxy.url("/b")).await.x_cache(), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_field_of_the_users_comes_before_cdn_cache_control() {
    let origin = Origin::start().await;
    let field = http::HeaderName::from_static("edge-cache-control");
    let proxy = Proxy::start_with(origin.addr(), |layer| layer.targeted_cache_control(field)).await;
    origin.answer(
        "/a",
        Answer::ok("a")
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "no-store")
            .header("edge-cache-control", "max-age=600"),
    );
    origin.answer(
        "/b",
        Answer::ok("b")
            .header("cdn-cache-control", "max-age=600")
            .header("edge-cache-control", "no-store"),
    );
    // Not a dictionary: ignored, CDN-Cache-Control applies.
    origin.answer(
        "/c",
        Answer::ok("c")
            .header("cdn-cache-control", "max-age=600")
            .header("edge-cache-control", "Max-Age=="),
    );
    for (path, second) in [("/a", "HIT"), ("/b", "MISS"), ("/c", "HIT")] {
        get(&proxy.url(path)).await;
        assert_eq!(get(&proxy.url(path)).await.x_cache(), second, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_picks_the_variant_and_vary_star_is_not_stored() {
    let (origin, proxy) = setup().await;
    origin.route("/lang", |req| {
        let lang = req.header("accept-language").unwrap_or("none").to_owned();
        Answer::ok(&lang)
            .header("cache-control", "max-age=600")
            .header("vary", "accept-language")
    });
    origin.answer(
        "/star",
        Answer::ok("s")
            .header("cache-control", "max-age=600")
            .header("vary", "*"),
    );
    for _ in 0..2 {
        for lang in ["fr", "en"] {
            let r = send(
                Method::GET,
                &proxy.url("/lang"),
                &[("accept-language", lang)],
            )
            .await;
            assert_eq!(r.text(), lang);
        }
    }
    assert_eq!(origin.calls(&Method::GET, "/lang"), 2);
    get(&proxy.url("/star")).await;
    get(&proxy.url("/star")).await;
    assert_eq!(origin.calls(&Method::GET, "/star"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_status_says_how_every_answer_was_made() {
    let (origin, proxy) = setup().await;
    origin.route("/a", |req| {
        if req.method == Method::POST {
            Answer::status(204)
        } else if req.header("if-none-match").is_some() {
            Answer::status(304).header("cache-control", "max-age=600")
        } else {
            Answer::ok("a")
                .header("etag", "\"e\"")
                .header("cache-control", "max-age=60")
                .header("age", "120")
        }
    });
    let status =
        |reply: &support::client::Reply| reply.header("cache-status").unwrap_or("").to_owned();
    // A miss streams to its client, and is stored before its body ends.
    let miss = status(&get(&proxy.url("/a")).await);
    assert_eq!(miss, "tower-cache; fwd=uri-miss; fwd-status=200; stored");
    let revalidated = status(&get(&proxy.url("/a")).await);
    assert!(
        revalidated.starts_with("tower-cache; fwd=stale; fwd-status=304; stored; ttl="),
        "{revalidated}"
    );
    let hit = status(&get(&proxy.url("/a")).await);
    assert!(hit.starts_with("tower-cache; hit; ttl="), "{hit}");
    let bypass = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(status(&bypass), "tower-cache; fwd=bypass");
    let post = send(Method::POST, &proxy.url("/a"), &[]).await;
    assert_eq!(status(&post), "tower-cache; fwd=method");
    let reload = send(
        Method::GET,
        &proxy.url("/a"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert!(status(&reload).starts_with("tower-cache; fwd=request; fwd-status=200; stored"));
    assert_eq!(
        get(&proxy.url("/a")).await.x_cache(),
        "MISS",
        "X-Cache stays beside it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_understand_stores_a_known_status_despite_no_store() {
    let (origin, proxy) = setup().await;
    origin.answer(
        "/a",
        Answer::ok("a").header("cache-control", "must-understand, no-store, max-age=600"),
    );
    origin.answer(
        "/b",
        Answer::status(299).header("cache-control", "must-understand, no-store, max-age=600"),
    );
    get(&proxy.url("/a")).await;
    assert_eq!(get(&proxy.url("/a")).await.x_cache(), "HIT");
    get(&proxy.url("/b")).await;
    get(&proxy.url("/b")).await;
    assert_eq!(
        origin.calls(&Method::GET, "/b"),
        2,
        "an unknown status is not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_is_capped() {
    let (origin, proxy) = setup().await;
    // A tenth of 100 days would be 10 days; the cap (1 hour) is passed by
    // the response's own age.
    let modified = http_date(SystemTime::now() - Duration::from_secs(100 * 86_400));
    origin.answer(
        "/old",
        Answer::ok("a")
            .header("last-modified", &modified)
            .header("age", "3700"),
    );
    origin.answer(
        "/young",
        Answer::ok("b")
            .header("last-modified", &modified)
            .header("age", "3500"),
    );
    get(&proxy.url("/old")).await;
    assert_ne!(get(&proxy.url("/old")).await.x_cache(), "HIT");
    get(&proxy.url("/young")).await;
    assert_eq!(get(&proxy.url("/young")).await.x_cache(), "HIT");
}
