//! The queue's life: flush, shutdown, dropping the last handle, and the
//! tasks shutdown waits for.

use std::time::Duration;

use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use super::super::WriteBehindLayer;
use super::capture::Capture;
use super::{Recorder, layer};
use crate::entry::Entry;
use crate::store::{MemoryStore, Store};
use crate::{Cache, CacheStatus, Policy, ReadThroughLayer, StoreError, Write};

#[tokio::test(start_paused = true)]
async fn shutdown_drains_everything_and_refuses_later_writes() {
    let writer = Recorder::default();
    let mut svc = layer()
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    for key in 0..50u64 {
        svc.ready()
            .await
            .unwrap()
            .call(Write::new(key, 1))
            .await
            .unwrap();
    }
    assert_eq!(writer.calls(), 0, "nothing delivered before the delay");
    let handle = svc.handle();
    handle.shutdown().await;
    assert_eq!(writer.writes().len(), 50);
    assert!(svc.ready().await.is_err(), "closed after shutdown");
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_delivery_and_drop_drains() {
    let writer = Recorder::default();
    let svc = layer()
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    svc.clone().oneshot(Write::new(1, 5)).await.unwrap();
    let handle = svc.handle();
    handle.flush().await.unwrap();
    assert_eq!(writer.writes(), vec![Write::new(1, 5)]);

    svc.clone().oneshot(Write::new(2, 6)).await.unwrap();
    drop(svc);
    drop(handle);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        writer.writes().len(),
        2,
        "dropping every handle drains the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_drains_in_the_background_with_a_log_line() {
    let capture = Capture::default();
    let _guard = capture.install();
    let writer = Recorder::default();
    let svc = layer()
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    for key in 0..20u64 {
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    let handle = svc.handle();
    drop(svc);
    tokio::task::yield_now().await;
    assert_eq!(writer.calls(), 0, "a handle keeps the queue open");
    drop(handle);
    // Long before max_delay: the drain does not wait for it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(writer.writes().len(), 20);
    let infos = capture.at(tracing::Level::INFO);
    assert!(infos.iter().any(|e| e.contains("drained")), "{infos:?}");
}

#[tokio::test(start_paused = true)]
async fn a_worker_from_pair_delivers_once_it_runs_and_ends_at_shutdown() {
    let writer = Recorder::default();
    let (svc, worker) = layer().pair(writer.service());
    svc.clone().oneshot(Write::new(1, 5)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(writer.calls(), 0, "nothing runs the worker yet");

    let worker = tokio::spawn(worker);
    let handle = svc.handle();
    handle.flush().await.unwrap();
    assert_eq!(writer.writes(), vec![Write::new(1, 5)]);
    svc.clone().oneshot(Write::new(2, 6)).await.unwrap();
    handle.shutdown().await;
    assert_eq!(writer.writes().len(), 2);
    tokio::time::timeout(Duration::from_secs(1), worker)
        .await
        .expect("the worker returns once shut down")
        .unwrap();
}

/// A `MemoryStore` whose writes take `delay`.
#[derive(Clone)]
struct SlowWrites {
    inner: MemoryStore,
    delay: Duration,
}

impl Store for SlowWrites {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.put(key, entry).await
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.remove(key).await
    }
    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        self.inner.remove_tag(tag).await
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_cache_writes_nobody_awaited() {
    let cache = Cache::new(SlowWrites {
        inner: MemoryStore::default(),
        delay: Duration::from_secs(1),
    });
    let writer = Recorder::default();
    let mut svc = WriteBehindLayer::<u64, i64, _>::new(cache.clone(), "prices", Policy::default())
        .layer(writer.service());
    svc.ready().await.unwrap();
    // Acknowledgement requested and never awaited: its task sets the cache.
    drop(svc.call(Write::new(1, 250)));
    svc.handle().shutdown().await;
    assert_eq!(writer.writes(), vec![Write::new(1, 250)]);
    let mut read = ReadThroughLayer::new(cache, "prices", Policy::default())
        .layer(service_fn(|_: u64| async { Ok::<i64, std::io::Error>(0) }));
    let started = tokio::time::Instant::now();
    assert_eq!(read.lookup(1).await.unwrap(), (250, CacheStatus::Hit));
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the cache was set before"
    );
}
