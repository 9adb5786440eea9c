//! Hot keys kept in process in front of an L2-only store, against a real
//! redis-server: one hot key stops costing a Redis call per read, and
//! nothing the application removed is served from a copy afterwards.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tower_cache::Entry;
use tower_cache::store::{HotKeys, RedisStore, Store};
use tower_cache_tests::{
    PATIENCE, RedisServer, TestRedis, command_calls, on_single_and_cluster, wait_until,
};

fn entry(v: &str) -> Entry {
    Entry::new(Bytes::from(v.to_owned()))
        .with_ttl(Duration::from_secs(600))
        .with_tags(["product"])
}

fn l2(server: &impl TestRedis) -> RedisStore {
    server
        .store_builder()
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Copies that outlive every wait here: only an invalidation drops one.
fn hot(server: &impl TestRedis) -> HotKeys<RedisStore> {
    HotKeys::builder(l2(server))
        .ttl(Duration::from_secs(600))
        .min_reads(20)
        .build()
}

/// Redis read commands served so far.
fn reads(server: &RedisServer) -> u64 {
    command_calls(server, &["get", "mget", "evalsha"])
}

async fn value(store: &impl Store, key: &str) -> Option<String> {
    let entry = store.get(key).await.unwrap()?;
    Some(String::from_utf8(entry.value().to_vec()).unwrap())
}

#[tokio::test]
async fn a_hot_key_is_answered_in_process_and_a_cold_one_is_not() {
    let server = RedisServer::start();
    let store = hot(&server);
    store.put("hot", entry("h")).await.unwrap();
    for i in 0..200 {
        store.put(&format!("cold{i}"), entry("c")).await.unwrap();
    }
    // Warm the sketch: the hot key read 100 times among 200 keys read once.
    for i in 0..200 {
        assert_eq!(
            value(&store, &format!("cold{i}")).await.as_deref(),
            Some("c")
        );
        if i % 2 == 0 {
            assert_eq!(value(&store, "hot").await.as_deref(), Some("h"));
        }
    }
    assert_eq!(store.top().first().map(|(k, _)| k.as_str()), Some("hot"));
    assert!(store.top().iter().all(|(k, _)| !k.starts_with("cold")));

    let before = reads(&server);
    for _ in 0..100 {
        assert_eq!(value(&store, "hot").await.as_deref(), Some("h"));
        assert!(store.resident("hot", tower_cache::now_ms()).is_some());
    }
    assert_eq!(
        reads(&server) - before,
        0,
        "a hot key's reads went to Redis"
    );

    let before = reads(&server);
    for _ in 0..10 {
        assert_eq!(value(&store, "cold7").await.as_deref(), Some("c"));
    }
    assert_eq!(
        reads(&server) - before,
        10,
        "a cold key is read from Redis each time"
    );
}

/// Makes `key` hot in `store` and checks its copy answers.
async fn heat(store: &HotKeys<RedisStore>, key: &str) {
    for _ in 0..100 {
        value(store, key).await;
    }
    assert!(
        store.resident(key, tower_cache::now_ms()).is_some(),
        "{key} is hot"
    );
}

on_single_and_cluster! {
    async fn removes_writes_and_tag_invalidations_drop_the_copies(server) {
        let store = hot(&server);

        store.put("a", entry("1")).await.unwrap();
        heat(&store, "a").await;
        store.put("a", entry("2")).await.unwrap();
        assert_eq!(value(&store, "a").await.as_deref(), Some("2"));

        heat(&store, "a").await;
        store.remove("a").await.unwrap();
        assert_eq!(value(&store, "a").await, None);

        store.put("a", entry("3")).await.unwrap();
        heat(&store, "a").await;
        store.remove_tag("product").await.unwrap();
        assert!(store.resident("a", tower_cache::now_ms()).is_none());
        assert_eq!(
            value(&store, "a").await,
            None,
            "the tag invalidation holds in Redis too"
        );
    }
}

/// Hundreds of readers of a hot key while it is written and removed: once
/// a remove has returned, no read that starts after it finds the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_read_after_a_remove_finds_the_old_value() {
    let server = RedisServer::start();
    let store = Arc::new(hot(&server));
    store.put("k", entry("first")).await.unwrap();
    heat(&store, "k").await;
    for round in 0..50u32 {
        // The write drops the copy; the key stays hot, so the readers
        // below copy what they read from Redis, racing with the remove.
        let old = format!("v{round}");
        store.put("k", entry(&old)).await.unwrap();
        let readers: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        value(&*store, "k").await;
                    }
                })
            })
            .collect();
        store.remove("k").await.unwrap();
        // Every read from here on starts after the remove returned.
        for _ in 0..50 {
            let v = value(&*store, "k").await;
            if v.as_deref() == Some(old.as_str()) {
                let held = store.resident("k", tower_cache::now_ms()).is_some();
                let inner = value(store.inner(), "k").await;
                panic!("old value after remove: copy held {held}, Redis has {inner:?}");
            }
        }
        for r in readers {
            r.await.unwrap();
        }
        assert_ne!(
            value(&*store, "k").await.as_deref(),
            Some(old.as_str()),
            "round {round}"
        );
        assert!(
            store
                .resident("k", tower_cache::now_ms())
                .is_none_or(|held| held.entry().value() != old.as_bytes()),
            "a reader put the old value back (round {round})"
        );
    }
}

on_single_and_cluster! {
    /// Another instance's remove is not seen through pub/sub here: the copy
    /// goes at the end of its short TTL, and the next read finds the new value.
    async fn another_instances_write_is_seen_once_the_copy_expires(server) {
        let here = HotKeys::builder(l2(&server))
            .ttl(Duration::from_millis(300))
            .min_reads(20)
            .build();
        let there = l2(&server);
        here.put("p", entry("old")).await.unwrap();
        heat(&here, "p").await;
        there.put("p", entry("new")).await.unwrap();
        let seen = wait_until(PATIENCE, || async {
            value(&here, "p").await.as_deref() == Some("new")
        })
        .await;
        assert!(seen.is_some(), "the other instance's write was never seen");
    }
}

/// Over a store with an L1 of its own, hot keys are counted and reported
/// but no copy is kept: the tiered store's L1 follows every instance's
/// invalidations, a copy here would not.
#[tokio::test]
async fn track_only_reports_hot_keys_and_keeps_no_copy() {
    let server = RedisServer::start();
    let store = HotKeys::builder(l2(&server))
        .min_reads(20)
        .track_only()
        .build();
    store.put("t", entry("v")).await.unwrap();
    for _ in 0..100 {
        assert_eq!(value(&store, "t").await.as_deref(), Some("v"));
    }
    assert_eq!(store.top().first().map(|(k, _)| k.as_str()), Some("t"));
    assert!(store.resident("t", tower_cache::now_ms()).is_none());
    let before = reads(&server);
    value(&store, "t").await;
    assert_eq!(
        reads(&server) - before,
        1,
        "every read goes to the inner store"
    );
}
