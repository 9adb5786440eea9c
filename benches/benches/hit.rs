//! The cost of an L1 hit through `CacheAsideLayer` on an `http::Request`,
//! against the bare inner service returning the same prebuilt response,
//! and against a raw moka `get` (the floor).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Service, ServiceExt, service_fn};
use tower_cache::store::MemoryStore;
use tower_cache::{Cache, CacheAsideLayer, Policy};
use tower_layer::Layer;

const BODY: &[u8] = br#"{"id":42,"name":"Product 42","price_cents":4200}"#;

fn request() -> Request<Full<Bytes>> {
    Request::get("http://bench/products/42")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

fn l1_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let response = Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("valid response");
    let inner = service_fn(move |_req: Request<Full<Bytes>>| {
        let res = response.clone();
        async move { Ok::<_, Infallible>(res) }
    });
    let cache = Cache::new(MemoryStore::default());
    let cached = CacheAsideLayer::new(cache, "bench", Policy::ttl(Duration::from_secs(3600)))
        .layer(inner.clone());
    rt.block_on(cached.clone().oneshot(request()))
        .expect("warm the entry");
    let raw: moka::future::Cache<String, Bytes> = moka::future::Cache::new(10_000);
    rt.block_on(raw.insert("GET /products/42".to_owned(), Bytes::from_static(BODY)));

    let mut group = c.benchmark_group("l1_hit");
    group.bench_function("cache_aside_layer", |b| {
        let mut svc = cached.clone();
        b.to_async(&rt).iter(|| {
            let fut = svc.call(request());
            async move { fut.await.expect("infallible") }
        })
    });
    group.bench_function("bare_inner_service", |b| {
        let mut svc = inner.clone();
        b.to_async(&rt).iter(|| {
            let fut = svc.call(request());
            async move { fut.await.expect("infallible") }
        })
    });
    group.bench_function("raw_moka_get", |b| {
        b.to_async(&rt)
            .iter(|| async { raw.get("GET /products/42").await.expect("hit") })
    });
    group.finish();
}

criterion_group!(benches, l1_hit);
criterion_main!(benches);
