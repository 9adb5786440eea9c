use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use super::*;
use crate::store::MemoryStore;
use crate::{Cache, CacheStatus, Policy, ReadThroughLayer};

type Batch = Vec<Write<u64, i64>>;

/// A writer that records what it was given.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<Batch>>>,
}

impl Recorder {
    fn service(
        &self,
    ) -> impl Service<
        Vec<Write<u64, i64>>,
        Response = (),
        Error = std::io::Error,
        Future = impl Send + 'static,
    > + Send
    + 'static {
        let me = self.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            me.calls.fetch_add(1, Ordering::SeqCst);
            me.batches.lock().unwrap().push(batch);
            async { Ok(()) }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every write the writer received, in order.
    fn writes(&self) -> Vec<Write<u64, i64>> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

fn layer() -> WriteBehindLayer<u64, i64, MemoryStore> {
    WriteBehindLayer::new(Cache::new(MemoryStore::default()), "wb", Policy::default())
        .namespace("wb:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_writes_end_with_the_last_value_per_key() {
    let writer = Recorder::default();
    let svc = layer()
        .max_delay(Duration::from_millis(5))
        .layer(writer.service());
    let handle = svc.handle();
    let tasks: Vec<_> = (0..100u64)
        .map(|key| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                for seq in 1..=100i64 {
                    svc.ready()
                        .await
                        .unwrap()
                        .call(Write::new(key, seq))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    handle.flush().await.unwrap();

    let mut last: HashMap<u64, i64> = HashMap::new();
    for w in writer.writes() {
        let previous = last.insert(w.key, w.value).unwrap_or(0);
        assert!(
            w.value > previous,
            "key {} went from {previous} to {}",
            w.key,
            w.value
        );
    }
    assert_eq!(last.len(), 100);
    assert!(last.values().all(|v| *v == 100), "{last:?}");
    let stats = handle.stats();
    assert_eq!(stats.acknowledged, 10_000);
    assert!(
        writer.calls() < 1_000,
        "{} writer calls for 10,000 writes",
        writer.calls()
    );
    assert!(stats.coalesced > 5_000, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_merge_sums_exactly() {
    let writer = Recorder::default();
    let svc = layer()
        .max_delay(Duration::from_millis(5))
        .merge(|a, b| a + b)
        .layer(writer.service());
    let handle = svc.handle();
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(Write::new(7, 1)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let delivered: i64 = writer.writes().iter().map(|w| w.value).sum();
    let pending = handle.pending(&7).unwrap_or(0);
    assert_eq!(
        delivered + pending,
        1_000,
        "every increment is delivered or pending"
    );
    handle.flush().await.unwrap();
    let total: i64 = writer.writes().iter().map(|w| w.value).sum();
    assert_eq!(total, 1_000);
    assert_eq!(handle.pending(&7), None);
    assert!(writer.calls() < 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_blocks_poll_ready_until_the_writer_catches_up() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (gate, delivered) = (gate.clone(), delivered.clone());
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let (gate, delivered) = (gate.clone(), delivered.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                delivered.fetch_add(batch.len(), Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let mut svc = layer().queue_capacity(4).max_batch(1).layer(writer);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut accepted = 0u64;
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                svc.call(Write::new(accepted, 1)).await.unwrap();
                accepted += 1;
            }
            Poll::Pending => break,
            Poll::Ready(Err(e)) => panic!("{e}"),
        }
        assert!(accepted < 100, "the queue never filled");
        tokio::task::yield_now().await;
    }
    // The writer holds one batch, the queue holds the rest.
    assert!((4..=6).contains(&accepted), "accepted {accepted}");
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Pending));

    gate.add_permits(1_000);
    tokio::time::timeout(Duration::from_secs(5), svc.ready())
        .await
        .expect("released when the writer catches up")
        .unwrap();
    svc.call(Write::new(999, 1)).await.unwrap();
    svc.handle().flush().await.unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst) as u64, accepted + 1);
}

#[tokio::test(start_paused = true)]
async fn a_writer_failing_twice_gets_every_write_on_the_third_try() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (attempts, got) = (attempts.clone(), got.clone());
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            let got = got.clone();
            async move {
                if n < 2 {
                    return Err(std::io::Error::other("database is locked"));
                }
                got.lock().unwrap().extend(batch);
                Ok(())
            }
        })
    };
    let svc = layer().max_batch(1_000).layer(writer);
    for key in 0..50u64 {
        svc.clone()
            .oneshot(Write::new(key, key as i64))
            .await
            .unwrap();
    }
    svc.handle().flush().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let mut keys: Vec<u64> = got.lock().unwrap().iter().map(|w| w.key).collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..50).collect::<Vec<_>>());
    let stats = svc.handle().stats();
    assert_eq!((stats.retries, stats.dead_letters), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn what_keeps_failing_goes_to_the_dead_letter_handler() {
    let dead = Arc::new(Mutex::new(Vec::new()));
    let writer = service_fn(|_: Vec<Write<u64, i64>>| async {
        Err::<(), _>(std::io::Error::other("disk full"))
    });
    let svc = layer()
        .max_retries(2)
        .merge(|a, b| a + b)
        .dead_letter({
            let dead = dead.clone();
            move |letter: DeadLetter<u64, i64>| {
                assert_eq!(letter.attempts, 3);
                assert_eq!(letter.error, "disk full");
                dead.lock().unwrap().extend(letter.writes);
            }
        })
        .layer(writer);
    for key in 0..10u64 {
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    let handle = svc.handle();
    handle.flush().await.unwrap();
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 10);
    assert!(dead.iter().all(|w| w.value == 2));
    assert_eq!(handle.stats().dead_letters, 10);
    assert_eq!(handle.pending(&3), None);
}

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

#[tokio::test]
async fn a_read_after_a_write_is_a_hit_with_the_new_value() {
    let cache = Cache::new(MemoryStore::default());
    let writer = Recorder::default();
    let svc = WriteBehindLayer::<u64, i64, _>::new(cache.clone(), "prices", Policy::default())
        .namespace("price:")
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    svc.clone().oneshot(Write::new(1, 250)).await.unwrap();
    let mut read = ReadThroughLayer::new(cache, "prices", Policy::default())
        .namespace("price:")
        .layer(service_fn(|_: u64| async {
            Ok::<i64, std::io::Error>(100)
        }));
    assert_eq!(read.lookup(1).await.unwrap(), (250, CacheStatus::Hit));
    assert_eq!(writer.calls(), 0, "acknowledged before the writer saw it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_key_leave_the_last_acknowledged_in_the_cache() {
    let cache = Cache::new(MemoryStore::default());
    let writer = Recorder::default();
    let mut svc = WriteBehindLayer::<u64, i64, _>::new(cache.clone(), "c", Policy::default())
        .max_delay(Duration::from_millis(1))
        .layer(writer.service());
    let mut acks = Vec::new();
    for v in 1..=500i64 {
        svc.ready().await.unwrap();
        acks.push(tokio::spawn(svc.call(Write::new(1, v))));
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    let mut read = ReadThroughLayer::new(cache, "c", Policy::default())
        .layer(service_fn(|_: u64| async { Ok::<i64, std::io::Error>(0) }));
    assert_eq!(read.lookup(1).await.unwrap(), (500, CacheStatus::Hit));
}
