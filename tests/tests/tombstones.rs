//! Stale sets refused across instances: a key remove leaves a tombstone of
//! its version in Redis, and the write of a value whose load began before
//! that remove is refused by the store, whichever instance loaded it.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::Commands;
use tokio::sync::Notify;
use tower_cache::store::{MemoryStore, RedisStore, Store, TieredStore};
use tower_cache::{Cache, Entry, Fill, Loaded, Policy, Profile};
use tower_cache_tests::{PATIENCE, RedisServer, TestRedis, on_single_and_cluster};

/// Generous per-operation timeout: nothing here is about timeouts.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

fn entry(v: &str) -> Entry {
    Entry::new(Bytes::from(v.to_owned())).with_ttl(Duration::from_secs(600))
}

/// One instance's L2: a store of its own, on connections of its own.
fn redis_store(server: &impl TestRedis) -> RedisStore {
    server
        .store_builder()
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

on_single_and_cluster! {
    async fn a_write_loaded_before_a_remove_on_another_instance_is_refused(server) {
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
}

on_single_and_cluster! {
    async fn a_tombstone_never_moves_back_and_is_kept_max_load_time(server) {
        let store = server
            .store_builder()
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
        let _: () = conn.set("tc:x:{k}", second + 1_000_000_000).unwrap();
        store.remove("k").await.unwrap();
        let third: u64 = conn.get("tc:x:{k}").unwrap();
        assert_eq!(third, second + 1_000_000_000);
        let pttl: i64 = conn.pttl("tc:x:{k}").unwrap();
        assert!((1..=7_000).contains(&pttl), "kept {pttl} ms");
    }
}

on_single_and_cluster! {
    async fn garbage_in_a_tombstone_refuses_one_write_and_is_removed(server) {
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

/// One instance of a service: a cache over an L1 and an L2 of its own,
/// on connections of its own, as a process of its own would have.
async fn instance(server: &impl TestRedis) -> Cache<TieredStore> {
    let store = TieredStore::builder(MemoryStore::new(16 << 20), redis_store(server))
        .l1_ttl(Duration::from_secs(3_600))
        .build();
    store.ready().await;
    Cache::new(store)
}

fn profile() -> Profile {
    Profile::new("product", Policy::ttl(Duration::from_secs(600)).jitter(0.0))
}

/// Reads the product row from `db` when called; with `gate`, tells
/// `started` once it has read and waits for `gate` before answering.
fn db_load(
    db: &Arc<Mutex<&'static str>>,
    gate: Option<(Arc<Notify>, Arc<Notify>)>,
) -> impl FnOnce() -> BoxFuture<'static, Result<Loaded<()>, std::io::Error>> + Send + 'static {
    let db = db.clone();
    move || {
        Box::pin(async move {
            let value = *db.lock().unwrap();
            if let Some((started, gate)) = gate {
                started.notify_one();
                gate.notified().await;
            }
            Ok(Loaded::Store(Fill::new(value)))
        })
    }
}

fn text(entry: Option<Entry>) -> Option<String> {
    entry.map(|e| String::from_utf8(e.value().to_vec()).unwrap())
}

/// A load of the product on `loader` that reads the old row, then, while
/// it is still running, a write of the row and a remove of the key on
/// `remover`; the load then finishes and stores. What `loader`'s caller
/// got.
async fn remove_during_a_load<St: Store>(
    loader: &Cache<St>,
    remover: &Cache<St>,
    db: &Arc<Mutex<&'static str>>,
) -> Option<String> {
    let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow = tokio::spawn({
        let (cache, load) = (
            loader.clone(),
            db_load(db, Some((started.clone(), gate.clone()))),
        );
        async move { cache.fetch("products/1", &profile(), load).await.unwrap() }
    });
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .unwrap();
    *db.lock().unwrap() = "new";
    remover.remove("products/1").await;
    gate.notify_one();
    let own = tokio::time::timeout(PATIENCE, slow).await.unwrap().unwrap();
    text(own.entry().cloned())
}

on_single_and_cluster! {
    async fn a_slow_load_overtaken_by_a_write_and_remove_elsewhere_is_served_nowhere(server) {
        let (a, b) = (instance(&server).await, instance(&server).await);
        let db = Arc::new(Mutex::new("old"));
        let own = remove_during_a_load(&a, &b, &db).await;
        assert_eq!(
            own.as_deref(),
            Some("old"),
            "A's caller, who asked before the write, gets what A read"
        );
        // Neither L2 nor either L1 has A's old value.
        let l2 = redis_store(&server);
        assert_eq!(value(&l2, "products/1").await, None, "L2 refused it");
        for (name, cache) in [("A", &a), ("B", &b)] {
            let l1 = text(cache.store().l1().get("products/1").await.unwrap());
            assert_eq!(l1, None, "{name}'s L1");
        }
        // And every read from now on is the new row.
        for cache in [&a, &b, &a] {
            let fetched = cache
                .fetch("products/1", &profile(), db_load(&db, None))
                .await
                .unwrap();
            assert_eq!(text(fetched.entry().cloned()).as_deref(), Some("new"));
        }
        assert_eq!(value(&l2, "products/1").await.as_deref(), Some("new"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_store_of_one_process_a_remove_during_a_load_still_wins() {
    let cache = Cache::new(MemoryStore::default());
    let db = Arc::new(Mutex::new("old"));
    remove_during_a_load(&cache, &cache, &db).await;
    assert_eq!(text(cache.store().get("products/1").await.unwrap()), None);
    let fetched = cache
        .fetch("products/1", &profile(), db_load(&db, None))
        .await
        .unwrap();
    assert_eq!(text(fetched.entry().cloned()).as_deref(), Some("new"));
}
