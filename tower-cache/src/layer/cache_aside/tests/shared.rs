//! The shared-cache mode and revalidation, on tokio's paused clock: an
//! origin scripted per test, whose requests are recorded.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower::service_fn;
use tower_layer::Layer;

use super::{Body, body, send};
use crate::{Cache, CacheAsideLayer, Policy, store::MemoryStore};

/// What the scripted origin answers: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, &'static str);

/// The script: an answer for a request's headers.
type Script = Box<dyn Fn(&HeaderMap) -> Answer + Send>;

/// An origin that answers with the script's current answer and records
/// the headers of every request it gets.
#[derive(Clone)]
struct Scripted {
    answer: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Scripted {
    fn new(answer: impl Fn(&HeaderMap) -> Answer + Send + 'static) -> Self {
        Scripted {
            answer: Arc::new(Mutex::new(Box::new(answer))),
            seen: Arc::default(),
        }
    }

    fn answer(&self, answer: impl Fn(&HeaderMap) -> Answer + Send + 'static) {
        *self.answer.lock().unwrap() = Box::new(answer);
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> HeaderMap {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        let origin = self.clone();
        service_fn(move |req: Request<Full<Bytes>>| {
            let origin = origin.clone();
            async move {
                origin.seen.lock().unwrap().push(req.headers().clone());
                let (status, headers, text) = (origin.answer.lock().unwrap())(req.headers());
                let mut res = Response::builder().status(status);
                for (n, v) in headers {
                    res = res.header(n, v);
                }
                Ok::<_, Infallible>(res.body(body(text)).unwrap())
            }
        })
    }
}

fn shared(policy: Policy) -> CacheAsideLayer<MemoryStore> {
    CacheAsideLayer::new(Cache::new(MemoryStore::default()), "shared", policy).shared_cache()
}

fn h(v: &str) -> String {
    v.to_owned()
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn the_origins_max_age_rules_not_the_policy_ttl() {
    let origin = Scripted::new(|_| (200, vec![("cache-control", h("max-age=10"))], "a"));
    let svc = shared(Policy::ttl(Duration::from_secs(3600))).layer(origin.service());
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "MISS"
    );
    advance(9).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "HIT"
    );
    advance(2).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "MISS"
    );
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn incoming_age_shortens_freshness_and_counts_in_age() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![("cache-control", h("max-age=10")), ("age", h("8"))],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    advance(1).await;
    let hit = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.headers["age"], "9");
    advance(2).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "MISS"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_with_etag_is_revalidated_and_304_refreshes_headers() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![
                ("cache-control", h("max-age=5")),
                ("etag", h("\"v1\"")),
                ("x-version", h("1")),
            ],
            "body one",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    origin.answer(|req| {
        assert_eq!(req["if-none-match"], "\"v1\"");
        (
            304,
            vec![
                ("cache-control", h("max-age=5")),
                ("etag", h("\"v1\"")),
                ("x-version", h("2")),
            ],
            "",
        )
    });
    advance(6).await;
    let revalidated = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.text(), "body one");
    assert_eq!(revalidated.headers["x-version"], "2");
    assert_eq!(origin.calls(), 2);
    // Fresh again for the 304's max-age.
    advance(4).await;
    let hit = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.headers["x-version"], "2");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn last_modified_is_revalidated_with_if_modified_since() {
    let modified = "Tue, 01 Dec 2026 10:00:00 GMT";
    let origin = Scripted::new(move |req| {
        if req.get("if-modified-since").is_some_and(|v| v == modified) {
            (304, vec![("cache-control", h("max-age=5"))], "")
        } else {
            (
                200,
                vec![
                    ("cache-control", h("max-age=5")),
                    ("last-modified", h(modified)),
                ],
                "full",
            )
        }
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    advance(6).await;
    let again = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(again.text(), "full");
    assert!(origin.last().contains_key("if-modified-since"));
    assert!(
        !origin.last().contains_key("if-none-match"),
        "no origin ETag"
    );
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_is_never_served_stale_even_with_stale_if_error() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![("cache-control", h("max-age=1, must-revalidate"))],
            "a",
        )
    });
    let svc =
        shared(Policy::default().stale_if_error(Duration::from_secs(60))).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    origin.answer(|_| (503, vec![], "down"));
    advance(2).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn the_origins_stale_if_error_serves_stale_when_it_fails() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![("cache-control", h("max-age=1, stale-if-error=60"))],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    origin.answer(|_| (503, vec![], "down"));
    advance(30).await;
    let stale = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!((stale.status, stale.x_cache()), (StatusCode::OK, "STALE"));
    advance(40).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn the_origins_stale_while_revalidate_answers_at_once_and_refreshes() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![("cache-control", h("max-age=1, stale-while-revalidate=30"))],
            "one",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    origin.answer(|_| {
        (
            200,
            vec![("cache-control", h("max-age=1, stale-while-revalidate=30"))],
            "two",
        )
    });
    advance(5).await;
    let stale = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!((stale.text().as_str(), stale.x_cache()), ("one", "STALE"));
    for _ in 0..100 {
        if origin.calls() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let fresh = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!((fresh.text().as_str(), fresh.x_cache()), ("two", "HIT"));
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_response_is_stored_and_revalidated_on_every_use() {
    let origin = Scripted::new(|req| {
        if req.contains_key("if-none-match") {
            (304, vec![("cache-control", h("no-cache"))], "")
        } else {
            (
                200,
                vec![("cache-control", h("no-cache")), ("etag", h("\"e\""))],
                "body",
            )
        }
    });
    let svc = shared(Policy::default()).layer(origin.service());
    for _ in 0..3 {
        assert_eq!(
            send(&svc, Method::GET, "http://h/a", &[]).await.text(),
            "body"
        );
    }
    assert_eq!(origin.calls(), 3, "every use goes to the origin");
    assert_eq!(origin.last()["if-none-match"], "\"e\"");
}

#[tokio::test(start_paused = true)]
async fn no_freshness_and_no_validator_is_not_stored() {
    let origin = Scripted::new(|_| (200, vec![], "a"));
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_is_a_tenth_of_the_time_since_last_modified() {
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(crate::now_ms());
    let modified = httpdate::fmt_http_date(now - Duration::from_secs(1000));
    let date = httpdate::fmt_http_date(now);
    let origin = Scripted::new(move |_| {
        (
            200,
            vec![("last-modified", modified.clone()), ("date", date.clone())],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    advance(90).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "HIT"
    );
    advance(20).await;
    assert_ne!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "HIT"
    );
}

#[tokio::test(start_paused = true)]
async fn request_max_age_min_fresh_and_max_stale() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![("cache-control", h("max-age=10")), ("etag", h("\"e\""))],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    advance(5).await;
    let fresh_enough = [("cache-control", "max-age=6")];
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &fresh_enough)
            .await
            .x_cache(),
        "HIT"
    );
    let too_old = [("cache-control", "max-age=4")];
    send(&svc, Method::GET, "http://h/a", &too_old).await;
    assert_eq!(origin.calls(), 2, "max-age=4 refused a 5 s old entry");
    assert_eq!(
        origin.last()["if-none-match"],
        "\"e\"",
        "and revalidated it"
    );
    let min_fresh = [("cache-control", "min-fresh=20")];
    send(&svc, Method::GET, "http://h/a", &min_fresh).await;
    assert_eq!(origin.calls(), 3, "min-fresh=20 refused a 10 s lifetime");
    advance(15).await;
    let stale_ok = [("cache-control", "max-stale=10")];
    let stale = send(&svc, Method::GET, "http://h/a", &stale_ok).await;
    assert_eq!(stale.x_cache(), "STALE");
}

