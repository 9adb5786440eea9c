//! The cost of an L1 hit: `MemoryStore::get` against a raw moka `get`.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use tower_cache::Entry;
use tower_cache::store::{MemoryStore, Store};

fn l1_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let payload = Bytes::from(vec![b'x'; 1024]);
    let store = MemoryStore::new(64 << 20);
    let raw: moka::future::Cache<String, Bytes> = moka::future::Cache::new(10_000);
    rt.block_on(async {
        let entry = Entry::new(payload.clone()).with_ttl(Duration::from_secs(3600));
        store.put("key", entry).await.expect("put");
        raw.insert("key".to_owned(), payload.clone()).await;
    });

    let mut group = c.benchmark_group("l1_hit");
    group.bench_function("memory_store_get", |b| {
        b.to_async(&rt)
            .iter(|| async { store.get("key").await.expect("get").expect("hit") })
    });
    group.bench_function("raw_moka_get", |b| {
        b.to_async(&rt)
            .iter(|| async { raw.get("key").await.expect("hit") })
    });
    group.finish();
}

criterion_group!(benches, l1_hit);
criterion_main!(benches);
