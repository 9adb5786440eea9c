//! `N` in-process hits through an axum 0.8 `Router` on one thread, for
//! instruction counts that do not depend on the machine's load:
//!
//! ```sh
//! cargo build --release -p tower-cache-benches --bin l1_hits
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/l1_hits tower-cache 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/l1_hits tower-cache 10000
//! ```
//!
//! The difference of the two totals over 10,000 is the cost of one hit:
//! the request built, routed, answered from the cache, and its body read.
//! Targets, each serving `GET /products/{id}` with the same 48-byte body:
//!
//! - `static`: the body from a static route, no cache (the upper bound);
//! - `moka`: a hand-written cache-aside handler over a moka cache keyed by
//!   the product id, as in `handwritten.rs`;
//! - `tower-cache`: the handler behind `CacheAsideLayer` with its defaults
//!   over a `MemoryStore`.
//!
//! `benches/instructions/run.sh` runs every target, the peers included.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::Service;
use tower_cache::store::MemoryStore;
use tower_cache::{Cache, CacheAsideLayer, Policy};

const BODY: &[u8] = br#"{"id":42,"name":"Product 42","price_cents":4200}"#;

/// Calls of the origin handler: a hit does not reach it.
static LOADS: AtomicUsize = AtomicUsize::new(0);

fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn origin() -> Response {
    LOADS.fetch_add(1, Ordering::Relaxed);
    json(Bytes::from_static(BODY))
}

async fn moka_product(
    State(cache): State<moka::future::Cache<u64, Bytes>>,
    Path(id): Path<u64>,
) -> Response {
    if let Some(hit) = cache.get(&id).await {
        return json(hit);
    }
    let value = Bytes::from_static(BODY);
    LOADS.fetch_add(1, Ordering::Relaxed);
    cache.insert(id, value.clone()).await;
    json(value)
}

fn router(target: &str) -> Router {
    match target {
        "static" => Router::new().route(
            "/products/{id}",
            get(|| async { json(Bytes::from_static(BODY)) }),
        ),
        "moka" => {
            let cache = moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build();
            Router::new()
                .route("/products/{id}", get(moka_product))
                .with_state(cache)
        }
        "tower-cache" => {
            let layer = CacheAsideLayer::new(
                Cache::new(MemoryStore::default()),
                "/products/{id}",
                Policy::ttl(Duration::from_secs(3600)),
            );
            Router::new().route("/products/{id}", get(origin).layer(layer))
        }
        other => {
            eprintln!("l1_hits: unknown target {other:?} (static, moka, tower-cache)");
            std::process::exit(2);
        }
    }
}

fn request() -> Request<Body> {
    Request::get("http://bench/products/42")
        .body(Body::empty())
        .expect("valid request")
}

async fn one(app: &mut Router) -> usize {
    let res = <Router as Service<Request<Body>>>::call(app, request())
        .await
        .unwrap_or_else(|e: Infallible| match e {});
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.as_ref(), BODY);
    body.len()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "tower-cache".to_owned());
    let hits: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Given its state once, as `axum::serve` does for each connection:
    // the routes are built then, not again for each request.
    let mut app = router(&target).with_state(());
    rt.block_on(async {
        one(&mut app).await;
        for _ in 0..hits {
            one(&mut app).await;
        }
    });
    let loads = LOADS.load(Ordering::Relaxed);
    assert!(
        loads <= 1,
        "{target}: {loads} loads, the hits were not hits"
    );
}
