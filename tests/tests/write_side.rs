//! The write layers against a real Redis: the cache in L2, and write-behind's
//! durable log surviving a crash.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{ServiceExt, service_fn};
use tower_cache::store::{MemoryStore, RedisQueue, RedisStore, TieredStore};
use tower_cache::{
    Cache, CacheStatus, Policy, ReadThroughLayer, Write, WriteBehindLayer, WriteThroughLayer,
};
use tower_cache_tests::RedisServer;
use tower_layer::Layer;

fn tiered_cache(server: &RedisServer) -> Cache<TieredStore> {
    Cache::new(TieredStore::new(
        MemoryStore::default(),
        RedisStore::new(server.url()).unwrap(),
    ))
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
    let seen = tower_cache_tests::wait_until(Duration::from_millis(200), || async {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_delivers_after_a_crash() {
    let server = RedisServer::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_write_behind_crash"))
        .env("REDIS_URL", server.url())
        .env("QUEUE", "crash-test")
        .env("WRITES", "500")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "acknowledged 500");
    // A crash between acknowledgement and delivery.
    child.kill().unwrap();
    child.wait().unwrap();

    let l2 = RedisStore::new(server.url()).unwrap();
    let queue = RedisQueue::new(&l2, "crash-test");
    assert_eq!(queue.len().await.unwrap(), 500);
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
        "crash",
        Policy::default(),
    )
    .durable(queue.clone())
    .layer(writer);
    svc.handle().flush().await.unwrap();
    let mut got = got.lock().unwrap().clone();
    got.sort_by_key(|w| w.key);
    assert_eq!(got.len(), 500);
    assert!(got.iter().all(|w| w.value == w.key as i64 * 10));
    assert_eq!(
        queue.len().await.unwrap(),
        0,
        "delivered entries leave the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_refuses_to_acknowledge_without_redis() {
    let mut server = RedisServer::start();
    let l2 = RedisStore::builder(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
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