#[tokio::test(start_paused = true)]
async fn authorization_is_answered_only_with_what_the_origin_marked_shareable() {
    let origin = Scripted::new(|_| (200, vec![("cache-control", h("max-age=60"))], "a"));
    let svc = shared(Policy::default()).layer(origin.service());
    let auth = [("authorization", "Bearer x")];
    send(&svc, Method::GET, "http://h/a", &auth).await;
    send(&svc, Method::GET, "http://h/a", &auth).await;
    assert_eq!(origin.calls(), 2, "not stored without public");
    // An entry stored for requests without credentials is not theirs.
    send(&svc, Method::GET, "http://h/a", &[]).await;
    send(&svc, Method::GET, "http://h/a", &auth).await;
    assert_eq!(origin.calls(), 4);
    origin.answer(|_| (200, vec![("cache-control", h("public, max-age=60"))], "p"));
    send(&svc, Method::GET, "http://h/p", &auth).await;
    let hit = send(
        &svc,
        Method::GET,
        "http://h/p",
        &[("authorization", "Bearer y")],
    )
    .await;
    assert_eq!(hit.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn cdn_cache_control_takes_the_place_of_cache_control() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![
                ("cache-control", h("no-store")),
                ("cdn-cache-control", h("max-age=60")),
            ],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "HIT"
    );
    // A targeted field of the user's comes first.
    let own = http::HeaderName::from_static("edge-cache-control");
    let svc = shared(Policy::default())
        .targeted_cache_control(own)
        .layer(origin.service());
    origin.answer(|_| {
        (
            200,
            vec![
                ("edge-cache-control", h("no-store")),
                ("cdn-cache-control", h("max-age=60")),
            ],
            "a",
        )
    });
    send(&svc, Method::GET, "http://h/b", &[]).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/b", &[]).await.x_cache(),
        "MISS"
    );
}

