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

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

fn body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

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
                let path = req.uri().path().to_owned();
                let res = Response::builder();
                let res = match (req.method().clone(), path.as_str()) {
                    (Method::PUT, _) => res.body(body("saved")),
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
                    (_, "/me") => {
                        let who = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        res.body(body(format!("me={who}")))
                    }
                    (_, "/lang") => {
                        let lang = req
                            .headers()
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
    let key = "http:v1:GET h/products/1";
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
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
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
    cache
        .store()
        .put("http:v1:GET h/products/1", crate::Entry::new("garbage"))
        .await
        .unwrap();
    let svc = CacheAsideLayer::new(cache, "test", Policy::default()).layer(origin.service());
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
