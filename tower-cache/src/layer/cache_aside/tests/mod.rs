use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use crate::store::{MemoryStore, Store};
use crate::{Cache, CacheAsideLayer, Policy};

mod absent;
mod hit;
mod shared;
mod streaming;
mod warm;

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    saw_conditional: Arc<AtomicBool>,
}

fn body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    #[expect(clippy::too_many_lines, reason = "one arm per route the tests use")]
    fn service(
        &self,
    ) -> impl Service<
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
                let n = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let (req, req_body) = req.into_parts();
                let req_len = req_body.collect().await.map_or(0, |b| b.to_bytes().len());
                let path = req.uri.path().to_owned();
                let conditional = [
                    "if-none-match",
                    "if-modified-since",
                    "if-match",
                    "if-unmodified-since",
                    "if-range",
                    "range",
                ]
                .iter()
                .any(|h| req.headers.contains_key(*h));
                if conditional {
                    origin.saw_conditional.store(true, Ordering::SeqCst);
                }
                let res = Response::builder();
                let res = match (req.method.clone(), path.as_str()) {
                    // As a server does: a HEAD gets the headers, no body.
                    (Method::HEAD, _) => res.body(body("")),
                    (Method::PUT, _) => res.header("cache-tag", "put").body(body("saved")),
                    // Answers naming other resources: a 201 with the
                    // `Location` and `Content-Location` the request asks
                    // for, or a 303 to its `Location`.
                    (Method::POST, "/orders" | "/checkout") => {
                        let status = if path == "/orders" { 201 } else { 303 };
                        let mut res = res.status(status);
                        for name in ["location", "content-location"] {
                            if let Some(v) = req.headers.get(format!("x-{name}").as_str()) {
                                res = res.header(name, v.clone());
                            }
                        }
                        res.body(body("created"))
                    }
                    (_, p) if p.starts_with("/items/") => {
                        let id = p["/items/".len()..].trim_start_matches('0');
                        res.header("cache-tag", format!("item:{id}, items"))
                            .body(body(format!("item {id} #{n}")))
                    }
                    (_, "/slow") => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        res.body(body(format!("slow {n}")))
                    }
                    (_, "/big") => res.body(body(vec![b'x'; 2 * 1024 * 1024])),
                    (_, "/flaky") if origin.failing.load(Ordering::SeqCst) => {
                        res.status(503).body(body("down"))
                    }
                    (_, "/private") => res
                        .header("cache-control", "private")
                        .body(body(format!("private {n}"))),
                    (_, "/cookie") => res
                        .header("set-cookie", "session=1")
                        .body(body(format!("cookie {n}"))),
                    (_, "/missing") => res.status(404).body(body("not found")),
                    (_, "/gone") => res.status(410).body(body(format!("gone {n}"))),
                    (_, "/etag") => res
                        .header("etag", "\"origin-7\"")
                        .body(body(format!("tagged {n}"))),
                    (_, "/len") => res.body(body(format!("len={req_len}"))),
                    (_, "/fail-cookie") => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        res.status(503)
                            .header("set-cookie", format!("session={n}"))
                            .body(body("down"))
                    }
                    (_, "/cond") if req.headers.contains_key("if-none-match") => {
                        res.status(304).body(body(""))
                    }
                    (_, "/cond") if req.headers.contains_key("range") => res
                        .status(206)
                        .header("content-range", "bytes 0-1/8")
                        .body(body("fu")),
                    (_, "/cond") => res.body(body(format!("full {n}"))),
                    (_, "/me") => {
                        let who = req
                            .headers
                            .get("authorization")
                            .map(|v| v.to_str().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        res.body(body(format!("me={who}")))
                    }
                    (_, "/lang") => {
                        let lang = req
                            .headers
                            .get("accept-language")
                            .map(|v| v.to_str().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        res.header("vary", "accept-language")
                            .body(body(format!("lang={lang}")))
                    }
                    (_, "/trailers") => {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        res.body(
                            Full::new(Bytes::from_static(b"with trailers"))
                                .with_trailers(async move { Some(Ok(trailers)) })
                                .boxed_unsync(),
                        )
                    }
                    _ => res.body(body(format!("{path} #{n}"))),
                };
                Ok::<_, Infallible>(res.expect("valid response"))
            }
        })
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Reply {
    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send<S>(svc: &S, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<crate::http::CacheBody<Body>>,
            Error = Infallible,
        > + Clone,
{
    let mut req = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

async fn get<S>(svc: &S, uri: &str) -> Reply
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<crate::http::CacheBody<Body>>,
            Error = Infallible,
        > + Clone,
{
    send(svc, Method::GET, uri, &[]).await
}

fn layer(policy: Policy) -> CacheAsideLayer<MemoryStore> {
    CacheAsideLayer::new(
        Cache::new(MemoryStore::default()),
        "test",
        policy.jitter(0.0),
    )
}

#[tokio::test(start_paused = true)]
async fn miss_then_hit_with_age() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let first = get(&svc, "http://h/products/1").await;
    assert_eq!(first.x_cache(), "MISS");
    tokio::time::advance(Duration::from_secs(3)).await;
    let second = get(&svc, "http://h/products/1").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(second.headers["age"], "3");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_inner_call() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { get(&svc, "http://h/slow").await.text() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "slow 1");
    }
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_heads_load_one_get_that_every_head_and_get_shares() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let svc = svc.clone();
            let method = if i % 3 == 0 {
                Method::GET
            } else {
                Method::HEAD
            };
            tokio::spawn(async move {
                let r = send(&svc, method.clone(), "http://h/slow", &[]).await;
                (method, r)
            })
        })
        .collect();
    for t in tasks {
        let (method, r) = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let len = r
            .headers
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_owned());
        if method == Method::HEAD {
            assert!(r.body.is_empty(), "a HEAD gets no body");
            assert_eq!(len.as_deref(), Some("6"), "but the GET's length");
        } else {
            assert_eq!(r.text(), "slow 1");
        }
    }
    assert_eq!(origin.calls(), 1, "one GET for 200 HEADs and 100 GETs");
    let r = get(&svc, "http://h/slow").await;
    assert_eq!((r.x_cache(), r.text().as_str()), ("HIT", "slow 1"));
}

