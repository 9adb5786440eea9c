//! `N` L1 hits through `CacheAsideLayer` on one thread, for instruction
//! counts that do not depend on the machine's load:
//!
//! ```sh
//! cargo build --release -p tower-cache-benches --bin l1_hits
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/l1_hits 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/l1_hits 10000
//! ```
//!
//! The difference of the two totals over 10,000 is the cost of one hit
//! (request built, key computed, entry read and decoded, response built
//! and its body read).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, service_fn};
use tower_cache::store::MemoryStore;
use tower_cache::{Cache, CacheAsideLayer, Policy};
use tower_layer::Layer;

const BODY: &[u8] = br#"{"id":42,"name":"Product 42","price_cents":4200}"#;

fn request() -> Request<Full<Bytes>> {
    Request::get("http://bench/products/42")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

fn main() {
    let hits: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let inner = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(BODY)))
                .expect("valid response"),
        )
    });
    let cache = Cache::new(MemoryStore::default());
    let mut svc = CacheAsideLayer::new(
        cache,
        "/products/{id}",
        Policy::ttl(Duration::from_secs(3600)),
    )
    .layer(inner);
    rt.block_on(async {
        let warm = svc.call(request()).await.expect("infallible");
        warm.into_body().collect().await.expect("body");
        for _ in 0..hits {
            let res = svc.call(request()).await.expect("infallible");
            assert_eq!(res.headers()["x-cache"], "HIT");
            let body = res.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body.len(), BODY.len());
        }
    });
}
