//! Write-behind's behaviour, through the service as users call it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use super::*;
use crate::store::MemoryStore;
use crate::{Cache, CacheStatus, Policy, ReadThroughLayer, Write};

mod capture;
mod delivery;
mod lifecycle;

type Batch = Vec<Write<u64, i64>>;

/// A writer that records what it was given.
#[derive(Clone, Default)]
pub(super) struct Recorder {
    calls: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<Batch>>>,
}

impl Recorder {
    pub(super) fn service(
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

    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every write the writer received, in order.
    pub(super) fn writes(&self) -> Vec<Write<u64, i64>> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

pub(super) fn layer() -> WriteBehindLayer<u64, i64, MemoryStore> {
    WriteBehindLayer::new(Cache::new(MemoryStore::default()), "wb", Policy::default())
        .namespace("wb:")
}

/// Value written by `task` as its `seq`-th write to a key.
fn tagged(task: i64, seq: i64) -> i64 {
    seq * 1_000 + task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_writes_end_with_the_last_value_per_key() {
    const KEYS: u64 = 100;
    const TASKS_PER_KEY: i64 = 10;
    const WRITES_PER_TASK: i64 = 10;
    let cache = Cache::new(MemoryStore::default());
    let writer = Recorder::default();
    let svc = WriteBehindLayer::<u64, i64, _>::new(cache.clone(), "wb", Policy::default())
        .namespace("wb:")
        .max_delay(Duration::from_millis(5))
        .layer(writer.service());
    let handle = svc.handle();
    // Ten tasks race on every key; each writes increasing values to it.
    let mut tasks = Vec::new();
    for task in 0..TASKS_PER_KEY {
        for key in 0..KEYS {
            let mut svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 1..=WRITES_PER_TASK {
                    svc.ready()
                        .await
                        .unwrap()
                        .call(Write::new(key, tagged(task, seq)))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    handle.flush().await.unwrap();

    // Writes to a key reach the writer in the order they were acknowledged:
    // each task's writes arrive in the order it made them.
    let mut last_seq: HashMap<(u64, i64), i64> = HashMap::new();
    let mut last: HashMap<u64, i64> = HashMap::new();
    for w in writer.writes() {
        let (task, seq) = (w.value % 1_000, w.value / 1_000);
        let previous = last_seq.insert((w.key, task), seq).unwrap_or(0);
        assert!(
            seq > previous,
            "key {} task {task}: {previous} then {seq}",
            w.key
        );
        last.insert(w.key, w.value);
    }
    assert_eq!(last.len() as u64, KEYS);
    let mut read = ReadThroughLayer::new(cache, "wb", Policy::default())
        .namespace("wb:")
        .layer(service_fn(|_: u64| async { Ok::<i64, std::io::Error>(-1) }));
    for key in 0..KEYS {
        let value = last[&key];
        // The write acknowledged last to a key is the final write of its
        // task (nothing followed it), and the writer and the cache agree
        // on it.
        assert_eq!(value / 1_000, WRITES_PER_TASK, "key {key} ended on {value}");
        assert_eq!(read.lookup(key).await.unwrap(), (value, CacheStatus::Hit));
    }
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
        .max_delay(Duration::from_secs(3_600))
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
    // Nothing goes out before max_delay: every increment is pending.
    assert_eq!(writer.calls(), 0);
    assert_eq!(handle.pending(&7), Some(1_000));
    handle.flush().await.unwrap();
    assert_eq!(
        writer.writes(),
        vec![Write::new(7, 1_000)],
        "1,000 increments become one write of the sum"
    );
    assert_eq!(handle.pending(&7), None);
    assert_eq!(handle.stats().coalesced, 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_blocks_poll_ready_until_the_writer_catches_up() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let (gate, delivered, entered) = (gate.clone(), delivered.clone(), entered.clone());
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let (gate, delivered) = (gate.clone(), delivered.clone());
            entered.notify_one();
            async move {
                gate.acquire().await.unwrap().forget();
                delivered.fetch_add(batch.len(), Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let mut svc = layer().queue_capacity(4).max_batch(1).layer(writer);
    // The first write reaches the writer, which holds it until the gate
    // opens: from then on the worker takes nothing more from the queue.
    svc.ready()
        .await
        .unwrap()
        .call(Write::new(0, 1))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), entered.notified())
        .await
        .expect("the writer got the first batch");
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut accepted = 1u64;
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
    tokio::time::timeout(Duration::from_secs(30), svc.ready())
        .await
        .expect("released when the writer catches up")
        .unwrap();
    svc.call(Write::new(999, 1)).await.unwrap();
    svc.handle().flush().await.unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst) as u64, accepted + 1);
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
