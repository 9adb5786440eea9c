//! The stores against a real redis-server.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{MemoryStore, RedisStore, Store, StoreError, TieredStore};
use tower_cache_tests::{PATIENCE, RedisServer, TestRedis, on_single_and_cluster, wait_until};

fn entry(v: &str, ttl_ms: u64) -> Entry {
    Entry::new(Bytes::from(v.to_owned())).with_ttl(Duration::from_millis(ttl_ms))
}

/// Generous per-operation timeout: only the test of the timeout itself
/// wants a short one.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

fn redis_store(server: &impl TestRedis) -> RedisStore {
    server
        .store_builder()
        .op_timeout(OP_TIMEOUT)
        .build()
        .expect("valid URL")
}

/// L1 copies outlive every wait here: only an invalidation message (or a
/// recovery) drops one from L1.
fn tiered(server: &impl TestRedis) -> TieredStore {
    TieredStore::builder(MemoryStore::new(1 << 20), redis_store(server))
        .retry_interval(Duration::from_millis(200))
        .l1_ttl(Duration::from_secs(3_600))
        .build()
}

async fn value(store: &impl Store, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .expect("store read")
        .map(|e| String::from_utf8(e.value().to_vec()).expect("utf8"))
}

on_single_and_cluster! {
    async fn redis_round_trip_keeps_payload_and_metadata(server) {
        let store = redis_store(&server);
        let e = entry("hello", 60_000)
            .with_stale(Duration::from_secs(10))
            .with_tags(["a", "b"])
            .with_version(store.version().await.unwrap());
        store.put("k", e.clone()).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(e));
        store.remove("k").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.get("never-stored").await.unwrap(), None);
    }
}

on_single_and_cluster! {
    async fn redis_expires_at_end_of_stale_window(server) {
        let store = redis_store(&server);
        let mut conn = server.connection();
        // Fresh until a second ago, servable for a minute more.
        let before = tower_cache::now_ms();
        let e = entry("v", 1_000)
            .with_stale(Duration::from_secs(60))
            .with_stored_at(before - 2_000);
        store.put("k", e.clone()).await.unwrap();
        let pttl: i64 = conn.pttl("tc:e:{k}").unwrap();
        let after = tower_cache::now_ms();
        // What was left of the stale window between the two clock reads, give
        // or take a millisecond of rounding.
        let (least, most) = (e.stale_until() - after - 1, e.stale_until() - before + 1);
        assert!(
            (least as i64..=most as i64).contains(&pttl),
            "Redis-side expiry is the stale window end ({least}..={most} ms away), got {pttl}"
        );
        let stale = store.get("k").await.unwrap().expect("stale but servable");
        assert!(!stale.is_fresh_at(tower_cache::now_ms()));

        // An entry whose stale window ends 300 ms after it is stored is gone
        // once that has passed.
        store
            .put(
                "short",
                entry("v", 150).with_stale(Duration::from_millis(150)),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.get("short").await.unwrap(), None);
        let exists: bool = conn.exists("tc:e:{short}").unwrap();
        assert!(!exists, "Redis dropped the key itself");
    }
}

on_single_and_cluster! {
    async fn garbage_in_redis_reads_as_miss_and_is_removed(server) {
        let store = redis_store(&server);
        let mut conn = server.connection();

        let valid = entry("v", 60_000).encode("tc:e:{truncated}");
        let mut unknown_version = valid.to_vec();
        unknown_version[2] = 42;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"\xff\x00 definitely not an entry".to_vec()),
            ("empty", Vec::new()),
            ("truncated", valid[..valid.len() - 1].to_vec()),
            ("version", unknown_version),
        ];
        for (name, bytes) in cases {
            let _: () = conn.set(format!("tc:e:{{{name}}}"), bytes).unwrap();
            assert_eq!(
                store.get(name).await.unwrap(),
                None,
                "{name} reads as a miss"
            );
            let exists: bool = conn.exists(format!("tc:e:{{{name}}}")).unwrap();
            assert!(!exists, "{name} was removed");
        }
    }
}

on_single_and_cluster! {
    async fn tag_invalidation_drops_tagged_entries_only(server) {
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
        store
            .put("p1", entry("1b", 60_000).with_tags(["product:1"]))
            .await
            .unwrap();
        assert_eq!(value(&store, "p1").await.as_deref(), Some("1b"));
    }
}