#[tokio::test(start_paused = true)]
async fn expires_is_read_against_date() {
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(crate::now_ms());
    // The origin's clock is an hour ahead: only Expires − Date counts.
    let ahead = now + Duration::from_secs(3600);
    let date = httpdate::fmt_http_date(ahead);
    let expires = httpdate::fmt_http_date(ahead + Duration::from_secs(30));
    let origin = Scripted::new(move |_| {
        (
            200,
            vec![("date", date.clone()), ("expires", expires.clone())],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    advance(29).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "HIT"
    );
    advance(2).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "MISS"
    );
}

#[tokio::test(start_paused = true)]
async fn a_date_in_the_past_is_apparent_age() {
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(crate::now_ms());
    let date = httpdate::fmt_http_date(now - Duration::from_secs(50));
    let origin = Scripted::new(move |_| {
        (
            200,
            vec![("date", date.clone()), ("cache-control", h("max-age=60"))],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    let hit = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.headers["age"], "50");
    advance(11).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "MISS"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fresh_entry_answers_if_modified_since_with_304() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![
                ("cache-control", h("max-age=60")),
                ("last-modified", h("Tue, 01 Dec 2026 10:00:00 GMT")),
            ],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    let later = [("if-modified-since", "Tue, 01 Dec 2026 11:00:00 GMT")];
    let res = send(&svc, Method::GET, "http://h/a", &later).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    let earlier = [("if-modified-since", "Tue, 01 Dec 2026 09:00:00 GMT")];
    let res = send(&svc, Method::GET, "http://h/a", &earlier).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_stale_never_serves_what_must_be_revalidated() {
    let origin = Scripted::new(|_| {
        (
            200,
            vec![("cache-control", h("max-age=1, must-revalidate"))],
            "a",
        )
    });
    let svc = shared(Policy::default()).layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    advance(5).await;
    let any_stale = [("cache-control", "max-stale")];
    let res = send(&svc, Method::GET, "http://h/a", &any_stale).await;
    assert_eq!(res.x_cache(), "MISS");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_application_mode_revalidates_too() {
    let origin = Scripted::new(|req| {
        if req.contains_key("if-none-match") {
            (304, vec![], "")
        } else {
            (200, vec![("etag", h("\"app\""))], "from the handler")
        }
    });
    let svc = CacheAsideLayer::new(
        Cache::new(MemoryStore::default()),
        "app",
        Policy::ttl(Duration::from_secs(5)).jitter(0.0),
    )
    .layer(origin.service());
    send(&svc, Method::GET, "http://h/a", &[]).await;
    advance(6).await;
    let again = send(&svc, Method::GET, "http://h/a", &[]).await;
    assert_eq!(again.text(), "from the handler");
    assert_eq!(origin.last()["if-none-match"], "\"app\"");
    // Fresh again for the route's TTL, without the body moving.
    advance(4).await;
    assert_eq!(
        send(&svc, Method::GET, "http://h/a", &[]).await.x_cache(),
        "HIT"
    );
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn cache_status_tells_a_collapsed_caller_from_the_one_that_loaded() {
    let origin = super::Origin::default();
    let svc = super::layer(Policy::default()).layer(origin.service());
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, Method::GET, "http://h/slow", &[]).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        statuses.push(reply.headers["cache-status"].to_str().unwrap().to_owned());
    }
    assert_eq!(origin.calls(), 1);
    let loaded: Vec<_> = statuses
        .iter()
        .filter(|s| !s.contains("collapsed"))
        .collect();
    assert_eq!(loaded.len(), 1, "{statuses:?}");
    assert!(
        loaded[0].starts_with("tower-cache; fwd=uri-miss; fwd-status=200; stored"),
        "{loaded:?}"
    );
    assert!(
        statuses
            .iter()
            .filter(|s| s.contains("collapsed"))
            .all(|s| s.starts_with("tower-cache; fwd=uri-miss; collapsed; ttl=")),
        "{statuses:?}"
    );
    let hit = send(&svc, Method::GET, "http://h/slow", &[]).await;
    let hit = hit.headers["cache-status"].to_str().unwrap().to_owned();
    assert!(hit.starts_with("tower-cache; hit; ttl=5"), "{hit}");
}

#[tokio::test(start_paused = true)]
async fn cache_status_and_x_cache_can_each_be_switched_off_or_renamed() {
    let origin = Scripted::new(|_| (200, vec![("cache-control", h("max-age=60"))], "a"));
    let quiet = shared(Policy::default())
        .x_cache(false)
        .cache_status(false)
        .layer(origin.service());
    let reply = send(&quiet, Method::GET, "http://h/a", &[]).await;
    assert!(!reply.headers.contains_key("x-cache"));
    assert!(!reply.headers.contains_key("cache-status"));
    let named = shared(Policy::default())
        .cache_status_name("edge-7")
        .layer(origin.service());
    send(&named, Method::GET, "http://h/a", &[]).await;
    let hit = send(&named, Method::GET, "http://h/a", &[]).await;
    assert_eq!(hit.headers["cache-status"], "edge-7; hit; ttl=60");
    assert_eq!(hit.x_cache(), "HIT");
}
