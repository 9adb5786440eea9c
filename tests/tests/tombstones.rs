//! Stale sets refused across instances: a key remove leaves a tombstone of
//! its version in Redis, and the write of a value whose load began before
//! that remove is refused by the store, whichever instance loaded it.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{RedisStore, Store};
use tower_cache_tests::RedisServer;

/// Generous per-operation timeout: nothing here is about timeouts.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

fn entry(v: &str) -> Entry {
    Entry::new(Bytes::from(v.to_owned())).with_ttl(Duration::from_secs(600))
}

/// One instance's L2: a store of its own, on connections of its own.
fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .op_timeout(OP_TIMEOUT)
        .build()
        .unwrap()
}

async fn value(store: &impl Store, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .unwrap()
        .map(|e| String::from_utf8(e.value().to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_loaded_before_a_remove_on_another_instance_is_refused() {
    let server = RedisServer::start();
    let (a, b) = (redis_store(&server), redis_store(&server));
    b.put("k", entry("first")).await.unwrap();
    // A reads the version, then the origin...
    let loaded_at = a.version().await.unwrap();
    // ...B writes the origin and removes the key...
    b.remove("k").await.unwrap();
    // ...and A's write of what it read comes after.
    a.put("k", entry("old").with_version(loaded_at))
        .await
        .unwrap();
    assert_eq!(value(&a, "k").await, None, "the old value is refused");
    assert_eq!(value(&b, "k").await, None);
    // A load that began after the remove is stored.
    let later = a.version().await.unwrap();
    assert!(later > loaded_at, "a remove moves the version forward");
    a.put("k", entry("new").with_version(later)).await.unwrap();
    assert_eq!(value(&b, "k").await.as_deref(), Some("new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_never_moves_back_and_is_kept_max_load_time() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(OP_TIMEOUT)
        .max_load_time(Duration::from_secs(7))
        .build()
        .unwrap();
    store.remove("k").await.unwrap();
    let mut conn = server.connection();
    let first: u64 = conn.get("tc:x:{k}").unwrap();
    store.remove("k").await.unwrap();
    let second: u64 = conn.get("tc:x:{k}").unwrap();
    assert!(second > first, "{second} after {first}");
    // A later version somehow there already is kept.
    let _: () = conn.set("tc:x:{k}", second + 1_000).unwrap();
    store.remove("k").await.unwrap();
    let third: u64 = conn.get("tc:x:{k}").unwrap();
    assert_eq!(third, second + 1_000);
    let pttl: i64 = conn.pttl("tc:x:{k}").unwrap();
    assert!((1..=7_000).contains(&pttl), "kept {pttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_tombstone_refuses_one_write_and_is_removed() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let mut conn = server.connection();
    for garbage in ["not a version", "list"] {
        if garbage == "list" {
            let _: () = conn.rpush("tc:x:{k}", "x").unwrap();
        } else {
            let _: () = conn.set("tc:x:{k}", garbage).unwrap();
        }
        let version = store.version().await.unwrap();
        store
            .put("k", entry("v").with_version(version))
            .await
            .unwrap();
        assert_eq!(value(&store, "k").await, None, "{garbage}: refused");
        let left: bool = conn.exists("tc:x:{k}").unwrap();
        assert!(!left, "{garbage}: removed");
        store
            .put("k", entry("v").with_version(version))
            .await
            .unwrap();
        assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
        store.remove("k").await.unwrap();
        let _: () = conn.del("tc:x:{k}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_that_missed_redis_leaves_its_tombstone_when_replayed() {
    let mut server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(Duration::from_millis(300))
        .retry_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let loaded_at = store.version().await.unwrap();
    server.save();
    server.stop();
    // The remove misses Redis and is kept for replay.
    store.remove("k").await.unwrap();
    assert_eq!(store.pending_invalidations(), 1);
    server.restart();
    // The first write once Redis is back replays the remove before it:
    // the value loaded before the remove is refused.
    let mut stored = false;
    for _ in 0..200 {
        let put = store.put("k", entry("old").with_version(loaded_at)).await;
        if put.is_ok() && store.pending_invalidations() == 0 {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "Redis came back");
    assert_eq!(value(&store, "k").await, None, "the old value is refused");
    let tombstone: bool = server.connection().exists("tc:x:{k}").unwrap();
    assert!(tombstone);
}