on_single_and_cluster! {
    async fn value_loaded_before_invalidation_but_written_after_is_rejected(server) {
        let store = redis_store(&server);
        // A loader read the store's version, then the origin...
        let loaded = entry("old", 60_000)
            .with_tags(["product:1"])
            .with_version(store.version().await.unwrap());
        // ...a writer changed it and invalidated the tag...
        store.remove_tag("product:1").await.unwrap();
        // ...and only then does the loader's write land.
        store.put("p1", loaded).await.unwrap();
        assert_eq!(value(&store, "p1").await, None);
    }
}

on_single_and_cluster! {
    async fn concurrent_tag_invalidations_never_move_the_timestamp_back(server) {
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
        let stamp: u64 = server.connection().get("{tc:}t:hot").unwrap();
        assert_eq!(stamp, store.version().await.unwrap(), "the latest version");
        let before = entry("x", 60_000)
            .with_tags(["hot"])
            .with_version(stamp - 1);
        store.put("k", before).await.unwrap();
        assert_eq!(value(&store, "k").await, None);
    }
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
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg("2").query(&mut c);
    });
    // Reads are answered until the sleep begins; then one must time out
    // instead of waiting for Redis to wake up.
    let timed_out = wait_until(PATIENCE, || async {
        match store.get("k").await {
            Err(StoreError::Timeout) => true,
            Ok(Some(_)) => false,
            other => panic!("neither the entry nor a timeout: {other:?}"),
        }
    })
    .await;
    assert!(timed_out.is_some(), "no read timed out while Redis slept");
    sleeper.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_builds_while_redis_is_down_and_connects_later() {
    let mut server = RedisServer::start();
    server.stop();
    let store = redis_store(&server);
    assert!(store.get("k").await.is_err());
    server.restart();
    let ok = wait_until(PATIENCE, || async {
        store.put("k", entry("v", 60_000)).await.is_ok()
    })
    .await;
    assert!(ok.is_some(), "store reconnected");
    assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
}

