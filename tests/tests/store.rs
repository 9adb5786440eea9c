//! The stores against a real redis-server.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{MemoryStore, RedisStore, Store, StoreError, TieredStore};
use tower_cache_tests::{RedisServer, wait_until};

fn entry(v: &str, ttl_ms: u64) -> Entry {
    Entry::new(Bytes::from(v.to_owned())).with_ttl(Duration::from_millis(ttl_ms))
}

fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .op_timeout(Duration::from_millis(200))
        .build()
        .expect("valid URL")
}

fn tiered(server: &RedisServer) -> TieredStore {
    TieredStore::builder(MemoryStore::new(1 << 20), redis_store(server))
        .retry_interval(Duration::from_millis(200))
        .build()
}

async fn value(store: &impl Store, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .expect("store read")
        .map(|e| String::from_utf8(e.value.to_vec()).expect("utf8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_round_trip_keeps_payload_and_metadata() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let e = entry("hello", 60_000)
        .with_stale(Duration::from_secs(10))
        .with_tags(["a", "b"]);
    store.put("k", e.clone()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(e));
    store.remove("k").await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(store.get("never-stored").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_expires_at_end_of_stale_window() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    store
        .put("k", entry("v", 150).with_stale(Duration::from_millis(150)))
        .await
        .unwrap();
    let pttl: i64 = server.connection().pttl("tc:e:k").unwrap();
    assert!(
        pttl > 0 && pttl <= 300,
        "Redis-side expiry is the stale window end, got {pttl}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stale = store.get("k").await.unwrap().expect("stale but servable");
    assert!(!stale.is_fresh_at(tower_cache::clock::now_ms()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.get("k").await.unwrap(), None);
    let exists: bool = server.connection().exists("tc:e:k").unwrap();
    assert!(!exists, "Redis dropped the key itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_redis_reads_as_miss_and_is_removed() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let mut conn = server.connection();

    let valid = entry("v", 60_000).encode();
    let mut unknown_version = valid.to_vec();
    unknown_version[2] = 42;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\xff\x00 definitely not an entry".to_vec()),
        ("empty", Vec::new()),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        ("version", unknown_version),
    ];
    for (name, bytes) in cases {
        let _: () = conn.set(format!("tc:e:{name}"), bytes).unwrap();
        assert_eq!(
            store.get(name).await.unwrap(),
            None,
            "{name} reads as a miss"
        );
        let exists: bool = conn.exists(format!("tc:e:{name}")).unwrap();
        assert!(!exists, "{name} was removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_invalidation_drops_tagged_entries_only() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    store
        .put(
            "p1",
            entry("1", 60_000).with_tags(["product:1", "products"]),
        )
        .await
        .unwrap();
    store
        .put(
            "p2",
            entry("2", 60_000).with_tags(["product:2", "products"]),
        )
        .await
        .unwrap();
    store.put("u1", entry("u", 60_000)).await.unwrap();

    store.remove_tag("product:1").await.unwrap();
    assert_eq!(value(&store, "p1").await, None);
    assert_eq!(value(&store, "p2").await.as_deref(), Some("2"));

    store.remove_tag("products").await.unwrap();
    assert_eq!(value(&store, "p2").await, None);
    assert_eq!(value(&store, "u1").await.as_deref(), Some("u"));

    // An entry stored after the invalidation is served.
    tokio::time::sleep(Duration::from_millis(2)).await;
    store
        .put("p1", entry("1b", 60_000).with_tags(["product:1"]))
        .await
        .unwrap();
    assert_eq!(value(&store, "p1").await.as_deref(), Some("1b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_loaded_before_invalidation_but_written_after_is_rejected() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    // A loader read the origin...
    let loaded = entry("old", 60_000).with_tags(["product:1"]);
    tokio::time::sleep(Duration::from_millis(2)).await;
    // ...a writer changed it and invalidated the tag...
    store.remove_tag("product:1").await.unwrap();
    // ...and only then does the loader's write land.
    store.put("p1", loaded).await.unwrap();
    assert_eq!(value(&store, "p1").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tag_invalidations_never_move_the_timestamp_back() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.remove_tag("hot").await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stamp: u64 = server.connection().get("tc:t:hot").unwrap();
    assert!(stamp <= tower_cache::clock::now_ms());
    let before = entry("x", 60_000)
        .with_tags(["hot"])
        .with_stored_at(stamp - 1);
    store.put("k", before).await.unwrap();
    assert_eq!(value(&store, "k").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_times_out_instead_of_stalling() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    store.put("k", entry("v", 60_000)).await.unwrap();
    let url = server.url();
    let sleeper = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg("1").query(&mut c);
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = store.get("k").await;
    assert!(matches!(got, Err(StoreError::Timeout)), "{got:?}");
    sleeper.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_builds_while_redis_is_down_and_connects_later() {
    let mut server = RedisServer::start();
    server.stop();
    let store = redis_store(&server);
    assert!(store.get("k").await.is_err());
    server.restart();
    let ok = wait_until(Duration::from_secs(5), || async {
        store.put("k", entry("v", 60_000)).await.is_ok()
    })
    .await;
    assert!(ok.is_some(), "store reconnected");
    assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_hit_fills_l1() {
    let server = RedisServer::start();
    let writer = tiered(&server);
    let reader = tiered(&server);
    writer.put("k", entry("v", 60_000)).await.unwrap();

    assert_eq!(reader.l1().get("k").await.unwrap(), None);
    assert_eq!(value(&reader, "k").await.as_deref(), Some("v"));
    assert_eq!(reader.stats().l2_hits, 1);
    assert_eq!(
        value(reader.l1(), "k").await.as_deref(),
        Some("v"),
        "L2 hit copied into L1"
    );
    assert_eq!(value(&reader, "k").await.as_deref(), Some("v"));
    assert_eq!(reader.stats().l1_hits, 1);
    assert_eq!(reader.stats().l2_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_copy_never_outlives_the_entry() {
    let server = RedisServer::start();
    let store = TieredStore::builder(MemoryStore::new(1 << 20), redis_store(&server))
        .l1_ttl(Duration::from_secs(60))
        .build();
    store.put("k", entry("v", 100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.l1().get("k").await.unwrap(), None);
    assert_eq!(store.get("k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_reaches_other_instance_within_100ms() {
    let server = RedisServer::start();
    let a = tiered(&server);
    let b = tiered(&server);
    tokio::time::timeout(Duration::from_secs(5), async {
        a.ready().await;
        b.ready().await;
    })
    .await
    .expect("both subscribed");

    a.put("k", entry("v", 60_000).with_tags(["t"]))
        .await
        .unwrap();
    a.put("k2", entry("v2", 60_000).with_tags(["t"]))
        .await
        .unwrap();
    assert_eq!(value(&b, "k").await.as_deref(), Some("v"));
    assert_eq!(value(&b, "k2").await.as_deref(), Some("v2"));
    assert!(b.l1().get("k").await.unwrap().is_some());

    a.remove("k").await.unwrap();
    let took = wait_until(Duration::from_millis(100), || async {
        b.l1().get("k").await.unwrap().is_none()
    })
    .await;
    assert!(
        took.is_some(),
        "key invalidation reached B's L1 within 100 ms"
    );

    a.remove_tag("t").await.unwrap();
    let took = wait_until(Duration::from_millis(100), || async {
        b.l1().get("k2").await.unwrap().is_none()
    })
    .await;
    assert!(
        took.is_some(),
        "tag invalidation reached B's L1 within 100 ms"
    );
    assert!(b.stats().invalidations_received >= 2);
    assert_eq!(
        a.stats().invalidations_received,
        0,
        "A ignores its own messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_one_instance_drops_stale_l1_copy_on_another() {
    let server = RedisServer::start();
    let a = tiered(&server);
    let b = tiered(&server);
    a.ready().await;
    b.ready().await;
    a.put("k", entry("old", 60_000)).await.unwrap();
    assert_eq!(value(&b, "k").await.as_deref(), Some("old"));
    a.put("k", entry("new", 60_000)).await.unwrap();
    let took = wait_until(Duration::from_millis(100), || async {
        value(&b, "k").await.as_deref() == Some("new")
    })
    .await;
    assert!(took.is_some(), "B sees the new value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_never_fails_callers_and_recovers() {
    let mut server = RedisServer::start();
    let store = tiered(&server);
    let other = tiered(&server);
    store.ready().await;
    other.ready().await;
    store.put("warm", entry("w", 60_000)).await.unwrap();

    server.stop();
    // While Redis is down every call succeeds, served from L1.
    for i in 0..20 {
        assert_eq!(value(&store, "warm").await.as_deref(), Some("w"));
        store
            .put(&format!("new{i}"), entry("n", 60_000))
            .await
            .unwrap();
        assert_eq!(
            value(&store, &format!("new{i}")).await.as_deref(),
            Some("n")
        );
        assert_eq!(value(&store, "cold").await, None);
        store.remove("gone").await.unwrap();
        store.remove_tag("tag").await.unwrap();
    }
    let stats = store.stats();
    assert!(stats.l2_errors >= 3, "{stats:?}");
    assert_eq!(stats.outages, 1, "one outage, logged once: {stats:?}");
    assert!(
        stats.l2_skipped > 0,
        "breaker stops calling Redis: {stats:?}"
    );
    assert!(!store.l2_available());

    server.restart();
    let recovered = wait_until(Duration::from_secs(5), || async {
        store.put("after", entry("a", 60_000)).await.unwrap();
        store.l2_available() && other.get("after").await.unwrap().is_some()
    })
    .await;
    assert!(recovered.is_some(), "recovered within 5 s");
    // L1 was cleared on recovery: what it held may be stale.
    assert_eq!(store.l1().get("warm").await.unwrap(), None);

    // The invalidation channel is back too.
    let resubscribed = wait_until(Duration::from_secs(5), || async {
        store.stats().subscriptions >= 2 && other.stats().subscriptions >= 2
    })
    .await;
    assert!(resubscribed.is_some(), "re-subscribed");
    assert_eq!(value(&other, "after").await.as_deref(), Some("a"));
    store.remove("after").await.unwrap();
    let took = wait_until(Duration::from_millis(100), || async {
        other.l1().get("after").await.unwrap().is_none()
    })
    .await;
    assert!(took.is_some(), "invalidations flow again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_store_behind_arc_dyn() {
    let server = RedisServer::start();
    let stores: Vec<tower_cache::store::SharedStore> = vec![
        tower_cache::store::SharedStore::new(MemoryStore::new(1 << 20)),
        tower_cache::store::SharedStore::new(redis_store(&server)),
        tower_cache::store::SharedStore::new(tiered(&server)),
    ];
    for (i, store) in stores.iter().enumerate() {
        let key = format!("k{i}");
        store.put(&key, entry("v", 60_000)).await.unwrap();
        assert_eq!(value(store, &key).await.as_deref(), Some("v"));
        store.remove(&key).await.unwrap();
        assert_eq!(value(store, &key).await, None);
    }
}
