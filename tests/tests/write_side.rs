//! The write layers against a real Redis: the cache in L2, and write-behind's
//! durable log surviving a crash.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{Service, ServiceExt, service_fn};
use tower_cache::store::{MemoryStore, RedisQueue, RedisStore, TieredStore};
use tower_cache::{
    Cache, CacheStatus, Policy, ReadThroughLayer, Write, WriteBehindLayer, WriteThroughLayer,
};
use tower_cache_tests::{PATIENCE, RedisServer};
use tower_layer::Layer;

/// A generous timeout, so that a slow machine does not make Redis look
/// away.
fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// L1 copies outlive every wait here, so that only an invalidation message
/// drops one.
fn tiered_cache(server: &RedisServer) -> Cache<TieredStore> {
    let l2 = redis_store(server);
    Cache::new(
        TieredStore::builder(MemoryStore::default(), l2)
            .l1_ttl(Duration::from_secs(3_600))
            .build(),
    )
}

async fn read_price(cache: &Cache<TieredStore>) -> (i64, CacheStatus) {
    ReadThroughLayer::new(cache.clone(), "prices", Policy::default())
        .namespace("price:")
        .layer(service_fn(|_: u64| async {
            Ok::<i64, std::io::Error>(100)
        }))
        .lookup(1)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_read_after_write_hits_on_every_instance() {
    let server = RedisServer::start();
    let a = tiered_cache(&server);
    let b = tiered_cache(&server);
    a.store().ready().await;
    b.store().ready().await;
    assert_eq!(read_price(&b).await, (100, CacheStatus::Miss));

    let writer = WriteThroughLayer::new(a.clone(), "prices", Policy::default())
        .namespace("price:")
        .layer(service_fn(|_: Write<u64, i64>| async {
            Ok::<_, std::io::Error>(())
        }));
    writer.oneshot(Write::new(1, 250)).await.unwrap();
    assert_eq!(read_price(&a).await, (250, CacheStatus::Hit));
    let seen = tower_cache_tests::wait_until(PATIENCE, || async {
        read_price(&b).await == (250, CacheStatus::Hit)
    })
    .await;
    assert!(
        seen.is_some(),
        "the other instance reads the new value from L2"
    );

    let failing = WriteThroughLayer::new(a.clone(), "prices", Policy::default())
        .namespace("price:")
        .layer(service_fn(|_: Write<u64, i64>| async {
            Err::<(), _>(std::io::Error::other("rejected"))
        }));
    assert!(failing.oneshot(Write::new(1, 999)).await.is_err());
    assert_eq!(
        read_price(&a).await,
        (250, CacheStatus::Hit),
        "unchanged after a failed write"
    );
}

/// Runs the crash child: it acknowledges `writes` writes through the
/// durable queue `queue` as consumer `consumer` (increments of key 7 when
/// `merge`), and is killed before it delivers any.
fn crash_after_acknowledging(
    server: &RedisServer,
    queue: &str,
    consumer: &str,
    writes: u64,
    merge: bool,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_write_behind_crash"))
        .env("REDIS_URL", server.url())
        .env("QUEUE", queue)
        .env("CONSUMER", consumer)
        .env("WRITES", writes.to_string())
        .env("MERGE", if merge { "1" } else { "0" })
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("acknowledged {writes}"));
    // A crash between acknowledgement and delivery.
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A writer that records every write it is given.
#[allow(clippy::type_complexity)]
fn recording_writer() -> (
    Arc<Mutex<Vec<Write<u64, i64>>>>,
    impl Service<
        Vec<Write<u64, i64>>,
        Response = (),
        Error = std::io::Error,
        Future = impl Send + 'static,
    > + Send
    + 'static,
) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let got = got.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            got.lock().unwrap().extend(batch);
            async { Ok::<_, std::io::Error>(()) }
        })
    };
    (got, writer)
}