on_single_and_cluster! {
    async fn l2_hit_fills_l1(server) {
        let writer = tiered(&server);
        let reader = tiered(&server);
        writer.ready().await;
        reader.ready().await;
        writer.put("k", entry("v", 60_000)).await.unwrap();
        // The write's invalidation message reaches the reader before it reads.
        let delivered = wait_until(PATIENCE, || async {
            reader.stats().invalidations_received >= 1
        })
        .await;
        assert!(delivered.is_some());

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
}

on_single_and_cluster! {
    async fn l1_copy_never_outlives_the_entry(server) {
        let store = TieredStore::builder(MemoryStore::new(1 << 20), redis_store(&server))
            .l1_ttl(Duration::from_secs(60))
            .build();
        store.put("k", entry("v", 100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(store.l1().get("k").await.unwrap(), None);
        assert_eq!(store.get("k").await.unwrap(), None);
    }
}

on_single_and_cluster! {
    /// B's L1 copies would live for an hour: only A's messages drop them.
    async fn invalidation_reaches_other_instance_long_before_its_l1_ttl(server) {
        let a = tiered(&server);
        let b = tiered(&server);
        tokio::time::timeout(PATIENCE, async {
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
        let took = wait_until(PATIENCE, || async {
            b.l1().get("k").await.unwrap().is_none()
        })
        .await;
        assert!(took.is_some(), "key invalidation reached B's L1");

        a.remove_tag("t").await.unwrap();
        let took = wait_until(PATIENCE, || async {
            b.l1().get("k2").await.unwrap().is_none()
        })
        .await;
        assert!(took.is_some(), "tag invalidation reached B's L1");
        assert!(b.stats().invalidations_received >= 2);
        assert_eq!(
            a.stats().invalidations_received,
            0,
            "A ignores its own messages"
        );
    }
}

on_single_and_cluster! {
    async fn write_on_one_instance_drops_stale_l1_copy_on_another(server) {
        let a = tiered(&server);
        let b = tiered(&server);
        a.ready().await;
        b.ready().await;
        a.put("k", entry("old", 60_000)).await.unwrap();
        assert_eq!(value(&b, "k").await.as_deref(), Some("old"));
        a.put("k", entry("new", 60_000)).await.unwrap();
        let took = wait_until(PATIENCE, || async {
            value(&b, "k").await.as_deref() == Some("new")
        })
        .await;
        assert!(took.is_some(), "B sees the new value");
    }
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
    assert!(stats.l2_errors >= 1, "{stats:?}");
    assert_eq!(stats.outages, 1, "one outage, logged once: {stats:?}");
    assert!(
        stats.l2_skipped > 0,
        "breaker stops calling Redis: {stats:?}"
    );
    assert!(!store.l2_available());

    server.restart();
    let recovered = wait_until(PATIENCE, || async {
        store.put("after", entry("a", 60_000)).await.unwrap();
        store.l2_available() && other.get("after").await.unwrap().is_some()
    })
    .await;
    assert!(recovered.is_some(), "recovered");
    // L1 was cleared on recovery: what it held may be stale.
    assert_eq!(store.l1().get("warm").await.unwrap(), None);

    // The invalidation channel is back too.
    let resubscribed = wait_until(PATIENCE, || async {
        store.stats().subscriptions >= 2 && other.stats().subscriptions >= 2
    })
    .await;
    assert!(resubscribed.is_some(), "re-subscribed");
    assert_eq!(value(&other, "after").await.as_deref(), Some("a"));
    store.remove("after").await.unwrap();
    let took = wait_until(PATIENCE, || async {
        other.l1().get("after").await.unwrap().is_none()
    })
    .await;
    assert!(took.is_some(), "invalidations flow again");
}

on_single_and_cluster! {
    async fn shared_store_behind_arc_dyn(server) {
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
}

on_single_and_cluster! {
    /// Many readers on two instances hammer a key while it is rewritten and
    /// removed, round after round. Once a remove has returned (for the remover)
    /// or its message has been applied (for the other instance), no read that
    /// starts afterwards may see a removed value: a read of the old value from
    /// L2 that raced with the remove must not have been copied into L1.
    async fn no_l1_serves_a_value_after_its_remove(server) {
        let a = tiered(&server);
        let b = tiered(&server);
        a.ready().await;
        b.ready().await;
        // The round whose value is removed for readers of A, and of B.
        let cleared = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(AtomicU64::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for i in 0..200 {
            let (store, side) = if i % 2 == 0 {
                (a.clone(), 0)
            } else {
                (b.clone(), 1)
            };
            let (cleared, stop, violations, served) = (
                cleared.clone(),
                stop.clone(),
                violations.clone(),
                served.clone(),
            );
            readers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let removed = cleared[side].load(Ordering::Acquire);
                    if let Some(v) = value(&store, "hot").await {
                        served.fetch_add(1, Ordering::Relaxed);
                        let round: u64 = v.parse().unwrap();
                        if round <= removed {
                            violations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        for round in 1..=30u64 {
            a.put("hot", entry(&round.to_string(), 60_000))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            a.remove("hot").await.unwrap();
            cleared[0].store(round, Ordering::Release);
            // B receives only A's messages, in the order A published them: once
            // it has applied as many as A has published, the remove is among
            // them (the put's message alone would not do).
            let published = a.stats().invalidations_published;
            let applied = wait_until(PATIENCE, || async {
                b.stats().invalidations_received >= published
            })
            .await;
            assert!(applied.is_some(), "round {round}: B got the remove");
            cleared[1].store(round, Ordering::Release);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::Release);
        for r in readers {
            r.await.unwrap();
        }
        assert!(served.load(Ordering::Relaxed) > 0, "readers saw values");
        assert_eq!(
            violations.load(Ordering::Relaxed),
            0,
            "reads after a remove served the removed value"
        );
        assert_eq!(value(&a, "hot").await, None);
        assert_eq!(value(&b, "hot").await, None);
    }
}

/// A remove and a tag invalidation made while Redis is away are replayed
/// when it returns, so Redis, restored from a snapshot that still has the
/// entries, does not serve them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removes_during_an_outage_are_replayed_on_recovery() {
    let mut server = RedisServer::start();
    let store = tiered(&server);
    let other = tiered(&server);
    store.ready().await;
    store.put("gone", entry("g", 60_000)).await.unwrap();
    store
        .put("tagged", entry("t", 60_000).with_tags(["t1"]))
        .await
        .unwrap();
    store.put("kept", entry("k", 60_000)).await.unwrap();
    server.save();
    server.stop();

    store.remove("gone").await.unwrap();
    store.remove_tag("t1").await.unwrap();
    assert_eq!(store.stats().invalidations_pending, 2);

    server.restart(); // with "gone" and "tagged" still in it
    let recovered = wait_until(PATIENCE, || async {
        // A read lets the breaker probe Redis once its interval is over.
        let _ = store.get("probe").await;
        store.stats().invalidations_pending == 0
            && store.stats().invalidations_replayed == 2
            && store.l2_available()
    })
    .await;
    assert!(recovered.is_some(), "replayed: {:?}", store.stats());
    let exists: bool = server.connection().exists("tc:e:{gone}").unwrap();
    assert!(!exists, "the remove reached Redis");
    for reader in [&store, &other] {
        assert_eq!(value(reader, "gone").await, None);
        assert_eq!(value(reader, "tagged").await, None);
        assert_eq!(value(reader, "kept").await.as_deref(), Some("k"));
    }
}

/// Past the bound, pending invalidations are dropped and the whole L2
/// namespace is invalidated on recovery: nothing removed during the outage
/// comes back, even what was no longer listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_the_replay_queue_invalidates_all_of_l2() {
    let mut server = RedisServer::start();
    let store = TieredStore::builder(MemoryStore::new(1 << 20), redis_store(&server))
        .retry_interval(Duration::from_millis(200))
        .max_pending_invalidations(2)
        .build();
    store.ready().await;
    for k in ["a", "b", "c", "d"] {
        store.put(k, entry(k, 60_000)).await.unwrap();
    }
    server.save();
    server.stop();
    for k in ["a", "b", "c"] {
        store.remove(k).await.unwrap();
    }
    assert_eq!(store.stats().pending_overflows, 1);

    server.restart();
    let recovered = wait_until(PATIENCE, || async {
        // A read probes L2 (and replays first); it must never see "a".
        let a = value(&store, "a").await;
        assert_eq!(a, None);
        store.l2_available() && store.stats().invalidations_pending == 0
    })
    .await;
    assert!(recovered.is_some(), "{:?}", store.stats());
    let fresh = redis_store(&server);
    for k in ["a", "b", "c", "d"] {
        assert_eq!(value(&fresh, k).await, None, "{k} stored before the outage");
    }
    store.put("after", entry("x", 60_000)).await.unwrap();
    assert_eq!(value(&fresh, "after").await.as_deref(), Some("x"));
}

/// An entry loaded before a tag invalidation and written after it must not
/// outlive the tag's timestamp in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_never_outlives_the_tag_timestamp_that_invalidates_it() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(OP_TIMEOUT)
        .max_ttl(Duration::from_millis(1_000))
        .build()
        .unwrap();
    let loaded = entry("old", 60_000)
        .with_tags(["p"])
        .with_version(store.version().await.unwrap());
    store.remove_tag("p").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.put("k", loaded).await.unwrap();
    let mut conn = server.connection();
    // Both read at the same instant of Redis's clock.
    let (entry_ttl, tag_ttl): (i64, i64) = redis::pipe()
        .atomic()
        .pttl("tc:e:{k}")
        .pttl("{tc:}t:p")
        .query(&mut conn)
        .unwrap();
    assert!(
        entry_ttl <= tag_ttl,
        "entry {entry_ttl} ms, tag {tag_ttl} ms"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let tag_left: bool = conn.exists("{tc:}t:p").unwrap();
    assert!(!tag_left, "the tag timestamp expired");
    assert_eq!(value(&store, "k").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_lifetime_is_capped_by_l2_max_ttl() {
    let server = RedisServer::start();
    let l2 = RedisStore::builder(server.url())
        .op_timeout(OP_TIMEOUT)
        .max_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let store = TieredStore::builder(MemoryStore::new(1 << 20), l2)
        .l1_ttl(Duration::from_secs(60))
        .build();
    assert_eq!(store.l1_ttl(), Duration::from_secs(1));
    store.put("k", entry("v", 60_000)).await.unwrap();
    assert!(store.l1().get("k").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.l1().get("k").await.unwrap(), None);
}

/// An L1 copy of an L2 read is dropped after `l1_ttl` even though nobody
/// told the instance the value changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_copy_is_reread_from_l2_after_l1_ttl() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    let reader = TieredStore::builder(MemoryStore::new(1 << 20), redis_store(&server))
        .l1_ttl(Duration::from_secs(1))
        .build();
    let mut conn = server.connection();
    l2.put("k", entry("old", 60_000)).await.unwrap();
    assert_eq!(value(&reader, "k").await.as_deref(), Some("old"));
    // Changed underneath, with no invalidation message.
    let _: () = conn
        .set("tc:e:{k}", entry("new", 60_000).encode("tc:e:{k}").to_vec())
        .unwrap();
    assert_eq!(value(&reader, "k").await.as_deref(), Some("old"), "from L1");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(value(&reader, "k").await.as_deref(), Some("new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_prefix_names_every_redis_key() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(OP_TIMEOUT)
        .prefix("shop:")
        .build()
        .unwrap();
    store
        .put("k", entry("v", 60_000).with_tags(["t"]))
        .await
        .unwrap();
    store.remove_tag("other").await.unwrap();
    let mut conn = server.connection();
    let mut keys: Vec<String> = conn.keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, ["shop:e:{k}", "{shop:}t:other", "{shop:}v"]);
    assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
}

on_single_and_cluster! {
    async fn remove_tag_never_moves_a_later_timestamp_back(server) {
        let store = redis_store(&server);
        // A version an hour ahead of the counter.
        let future = store.version().await.unwrap() + 3_600_000_000;
        let mut conn = server.connection();
        let _: () = conn.set("{tc:}t:t", future).unwrap();
        store.remove_tag("t").await.unwrap();
        let stamp: u64 = conn.get("{tc:}t:t").unwrap();
        assert_eq!(stamp, future);
    }
}

on_single_and_cluster! {
    /// L1 refuses an entry loaded before a tag invalidation this instance saw,
    /// even when it is written afterwards.
    async fn l1_refuses_an_entry_loaded_before_a_seen_tag_invalidation(server) {
        let a = tiered(&server);
        let b = tiered(&server);
        a.ready().await;
        b.ready().await;
        let loaded = entry("old", 60_000)
            .with_tags(["p"])
            .with_version(a.version().await.unwrap());
        a.remove_tag("p").await.unwrap();
        let seen = wait_until(PATIENCE, || async { b.stats().invalidations_received >= 1 }).await;
        assert!(seen.is_some());
        for store in [&a, &b] {
            store.put("k", loaded.clone()).await.unwrap();
            assert_eq!(store.l1().get("k").await.unwrap(), None);
            assert_eq!(value(store, "k").await, None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_shutdown_stops_and_awaits_its_subscriber() {
    let server = RedisServer::start();
    let store = tiered(&server);
    store.ready().await;
    let subscribers = |server: &RedisServer| -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("tc:invalidate")
            .query(&mut server.connection())
            .unwrap();
        n
    };
    assert_eq!(subscribers(&server), 1);
    store.shutdown().await;
    store.shutdown().await;
    let gone = wait_until(PATIENCE, || async { subscribers(&server) == 0 }).await;
    assert!(gone.is_some(), "the subscription is closed");
    store.put("k", entry("v", 60_000)).await.unwrap();
    assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
}

/// A tag invalidated while L2 is away keeps L1 from admitting entries
/// loaded before it, and once replayed gives L1 back to the tag's new
/// entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidated_during_an_outage_is_cached_again_once_replayed() {
    let mut server = RedisServer::start();
    let store = tiered(&server);
    store.ready().await;
    let before = store.version().await.unwrap();
    server.save();
    server.stop();

    store.remove_tag("t").await.unwrap();
    let loaded_before = entry("old", 60_000).with_tags(["t"]).with_version(before);
    store.put("k", loaded_before).await.unwrap();
    assert_eq!(store.l1().get("k").await.unwrap(), None, "loaded before");

    server.restart();
    let recovered = wait_until(PATIENCE, || async {
        let _ = store.get("probe").await;
        store.stats().invalidations_pending == 0 && store.l2_available()
    })
    .await;
    assert!(recovered.is_some(), "replayed: {:?}", store.stats());
    let loaded_after = entry("new", 60_000)
        .with_tags(["t"])
        .with_version(store.version().await.unwrap());
    store.put("k", loaded_after).await.unwrap();
    assert!(store.l1().get("k").await.unwrap().is_some(), "in L1 again");
    assert_eq!(value(&store, "k").await.as_deref(), Some("new"));
}
