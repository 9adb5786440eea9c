//! What the shared cache guarantees against a corrupted or hostile Redis
//! and against faults: bytes it cannot vouch for are misses, removed;
//! invalidations and writes that fail are never silently lost; namespaces
//! never overlap; a dead or paused Redis never makes a request wait.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{MemoryStore, RedisStore, Store, StoreError, TieredStore};
use tower_cache_tests::{PATIENCE as DEADLINE, RedisServer, wait_until};

fn entry(v: &str) -> Entry {
    Entry::new(Bytes::from(v.to_owned())).with_ttl(Duration::from_secs(60))
}

/// A store whose operations time out only when Redis really stops
/// answering, however loaded the machine: `op_timeout` long.
fn redis_store_timing_out_after(server: &RedisServer, op_timeout: Duration) -> RedisStore {
    RedisStore::builder(server.url())
        .op_timeout(op_timeout)
        .retry_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

fn redis_store(server: &RedisServer) -> RedisStore {
    redis_store_timing_out_after(server, Duration::from_secs(5))
}

fn tiered(server: &RedisServer, op_timeout: Duration) -> TieredStore {
    TieredStore::builder(
        MemoryStore::new(1 << 20),
        redis_store_timing_out_after(server, op_timeout),
    )
    .retry_interval(Duration::from_millis(100))
    .build()
}

async fn value(store: &impl Store, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .ok()
        .flatten()
        .map(|e| String::from_utf8(e.value().to_vec()).unwrap())
}

/// Pauses every client of `server` for `ms` (`CLIENT PAUSE ... ALL`).
fn pause(server: &RedisServer, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query(&mut server.connection())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_redis_is_a_miss_and_is_removed() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    store
        .put("users/9", entry(r#"{"id":9,"name":"Nine"}"#))
        .await
        .unwrap();
    let mut conn = server.connection();
    let mut raw: Vec<u8> = conn.get("tc:e:{users/9}").unwrap();
    // A byte of the body, as a bit flip in memory or on the wire would.
    let at = raw.len() - 8 - 10;
    raw[at] ^= 0x20;
    let _: () = conn.set("tc:e:{users/9}", raw).unwrap();
    assert_eq!(value(&store, "users/9").await, None, "never served");
    let exists: bool = conn.exists("tc:e:{users/9}").unwrap();
    assert!(!exists, "removed from Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_entry_copied_in_redis_is_a_miss() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    store.put("users/15", entry("user 15")).await.unwrap();
    store.put("users/73", entry("user 73")).await.unwrap();
    let mut conn = server.connection();
    let other: Vec<u8> = conn.get("tc:e:{users/73}").unwrap();
    let _: () = conn.set("tc:e:{users/15}", other).unwrap();
    assert_eq!(value(&store, "users/15").await, None, "not user 73");
    assert_eq!(value(&store, "users/73").await.as_deref(), Some("user 73"));
    let exists: bool = conn.exists("tc:e:{users/15}").unwrap();
    assert!(!exists, "removed from Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_another_type_read_as_misses_and_never_block_an_invalidation() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let mut conn = server.connection();
    // An entry key holding a list: a miss, removed, and writable again.
    let _: () = conn.rpush("tc:e:{k}", "x").unwrap();
    assert_eq!(value(&store, "k").await, None);
    store.put("k", entry("v")).await.unwrap();
    assert_eq!(value(&store, "k").await.as_deref(), Some("v"));

    // A tag key holding a list: the entries it tags are not served (what
    // their invalidation state is cannot be known) ...
    store
        .put("tagged", entry("old").with_tags(["product:12"]))
        .await
        .unwrap();
    let _: () = conn.rpush("{tc:}t:product:12", "x").unwrap();
    assert_eq!(value(&store, "tagged").await, None);
    // ... and an invalidation of the tag lands anyway.
    store
        .put("tagged", entry("old").with_tags(["product:12"]))
        .await
        .unwrap();
    let _: () = conn.del("{tc:}t:product:12").unwrap();
    let _: () = conn.rpush("{tc:}t:product:12", "x").unwrap();
    store.remove_tag("product:12").await.unwrap();
    assert_eq!(store.pending_invalidations(), 0, "applied, not deferred");
    let stamp: String = conn.get("{tc:}t:product:12").unwrap();
    assert!(stamp.parse::<u64>().is_ok(), "a timestamp now: {stamp}");
    assert_eq!(value(&store, "tagged").await, None, "invalidated");
}

/// A write Redis did not take (paused) becomes a pending remove of its key,
/// replayed when Redis answers again: Redis never serves the value the
/// write replaced, to this instance or another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_redis_did_not_take_never_lets_the_old_value_back() {
    let server = RedisServer::start();
    // A's write times out within the pause; B never times out.
    let a = tiered(&server, Duration::from_millis(500));
    let b = tiered(&server, Duration::from_secs(10));
    a.ready().await;
    b.ready().await;
    a.put("k", entry("v1")).await.unwrap();
    assert_eq!(value(&b, "k").await.as_deref(), Some("v1"));

    pause(&server, 3_000);
    a.put("k", entry("v2")).await.unwrap();
    assert_eq!(value(&a, "k").await.as_deref(), Some("v2"), "from L1");

    let replayed = wait_until(DEADLINE, || async {
        let _ = a.get("probe").await; // a call lets the replay run
        a.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed.is_some(), "{:?}", a.stats());
    let fresh = redis_store(&server);
    assert_ne!(value(&fresh, "k").await.as_deref(), Some("v1"), "L2");
    let dropped = wait_until(DEADLINE, || async {
        value(&b, "k").await.as_deref() != Some("v1")
    })
    .await;
    assert!(dropped.is_some(), "the other instance drops v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_alone_removes_and_writes_during_an_outage_are_replayed() {
    let mut server = RedisServer::start();
    let store = redis_store(&server);
    store.put("gone", entry("g")).await.unwrap();
    store
        .put("tagged", entry("t").with_tags(["t1"]))
        .await
        .unwrap();
    store.put("overwritten", entry("old")).await.unwrap();
    store.put("kept", entry("k")).await.unwrap();
    server.save();
    server.stop();

    store.remove("gone").await.unwrap();
    store.remove_tag("t1").await.unwrap();
    assert!(store.put("overwritten", entry("new")).await.is_err());
    assert_eq!(store.pending_invalidations(), 3);

    server.restart(); // with every entry still in it
    let replayed = wait_until(DEADLINE, || async {
        let _ = store.get("probe").await;
        store.available() && store.pending_invalidations() == 0
    })
    .await;
    assert!(replayed.is_some(), "replayed");
    assert_eq!(value(&store, "gone").await, None);
    assert_eq!(value(&store, "tagged").await, None);
    assert_eq!(
        value(&store, "overwritten").await,
        None,
        "never the old value"
    );
    assert_eq!(value(&store, "kept").await.as_deref(), Some("k"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_alone_stops_calling_a_paused_redis() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(Duration::from_millis(300))
        .retry_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    store.put("k", entry("v")).await.unwrap();
    pause(&server, 60_000); // the server is killed at the end of the test
    let got = store.get("k").await;
    assert!(matches!(got, Err(StoreError::Timeout)), "{got:?}");
    assert!(
        !store.available(),
        "a timeout with nothing answered meanwhile opens the breaker"
    );
    for _ in 0..100 {
        let got = store.get("k").await;
        assert!(
            matches!(got, Err(StoreError::Unavailable)),
            "answered at once, without Redis: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_opens_the_breaker_at_once_and_is_used_again_when_back() {
    let mut server = RedisServer::start();
    let store = redis_store(&server);
    store.put("k", entry("v")).await.unwrap();
    server.stop();
    let got = store.get("k").await;
    assert!(got.is_err(), "{got:?}");
    assert!(!store.available(), "one refused connection is an outage");
    assert!(matches!(store.get("k").await, Err(StoreError::Unavailable)));
    server.restart();
    let back = wait_until(DEADLINE, || async {
        store.put("k2", entry("v2")).await.is_ok() && store.available()
    })
    .await;
    assert!(back.is_some(), "used again");
    assert_eq!(value(&store, "k2").await.as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prefix_is_the_start_of_another_prefixes_keys() {
    let server = RedisServer::start();
    for overlapping in ["app:e:", "app:e", ":", "", "a:b:"] {
        let built = RedisStore::builder(server.url())
            .prefix(overlapping)
            .build();
        assert!(
            matches!(built, Err(StoreError::Config(_))),
            "{overlapping:?} accepted"
        );
    }
    let app = RedisStore::builder(server.url())
        .prefix("app:")
        .build()
        .unwrap();
    let same = RedisStore::builder(server.url())
        .prefix("app")
        .build()
        .unwrap();
    let other = RedisStore::builder(server.url())
        .prefix("app.e")
        .build()
        .unwrap();
    assert_eq!(app.prefix(), "app:");
    assert_eq!(same.prefix(), "app:");
    app.put("k", entry("app")).await.unwrap();
    other.put("k", entry("other")).await.unwrap();
    assert_eq!(value(&app, "k").await.as_deref(), Some("app"));
    assert_eq!(value(&other, "k").await.as_deref(), Some("other"));
    assert_eq!(value(&same, "k").await.as_deref(), Some("app"));
}
