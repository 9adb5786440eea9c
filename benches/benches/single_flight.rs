//! Single-flight under contention: 64 tasks on one cold key, one load.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tower_cache::store::MemoryStore;
use tower_cache::{Cache, Fill, Loaded, Policy, Profile};

fn single_flight(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cache = Cache::new(MemoryStore::default());
    let profile = Profile::new("bench", Policy::ttl(Duration::from_secs(3600)));
    let round = AtomicU64::new(0);
    c.bench_function("single_flight_64_tasks_one_cold_key", |b| {
        b.to_async(&rt).iter(|| {
            let key = format!("cold:{}", round.fetch_add(1, Ordering::Relaxed));
            let (cache, profile) = (cache.clone(), profile.clone());
            async move {
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let (cache, profile, key) = (cache.clone(), profile.clone(), key.clone());
                        tokio::spawn(async move {
                            cache
                                .fetch(&key, &profile, || async {
                                    tokio::task::yield_now().await;
                                    Ok::<_, std::io::Error>(Loaded::<()>::Store(Fill::new("v")))
                                })
                                .await
                                .expect("loaded")
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
        })
    });
}

criterion_group!(benches, single_flight);
criterion_main!(benches);
