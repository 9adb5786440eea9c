//! Write-behind acknowledgement and end-to-end throughput against
//! write-through, with a writer that takes 1 ms per call.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower::{ServiceExt, service_fn};
use tower_cache::store::MemoryStore;
use tower_cache::{Cache, Policy, Write, WriteBehindLayer, WriteThroughLayer};
use tower_layer::Layer;

const WRITES: u64 = 1_000;

fn writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let cache = Cache::new(MemoryStore::default());
    // The database: 1 ms per call, whatever it is given.
    let slow_one = service_fn(|_: Write<u64, i64>| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, std::io::Error>(())
    });
    let slow_batch = service_fn(|_: Vec<Write<u64, i64>>| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, std::io::Error>(())
    });
    let through = WriteThroughLayer::new(cache.clone(), "wt", Policy::default()).layer(slow_one);
    let behind = WriteBehindLayer::<u64, i64, _>::new(cache, "wb", Policy::default())
        .max_delay(Duration::from_millis(5))
        .layer(slow_batch);
    let handle = behind.handle();

    let mut group = c.benchmark_group("write_one");
    group.bench_function("write_through_ack", |b| {
        b.to_async(&rt).iter(|| {
            let svc = through.clone();
            async move { svc.oneshot(Write::new(1, 1)).await.expect("write") }
        })
    });
    group.bench_function("write_behind_ack", |b| {
        b.to_async(&rt).iter(|| {
            let svc = behind.clone();
            async move { svc.oneshot(Write::new(1, 1)).await.expect("write") }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("write_1000_over_100_keys_end_to_end");
    group.throughput(Throughput::Elements(WRITES));
    group.sample_size(10);
    group.bench_function("write_through", |b| {
        b.to_async(&rt).iter(|| {
            let svc = through.clone();
            write_concurrently(svc)
        })
    });
    group.bench_function("write_behind_until_flushed", |b| {
        b.to_async(&rt).iter(|| {
            let (svc, handle) = (behind.clone(), handle.clone());
            async move {
                write_concurrently(svc).await;
                handle.flush().await.expect("flush");
            }
        })
    });
    group.finish();
}

/// [`WRITES`] writes over 100 keys, each on its own task, all acknowledged.
async fn write_concurrently<S>(svc: S)
where
    S: tower::Service<Write<u64, i64>, Response = ()> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    let tasks: Vec<_> = (0..WRITES)
        .map(|i| tokio::spawn(svc.clone().oneshot(Write::new(i % 100, i as i64))))
        .collect();
    for t in tasks {
        t.await.expect("task").expect("write");
    }
}

criterion_group!(benches, writes);
criterion_main!(benches);
