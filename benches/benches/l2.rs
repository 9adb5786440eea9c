//! L2 (Redis) hit and miss-then-load through the engine, against a raw
//! redis-rs `GET` on the same connection. Starts its own redis-server.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use tower_cache::store::RedisStore;
use tower_cache::{Cache, Fill, Loaded, Policy, Profile};
use tower_cache_tests::RedisServer;

const BODY: &[u8] = br#"{"id":42,"name":"Product 42","price_cents":4200}"#;

fn l2(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = RedisServer::start();
    let _guard = rt.enter();
    let store = RedisStore::new(server.url()).expect("valid URL");
    let cache = Cache::new(store.clone());
    let profile = Profile::new("bench", Policy::ttl(Duration::from_secs(3600)));
    let load = || async { Ok::<_, std::io::Error>(Loaded::<()>::Store(Fill::new(BODY))) };
    rt.block_on(cache.fetch("hot", &profile, load))
        .expect("warm");
    let mut conn = store.connection();
    rt.block_on(async {
        redis::cmd("SET")
            .arg("raw:hot")
            .arg(BODY)
            .query_async::<()>(&mut conn)
            .await
    })
    .expect("raw set");

    let mut group = c.benchmark_group("l2");
    group.bench_function("engine_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.fetch("hot", &profile, load).await.expect("hit") })
    });
    group.bench_function("raw_redis_get", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("GET")
                    .arg("raw:hot")
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
                    .expect("get")
            }
        })
    });
    let n = AtomicU64::new(0);
    group.bench_function("engine_miss_then_load", |b| {
        b.to_async(&rt).iter(|| {
            let key = format!("cold:{}", n.fetch_add(1, Ordering::Relaxed));
            let (cache, profile) = (cache.clone(), profile.clone());
            async move { cache.fetch(&key, &profile, load).await.expect("load") }
        })
    });
    group.finish();
    let _ = Bytes::new();
}

criterion_group!(benches, l2);
criterion_main!(benches);