fn durable_layer(queue: RedisQueue) -> WriteBehindLayer<u64, i64, MemoryStore> {
    WriteBehindLayer::<u64, i64, _>::new(
        Cache::new(MemoryStore::default()),
        "crash",
        Policy::default(),
    )
    .durable(queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_delivers_after_a_crash() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    // A live peer on the same queue, running before the crash.
    let queue = RedisQueue::new(&l2, "crash-test")
        .consumer("pod-b")
        .claim_after(Duration::from_millis(500));
    // The peer delivers nothing before the log has been looked at: the
    // first writes may be idle for `claim_after` before the last one is
    // acknowledged, and a claimed entry stays in the log, pending, until
    // it is delivered.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (gate, got) = (gate.clone(), got.clone());
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let (gate, got) = (gate.clone(), got.clone());
            async move {
                drop(gate.acquire().await.unwrap());
                got.lock().unwrap().extend(batch);
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let peer = durable_layer(queue.clone()).layer(writer);

    crash_after_acknowledging(&server, "crash-test", "pod-a", 500, false);
    assert_eq!(
        queue.len().await.unwrap(),
        500,
        "every acknowledged write is in the log"
    );
    assert_eq!(
        queue.pending().await.unwrap(),
        500,
        "and pending in the group"
    );
    gate.add_permits(1);

    // The peer claims what the dead consumer left once it has been idle
    // for `claim_after`.
    let delivered =
        tower_cache_tests::wait_until(PATIENCE, || async { got.lock().unwrap().len() >= 500 })
            .await;
    assert!(
        delivered.is_some(),
        "the dead consumer's writes were not delivered"
    );
    let mut got = got.lock().unwrap().clone();
    got.sort_by_key(|w| w.key);
    assert_eq!(got.len(), 500);
    assert!(
        got.iter()
            .enumerate()
            .all(|(n, w)| w.key == n as u64 && w.value == w.key as i64 * 10)
    );
    // Acknowledged in the group, then deleted: nothing left pending.
    let done = tower_cache_tests::wait_until(PATIENCE, || async {
        queue.pending().await.unwrap() == 0 && queue.len().await.unwrap() == 0
    })
    .await;
    assert!(
        done.is_some(),
        "delivered entries are acknowledged and leave the log"
    );
    peer.handle().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_the_same_consumer_name_delivers_at_once() {
    let server = RedisServer::start();
    crash_after_acknowledging(&server, "restart", "pod-a", 100, false);
    let l2 = redis_store(&server);
    // The default claim_after (30 s) has not passed: only the consumer's
    // own pending list gives these back this soon.
    let queue = RedisQueue::new(&l2, "restart").consumer("pod-a");
    let (got, writer) = recording_writer();
    let svc = durable_layer(queue.clone()).layer(writer);
    svc.handle().flush().await.unwrap();
    assert_eq!(got.lock().unwrap().len(), 100);
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert_eq!(queue.len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_consumer_keeps_its_writes_from_its_peers() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    let claim_after = Duration::from_secs(2);
    let (a_got, a_writer) = recording_writer();
    let a = durable_layer(
        RedisQueue::new(&l2, "shared")
            .consumer("pod-a")
            .claim_after(claim_after),
    )
    .max_delay(Duration::from_secs(3_600))
    .layer(a_writer);
    for key in 0..50u64 {
        a.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    let (b_got, b_writer) = recording_writer();
    let b = durable_layer(
        RedisQueue::new(&l2, "shared")
            .consumer("pod-b")
            .claim_after(claim_after),
    )
    .layer(b_writer);
    // Well past claim_after: b sweeps several times, a keeps its entries fresh.
    tokio::time::sleep(claim_after * 3).await;
    assert!(
        b_got.lock().unwrap().is_empty(),
        "a peer took a live consumer's writes"
    );
    a.handle().flush().await.unwrap();
    assert_eq!(a_got.lock().unwrap().len(), 50);
    let queue = RedisQueue::new(&l2, "shared");
    assert_eq!(queue.pending().await.unwrap(), 0);
    b.handle().shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn recovered_increments_do_not_hide_new_ones() {
    let server = RedisServer::start();
    crash_after_acknowledging(&server, "counter", "pod-a", 50, true);
    let claim_after = Duration::from_millis(100);
    // Idle long enough to be claimed as soon as the next instance starts.
    tokio::time::sleep(claim_after * 5).await;
    let l2 = redis_store(&server);
    let (got, writer) = recording_writer();
    let mut svc = durable_layer(
        RedisQueue::new(&l2, "counter")
            .consumer("pod-b")
            .claim_after(claim_after),
    )
    .max_delay(Duration::from_secs(3_600))
    .merge(|a, b| a + b)
    .layer(writer);
    let handle = svc.handle();
    // Acknowledged while the worker recovers (it has not run yet: one thread).
    let acks: Vec<_> = (0..5)
        .map(|_| {
            assert!(
                svc.poll_ready(&mut std::task::Context::from_waker(
                    futures::task::noop_waker_ref()
                ))
                .is_ready()
            );
            svc.call(Write::new(7, 1))
        })
        .collect();
    for ack in acks {
        ack.await.unwrap();
    }
    let total = || got.lock().unwrap().iter().map(|w| w.value).sum::<i64>();
    let recovered = tower_cache_tests::wait_until(PATIENCE, || async { total() == 50 }).await;
    assert!(
        recovered.is_some(),
        "the recovered increments reach the writer"
    );
    assert_eq!(
        handle.pending(&7),
        Some(5),
        "the new increments are still pending"
    );
    handle.flush().await.unwrap();
    assert_eq!(total(), 55);
    assert_eq!(handle.pending(&7), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_write_does_not_wait_for_its_caller_to_poll() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    let (got, writer) = recording_writer();
    let mut svc = durable_layer(RedisQueue::new(&l2, "unpolled"))
        .merge(|a, b| a + b)
        .layer(writer);
    svc.ready().await.unwrap();
    // Acknowledgement requested, answer not awaited yet.
    let held = svc.call(Write::new(7, 1));
    svc.clone().oneshot(Write::new(8, 1)).await.unwrap();
    tokio::time::timeout(PATIENCE, svc.handle().flush())
        .await
        .expect("the queue is not held up by an answer nobody polls")
        .unwrap();
    let mut keys: Vec<u64> = got.lock().unwrap().iter().map(|w| w.key).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec![7, 8]);
    held.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_increment_is_not_counted_as_pending() {
    let mut server = RedisServer::start();
    let l2 = redis_store(&server);
    let (got, writer) = recording_writer();
    let svc = durable_layer(RedisQueue::new(&l2, "refused"))
        .max_delay(Duration::from_secs(3_600))
        .merge(|a, b| a + b)
        .layer(writer);
    let handle = svc.handle();
    svc.clone().oneshot(Write::new(7, 1)).await.unwrap();
    server.stop();
    assert!(svc.clone().oneshot(Write::new(7, 5)).await.is_err());
    assert_eq!(
        handle.pending(&7),
        Some(1),
        "only the acknowledged increment"
    );
    handle.flush().await.unwrap();
    let got: Vec<(u64, i64)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|w| (w.key, w.value))
        .collect();
    assert_eq!(got, vec![(7, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_refuses_to_acknowledge_without_redis() {
    let mut server = RedisServer::start();
    let l2 = redis_store(&server);
    let got = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let got = got.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            got.lock().unwrap().extend(batch);
            async { Ok::<_, std::io::Error>(()) }
        })
    };
    let svc = WriteBehindLayer::<u64, i64, _>::new(
        Cache::new(MemoryStore::default()),
        "down",
        Policy::default(),
    )
    .durable(RedisQueue::new(&l2, "down"))
    .layer(writer);
    svc.clone().oneshot(Write::new(1, 1)).await.unwrap();
    server.stop();
    let err = svc.clone().oneshot(Write::new(2, 2)).await.unwrap_err();
    assert!(err.to_string().contains("not acknowledged"), "{err}");
    svc.handle().flush().await.unwrap();
    let keys: Vec<u64> = got.lock().unwrap().iter().map(|w| w.key).collect();
    assert_eq!(keys, vec![1], "only the acknowledged write is delivered");
}