#[tokio::test(start_paused = true)]
async fn a_head_from_the_cache_carries_the_stored_content_length() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let got = get(&svc, "http://h/products/1").await;
    let head = send(&svc, Method::HEAD, "http://h/products/1", &[]).await;
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], got.body.len().to_string());
    let cold = send(&svc, Method::HEAD, "http://h/products/2", &[]).await;
    assert_eq!(cold.x_cache(), "MISS");
    assert_eq!(cold.headers["content-length"], "14", "\"/products/2 #2\"");
    let stored = get(&svc, "http://h/products/2").await;
    assert_eq!(
        (stored.x_cache(), stored.text().as_str()),
        ("HIT", "/products/2 #2")
    );
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_answers_504_on_a_miss_without_the_origin() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let only = [("cache-control", "only-if-cached")];
    let cold = send(&svc, Method::GET, "http://h/products/1", &only).await;
    assert_eq!(cold.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.calls(), 0);
    get(&svc, "http://h/products/1").await;
    let warm = send(&svc, Method::GET, "http://h/products/1", &only).await;
    assert_eq!((warm.status, warm.x_cache()), (StatusCode::OK, "HIT"));
    assert_eq!(warm.text(), "/products/1 #1");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_write_invalidates_every_spelling_tagged_with_its_resource() {
    let origin = Origin::default();
    let svc = layer(Policy::default())
        .invalidates(|parts| {
            let id = parts.uri.path().rsplit('/').next().unwrap_or("");
            vec![format!("item:{}", id.trim_start_matches('0'))]
        })
        .layer(origin.service());
    for uri in [
        "http://h/items/12",
        "http://h/items/012",
        "http://h/items/12?ref=mail",
    ] {
        let miss = get(&svc, uri).await;
        assert!(
            !miss.headers.contains_key("cache-tag"),
            "never leaves the layer"
        );
        let hit = get(&svc, uri).await;
        assert_eq!(hit.x_cache(), "HIT", "{uri}");
        assert!(!hit.headers.contains_key("cache-tag"));
    }
    assert_eq!(get(&svc, "http://h/items/13").await.x_cache(), "MISS");
    let put = send(&svc, Method::PUT, "http://h/items/0012", &[]).await;
    assert!(!put.headers.contains_key("cache-tag"), "nor from a write");
    for uri in [
        "http://h/items/12",
        "http://h/items/012",
        "http://h/items/12?ref=mail",
    ] {
        assert_eq!(get(&svc, uri).await.x_cache(), "MISS", "{uri}");
    }
    assert_eq!(
        get(&svc, "http://h/items/13").await.x_cache(),
        "HIT",
        "another resource"
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_invalidates_the_location_and_content_location_of_its_origin() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    for p in ["/products/7", "/products/8", "/orders/1", "/products/9"] {
        get(&svc, &format!("http://h{p}")).await;
        assert_eq!(get(&svc, &format!("http://h{p}")).await.x_cache(), "HIT");
    }
    send(
        &svc,
        Method::POST,
        "http://h/orders",
        &[
            ("x-location", "/products/%37"),
            ("x-content-location", "http://H/orders/1"),
        ],
    )
    .await;
    assert_eq!(get(&svc, "http://h/products/7").await.x_cache(), "MISS");
    assert_eq!(get(&svc, "http://h/orders/1").await.x_cache(), "MISS");
    send(
        &svc,
        Method::POST,
        "http://h/orders",
        &[("x-location", "http://elsewhere.example/products/8")],
    )
    .await;
    assert_eq!(
        get(&svc, "http://h/products/8").await.x_cache(),
        "HIT",
        "another origin's URI invalidates nothing here"
    );
    // A redirect is not an error: it invalidates too (RFC 9111 §4.4).
    send(
        &svc,
        Method::POST,
        "http://h/checkout",
        &[("x-location", "/products/9")],
    )
    .await;
    assert_eq!(get(&svc, "http://h/products/9").await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn successful_write_invalidates_the_path() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    get(&svc, "http://h/products/1").await;
    get(&svc, "http://h/products/1?view=full").await;
    assert_eq!(get(&svc, "http://h/products/1").await.x_cache(), "HIT");
    let put = send(&svc, Method::PUT, "http://h/products/1", &[]).await;
    assert_eq!(put.text(), "saved");
    assert_eq!(get(&svc, "http://h/products/1").await.x_cache(), "MISS");
    assert_eq!(
        get(&svc, "http://h/products/1?view=full").await.x_cache(),
        "MISS",
        "every variant of the path"
    );
    assert_eq!(get(&svc, "http://h/products/1").await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn double_delete_removes_a_value_put_back_after_the_write() {
    let origin = Origin::default();
    let cache = Cache::new(MemoryStore::default());
    let l = CacheAsideLayer::new(cache.clone(), "test", Policy::default())
        .double_delete(Duration::from_millis(500));
    let svc = l.layer(origin.service());
    let old = get(&svc, "http://h/products/1").await;
    let key = &l
        .key_for(&Request::get("http://h/products/1").body(()).unwrap())
        .unwrap();
    let entry = cache.store().get(key).await.unwrap().expect("stored");
    send(&svc, Method::PUT, "http://h/products/1", &[]).await;
    // A reader that started before the write puts the old value back.
    let mut late = entry.clone();
    late.stored_at = crate::clock::now_ms();
    cache.store().put(key, late).await.unwrap();
    let racy = get(&svc, "http://h/products/1").await;
    assert_eq!(racy.body, old.body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = get(&svc, "http://h/products/1").await;
    assert_eq!(after.x_cache(), "MISS");
    assert_ne!(after.body, old.body);
}

#[tokio::test(start_paused = true)]
async fn private_requests_bypass_and_are_not_stored() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let alice = send(
        &svc,
        Method::GET,
        "http://h/me",
        &[("authorization", "Bearer user-1")],
    )
    .await;
    assert_eq!(alice.x_cache(), "BYPASS");
    assert_eq!(alice.text(), "me=Bearer user-1");
    let cookie = send(&svc, Method::GET, "http://h/me", &[("cookie", "s=1")]).await;
    assert_eq!(cookie.x_cache(), "BYPASS");
    let anonymous = get(&svc, "http://h/me").await;
    assert_eq!(anonymous.x_cache(), "MISS");
    assert_eq!(anonymous.text(), "me=");
}

#[tokio::test(start_paused = true)]
async fn per_user_entries_are_never_shared() {
    let origin = Origin::default();
    let svc = layer(Policy::default())
        .per_user(|parts| {
            parts
                .headers
                .get("authorization")?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
                .map(str::to_owned)
        })
        .layer(origin.service());
    for round in 0..3 {
        for user in ["user-1", "user-2"] {
            let auth = format!("Bearer {user}");
            let r = send(
                &svc,
                Method::GET,
                "http://h/me",
                &[("authorization", &auth)],
            )
            .await;
            assert_eq!(r.text(), format!("me={auth}"));
            assert_eq!(r.x_cache(), if round == 0 { "MISS" } else { "HIT" });
        }
    }
    assert_eq!(origin.calls(), 2);
    let bad = send(
        &svc,
        Method::GET,
        "http://h/me",
        &[("authorization", "Basic xyz")],
    )
    .await;
    assert_eq!(bad.x_cache(), "BYPASS");
}

#[tokio::test(start_paused = true)]
async fn set_cookie_and_private_responses_are_not_stored() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    for path in ["http://h/cookie", "http://h/private"] {
        let a = get(&svc, path).await;
        let b = get(&svc, path).await;
        assert_eq!(b.x_cache(), "MISS", "{path}");
        assert_ne!(a.body, b.body, "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn body_over_the_limit_streams_through_unchanged_and_uncached() {
    let origin = Origin::default();
    let svc = layer(Policy::default())
        .max_body_bytes(64 * 1024)
        .layer(origin.service());
    for _ in 0..2 {
        let r = get(&svc, "http://h/big").await;
        assert_eq!(r.body.len(), 2 * 1024 * 1024);
        assert!(r.body.iter().all(|b| *b == b'x'));
        assert_eq!(r.x_cache(), "MISS");
    }
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_not_stored_and_stale_if_error_serves_the_previous_entry() {
    let origin = Origin::default();
    let svc = layer(Policy::ttl(Duration::from_secs(1)).stale_if_error(Duration::from_secs(60)))
        .layer(origin.service());
    let good = get(&svc, "http://h/flaky").await;
    origin.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(2)).await;
    let stale = get(&svc, "http://h/flaky").await;
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.body, good.body);

    // Without a previous entry the 503 goes through, and is not stored.
    let fresh = layer(Policy::default()).layer(origin.service());
    let down = get(&fresh, "http://h/flaky").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    origin.failing.store(false, Ordering::SeqCst);
    let up = get(&fresh, "http://h/flaky").await;
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(up.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn not_found_is_cached_for_the_negative_ttl() {
    let origin = Origin::default();
    let svc = layer(Policy::ttl(Duration::from_secs(60)).negative_ttl(Duration::from_secs(2)))
        .layer(origin.service());
    assert_eq!(
        get(&svc, "http://h/missing").await.status,
        StatusCode::NOT_FOUND
    );
    let again = get(&svc, "http://h/missing").await;
    assert_eq!(
        (again.status, again.x_cache()),
        (StatusCode::NOT_FOUND, "HIT")
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(get(&svc, "http://h/missing").await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn etag_is_stored_and_if_none_match_gets_304() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let first = get(&svc, "http://h/products/1").await;
    assert!(
        !first.headers.contains_key("etag"),
        "a streamed miss has no computed ETag: its body was not read yet"
    );
    let stored = get(&svc, "http://h/products/1").await;
    let etag = stored.headers["etag"].to_str().unwrap().to_owned();
    let revalidated = send(
        &svc,
        Method::GET,
        "http://h/products/1",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.headers["etag"], etag.as_str());
    let other = send(
        &svc,
        Method::GET,
        "http://h/products/1",
        &[("if-none-match", "\"nope\"")],
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn trailers_are_kept() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    for expected in ["MISS", "HIT"] {
        let r = get(&svc, "http://h/trailers").await;
        assert_eq!(r.x_cache(), expected);
        assert_eq!(r.text(), "with trailers");
        assert_eq!(r.trailers.expect("trailers")["grpc-status"], "0");
    }
}

#[tokio::test(start_paused = true)]
async fn request_no_store_bypasses_and_no_cache_reloads() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    get(&svc, "http://h/products/1").await;
    let bypass = send(
        &svc,
        Method::GET,
        "http://h/products/1",
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    let reload = send(
        &svc,
        Method::GET,
        "http://h/products/1",
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(reload.x_cache(), "MISS");
    assert_eq!(reload.text(), "/products/1 #3");
    let hit = get(&svc, "http://h/products/1").await;
    assert_eq!(
        (hit.x_cache(), hit.text()),
        ("HIT", "/products/1 #3".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_the_get_entry() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    get(&svc, "http://h/products/1").await;
    let head = send(&svc, Method::HEAD, "http://h/products/1", &[]).await;
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_vary_variant_is_never_served_to_another_value() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let fr = send(
        &svc,
        Method::GET,
        "http://h/lang",
        &[("accept-language", "fr")],
    )
    .await;
    assert_eq!(fr.text(), "lang=fr");
    let en = send(
        &svc,
        Method::GET,
        "http://h/lang",
        &[("accept-language", "en")],
    )
    .await;
    assert_eq!(en.text(), "lang=en");
    let en_again = send(
        &svc,
        Method::GET,
        "http://h/lang",
        &[("accept-language", "en")],
    )
    .await;
    assert_eq!(
        (en_again.text(), en_again.x_cache()),
        ("lang=en".to_owned(), "HIT")
    );

    // Naming the header keeps one entry per value.
    let svc = layer(Policy::default())
        .vary_on([http::header::ACCEPT_LANGUAGE])
        .layer(origin.service());
    for _ in 0..2 {
        for lang in ["fr", "en"] {
            let r = send(
                &svc,
                Method::GET,
                "http://h/lang",
                &[("accept-language", lang)],
            )
            .await;
            assert_eq!(r.text(), format!("lang={lang}"));
        }
    }
    let hit = send(
        &svc,
        Method::GET,
        "http://h/lang",
        &[("accept-language", "fr")],
    )
    .await;
    assert_eq!(hit.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn corrupt_entry_is_reloaded() {
    let origin = Origin::default();
    let cache = Cache::new(MemoryStore::default());
    let layer = CacheAsideLayer::new(cache.clone(), "test", Policy::default());
    let key = layer
        .key_for(&Request::get("http://h/products/1").body(()).unwrap())
        .unwrap();
    cache
        .store()
        .put(&key, crate::Entry::new("garbage"))
        .await
        .unwrap();
    let svc = layer.layer(origin.service());
    let r = get(&svc, "http://h/products/1").await;
    assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(r.text(), "/products/1 #1");
}

#[tokio::test(start_paused = true)]
async fn http_write_through_stores_the_written_representation() {
    let origin = Origin::default();
    let svc = layer(Policy::default())
        .write_through(true)
        .layer(origin.service());
    assert_eq!(
        get(&svc, "http://h/products/1").await.text(),
        "/products/1 #1"
    );
    let put = send(&svc, Method::PUT, "http://h/products/1", &[]).await;
    assert_eq!(put.text(), "saved");
    let read = get(&svc, "http://h/products/1").await;
    assert_eq!((read.x_cache(), read.text()), ("HIT", "saved".to_owned()));
    assert_eq!(origin.calls(), 2);
}

fn per_user_layer(policy: Policy) -> CacheAsideLayer<MemoryStore> {
    layer(policy).per_user(|parts| {
        parts
            .headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::to_owned)
    })
}

#[tokio::test(start_paused = true)]
async fn forged_paths_and_headers_never_get_another_users_entry() {
    let origin = Origin::default();
    let svc = per_user_layer(Policy::default())
        .vary_on([http::header::ACCEPT_LANGUAGE])
        .layer(origin.service());
    let bob = [("authorization", "Bearer bob"), ("accept-language", "fr")];
    let mine = send(&svc, Method::GET, "http://h/me", &bob).await;
    assert_eq!(mine.text(), "me=Bearer bob");
    assert_eq!(
        send(&svc, Method::GET, "http://h/me", &bob).await.x_cache(),
        "HIT"
    );
    let attempts: [(&str, &[(&str, &str)]); 4] = [
        ("http://h/me|user=bob", &[("accept-language", "fr")]),
        ("http://h/me", &[("accept-language", "fr|user=bob")]),
        (
            "http://h/me",
            &[
                ("authorization", "Bearer mallory"),
                ("accept-language", "fr|user=bob"),
            ],
        ),
        ("http://h/me?|user=bob", &[("accept-language", "fr")]),
    ];
    for (uri, headers) in attempts {
        let r = send(&svc, Method::GET, uri, headers).await;
        assert_ne!(r.text(), "me=Bearer bob", "{uri} {headers:?}");
        assert_eq!(r.x_cache(), "MISS", "{uri} {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_never_get_another_clients_set_cookie() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { get(&svc, "http://h/fail-cookie").await })
        })
        .collect();
    let mut cookies = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.status.is_server_error(), "{}", r.status);
        for cookie in r.headers.get_all("set-cookie") {
            let cookie = cookie.to_str().unwrap().to_owned();
            assert!(cookies.insert(cookie.clone()), "{cookie} sent twice");
        }
    }
    assert!(!cookies.is_empty(), "the leader gets its own cookie");
}

#[tokio::test(start_paused = true)]
async fn conditional_and_range_headers_are_not_forwarded_on_a_cacheable_miss() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let revalidating = send(
        &svc,
        Method::GET,
        "http://h/cond",
        &[("if-none-match", "\"from-elsewhere\"")],
    )
    .await;
    assert_eq!(
        (revalidating.status, revalidating.text()),
        (StatusCode::OK, "full 1".to_owned())
    );
    let etag = revalidating.headers["etag"].to_str().unwrap().to_owned();
    let not_modified = send(
        &svc,
        Method::GET,
        "http://h/cond",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(
        (not_modified.status, not_modified.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    let ranged = send(
        &svc,
        Method::GET,
        "http://h/cond?r=1",
        &[
            ("range", "bytes=0-1"),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ],
    )
    .await;
    assert_eq!(
        (ranged.status, ranged.text()),
        (StatusCode::OK, "full 2".to_owned())
    );
    assert_eq!(get(&svc, "http://h/cond?r=1").await.x_cache(), "HIT");
    assert!(!origin.saw_conditional.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn alternating_vary_variants_live_side_by_side() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    for round in 0..4 {
        for lang in ["fr", "en", "de"] {
            let r = send(
                &svc,
                Method::GET,
                "http://h/lang",
                &[("accept-language", lang)],
            )
            .await;
            assert_eq!(r.text(), format!("lang={lang}"));
            assert_eq!(r.x_cache(), if round == 0 { "MISS" } else { "HIT" });
        }
    }
    assert_eq!(origin.calls(), 3, "one load per variant");
    // A write still invalidates every variant.
    send(&svc, Method::PUT, "http://h/lang", &[]).await;
    let after = send(
        &svc,
        Method::GET,
        "http://h/lang",
        &[("accept-language", "en")],
    )
    .await;
    assert_eq!(after.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn grpc_request_larger_than_the_limit_reaches_the_service_intact() {
    let origin = Origin::default();
    let svc = layer(Policy::default())
        .max_body_bytes(1024)
        .grpc_method("/len", |b: Bytes| Full::new(b))
        .layer(origin.service());
    for size in [10 * 1024, 100] {
        let req = Request::post("http://h/len")
            .body(Full::new(Bytes::from(vec![b'm'; size])))
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, format!("len={size}").as_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn requests_after_shutdown_still_get_answers() {
    let origin = Origin::default();
    let l = layer(Policy::default());
    let cache = l.cache.clone();
    let svc = l.layer(origin.service());
    cache.shutdown().await;
    let r = get(&svc, "http://h/products/1").await;
    assert_eq!(
        (r.status, r.text()),
        (StatusCode::OK, "/products/1 #1".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_classifier_decides_reads_writes_and_bypasses() {
    let origin = Origin::default();
    let svc = layer(Policy::default())
        .classify(|parts| match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/live") => crate::RequestClass::Bypass,
            (m, _) if m.as_str() == "QUERY" => crate::RequestClass::Read,
            (m, _) => crate::RequestClass::of_method(m),
        })
        .layer(origin.service());
    let query = Method::from_bytes(b"QUERY").unwrap();
    assert_eq!(
        send(&svc, query.clone(), "http://h/report", &[])
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        send(&svc, query, "http://h/report", &[]).await.x_cache(),
        "HIT"
    );
    for _ in 0..2 {
        assert_eq!(get(&svc, "http://h/live").await.x_cache(), "BYPASS");
    }
    // Writes still invalidate by default.
    get(&svc, "http://h/products/1").await;
    send(&svc, Method::DELETE, "http://h/products/1", &[]).await;
    assert_eq!(get(&svc, "http://h/products/1").await.x_cache(), "MISS");
    assert_eq!(
        origin.calls(),
        6,
        "QUERY once, /live twice, GET, DELETE, GET"
    );
}

#[tokio::test(start_paused = true)]
async fn key_fn_namespace_and_custom_tags() {
    let origin = Origin::default();
    let cache = Cache::new(MemoryStore::default());
    let svc = CacheAsideLayer::new(cache.clone(), "products", Policy::default())
        .namespace("shop:")
        .key_fn(|parts| {
            // One entry per product, whatever the query; `nocache` bypasses.
            let path = parts.uri.path();
            (!path.contains("nocache")).then(|| format!("product {path}"))
        })
        .tags(|parts| {
            vec![format!(
                "catalog:{}",
                parts.uri.path().split('/').nth(1).unwrap_or("")
            )]
        })
        .invalidates(|parts| {
            (parts.uri.path() == "/admin/reindex")
                .then(|| "catalog:products".to_owned())
                .into_iter()
                .collect()
        })
        .layer(origin.service());
    let first = get(&svc, "http://h/products/1?view=a").await;
    let second = get(&svc, "http://h/products/1?view=b").await;
    assert_eq!((second.x_cache(), &second.body), ("HIT", &first.body));
    assert!(
        cache
            .store()
            .get("shop:v2:8:products c21:product%20/products/1")
            .await
            .unwrap()
            .is_some(),
        "the key is the namespace, the version and the key function's"
    );
    assert_eq!(get(&svc, "http://h/nocache").await.x_cache(), "BYPASS");
    // A write elsewhere invalidates the tag the entries carry.
    send(&svc, Method::POST, "http://h/admin/reindex", &[]).await;
    assert_eq!(get(&svc, "http://h/products/1").await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn gone_is_cached_for_the_negative_ttl() {
    let origin = Origin::default();
    let svc = layer(Policy::ttl(Duration::from_secs(60)).negative_ttl(Duration::from_secs(2)))
        .layer(origin.service());
    let first = get(&svc, "http://h/gone").await;
    assert_eq!(first.status, StatusCode::GONE);
    tokio::time::advance(Duration::from_secs(1)).await;
    let hit = get(&svc, "http://h/gone").await;
    assert_eq!((hit.status, hit.x_cache()), (StatusCode::GONE, "HIT"));
    tokio::time::advance(Duration::from_secs(2)).await;
    let again = get(&svc, "http://h/gone").await;
    assert_eq!(
        (again.x_cache(), again.text()),
        ("MISS", "gone 2".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn the_origins_etag_is_kept() {
    let origin = Origin::default();
    let svc = layer(Policy::default()).layer(origin.service());
    let first = get(&svc, "http://h/etag").await;
    assert_eq!(first.headers["etag"], "\"origin-7\"");
    let hit = get(&svc, "http://h/etag").await;
    assert_eq!(
        (hit.x_cache(), &hit.headers["etag"]),
        ("HIT", &first.headers["etag"])
    );
    let revalidated = send(
        &svc,
        Method::GET,
        "http://h/etag",
        &[("if-none-match", "W/\"origin-7\"")],
    )
    .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test(start_paused = true)]
async fn a_successful_reload_after_the_ttl_serves_the_new_response() {
    let origin = Origin::default();
    let svc = layer(Policy::ttl(Duration::from_secs(1)).stale_if_error(Duration::from_secs(60)))
        .layer(origin.service());
    assert_eq!(get(&svc, "http://h/flaky").await.text(), "/flaky #1");
    tokio::time::advance(Duration::from_secs(2)).await;
    let reloaded = get(&svc, "http://h/flaky").await;
    assert_eq!(
        (reloaded.x_cache(), reloaded.text()),
        ("MISS", "/flaky #2".to_owned())
    );
}

#[tokio::test(start_paused = true)]
#[expect(
    clippy::float_cmp,
    reason = "counters are whole numbers, held exactly as f64"
)]
async fn metrics_are_labelled_with_the_layers_name() {
    let counters = crate::test_support::Metrics::default();
    let origin = Origin::default();
    let layer = metrics::with_local_recorder(&counters, || {
        CacheAsideLayer::new(
            Cache::new(MemoryStore::default()),
            "/products/{id}",
            Policy::default(),
        )
    });
    let svc = layer.layer(origin.service());
    get(&svc, "http://h/products/1").await;
    get(&svc, "http://h/products/1").await;
    send(
        &svc,
        Method::GET,
        "http://h/products/1",
        &[("cookie", "s=1")],
    )
    .await;
    let cache = ("cache", "/products/{id}");
    let requests =
        |result| counters.sum("tower_cache_requests_total", &[cache, ("result", result)]);
    assert_eq!(
        (requests("miss"), requests("hit"), requests("bypass")),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(counters.sum("tower_cache_loads_total", &[cache]), 1.0);
    assert_eq!(
        counters.sum("tower_cache_requests_total", &[("cache", "other")]),
        0.0
    );
}
