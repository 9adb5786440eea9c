//! Hot keys replicated onto other slots: reads of a hot key spread over
//! the masters of a Redis Cluster, and every write, remove and tag
//! invalidation reaches every copy.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{RedisStore, Store};
use tower_cache_tests::{
    PATIENCE, RedisCluster, TestRedis, command_calls, on_single_and_cluster, wait_until,
};

const REPLICAS: usize = 3;
const TTL: Duration = Duration::from_secs(60);

/// One instance's store, copying keys read 20 times a second.
fn store(server: &impl TestRedis) -> RedisStore {
    store_with_prefix(server, "tc:")
}

fn store_with_prefix(server: &impl TestRedis, prefix: &str) -> RedisStore {
    server
        .store_builder()
        .prefix(prefix)
        .op_timeout(Duration::from_secs(5))
        .hot_key_replicas(REPLICAS)
        .hot_key_min_rate(20)
        .build()
        .unwrap()
}

fn entry(value: &'static str) -> Entry {
    Entry::new(Bytes::from_static(value.as_bytes())).with_ttl(TTL)
}

async fn value(store: &RedisStore, key: &str) -> Option<String> {
    let entry = store.get(key).await.unwrap()?;
    Some(String::from_utf8(entry.value().to_vec()).unwrap())
}

/// The Redis keys of `key`'s copies.
fn copies(key: &str) -> Vec<String> {
    copies_under("tc:", key)
}

fn copies_under(prefix: &str, key: &str) -> Vec<String> {
    (1..=REPLICAS)
        .map(|n| format!("{{{prefix}#{n}}}r:{key}"))
        .collect()
}

/// Reads `key` until the store reads it from copies and every copy is
/// filled.
async fn heat(server: &impl TestRedis, store: &RedisStore, key: &str) {
    heat_under(server, store, "tc:", key).await;
}

async fn heat_under(server: &impl TestRedis, store: &RedisStore, prefix: &str, key: &str) {
    let mut conn = server.conn();
    let hot = wait_until(PATIENCE, || {
        let filled = store.replicated_keys().iter().any(|k| k == key)
            && copies_under(prefix, key)
                .iter()
                .all(|c| conn.exists::<_, bool>(c).unwrap());
        async move {
            for _ in 0..20 {
                store.get(key).await.unwrap();
            }
            filled
        }
    })
    .await;
    assert!(hot.is_some(), "{key} is read from filled copies");
}

/// Reads `key` `n` times; the values read.
async fn reads(store: &RedisStore, key: &str, n: usize) -> BTreeSet<Option<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(value(store, key).await);
    }
    seen
}

/// A prefix whose replicas' slots are on every master of `cluster`.
fn spread_prefix(cluster: &RedisCluster) -> String {
    let masters = cluster.masters().len();
    (0..200)
        .map(|i| format!("p{i}:"))
        .find(|prefix| {
            let owners: BTreeSet<u16> = (1..=REPLICAS)
                .map(|n| cluster.master_of(&format!("{{{prefix}#{n}}}v")))
                .collect();
            owners.len() == masters
        })
        .expect("a prefix spread over every master")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_read_on_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let prefix = spread_prefix(&cluster);
    let key = "products/1";
    let store = store_with_prefix(&cluster, &prefix);
    store.put(key, entry("hot")).await.unwrap();
    heat_under(&cluster, &store, &prefix, key).await;
    for port in cluster.masters() {
        cluster.node(port).reset_stats();
    }
    assert_eq!(reads(&store, key, 900).await, [Some("hot".into())].into());
    let calls: Vec<u64> = cluster
        .masters()
        .iter()
        .map(|&port| command_calls(cluster.node(port), &["mget", "get"]))
        .collect();
    let total: u64 = calls.iter().sum();
    assert!(
        (900..1_000).contains(&total),
        "one command per read, the copy and its counter together: {calls:?}"
    );
    assert!(
        calls.iter().all(|&g| g * 6 >= total),
        "every master serves its share of the reads: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replicas_a_hot_key_is_read_on_its_own_master() {
    let cluster = RedisCluster::start(3, 0);
    let key = "products/1";
    let store = cluster
        .store_builder()
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    store.put(key, entry("hot")).await.unwrap();
    assert_eq!(reads(&store, key, 800).await, [Some("hot".into())].into());
    assert!(store.replicated_keys().is_empty());
    let mut conn = cluster.conn();
    for copy in copies(key) {
        assert!(!conn.exists::<_, bool>(&copy).unwrap(), "{copy}");
    }
}

on_single_and_cluster! {
    async fn a_remove_removes_every_copy(server) {
        let (a, b) = (store(&server), store(&server));
        a.put("products/1", entry("old")).await.unwrap();
        heat(&server, &a, "products/1").await;
        // Another instance, which never read the key, removes it.
        b.remove("products/1").await.unwrap();
        let mut conn = server.conn();
        for copy in copies("products/1") {
            assert!(!conn.exists::<_, bool>(&copy).unwrap(), "{copy} is gone");
        }
        assert_eq!(reads(&a, "products/1", 400).await, [None].into());
    }
}

on_single_and_cluster! {
    async fn a_write_reaches_every_copy(server) {
        let (a, b) = (store(&server), store(&server));
        a.put("products/1", entry("old")).await.unwrap();
        heat(&server, &a, "products/1").await;
        b.put("products/1", entry("new")).await.unwrap();
        assert_eq!(reads(&a, "products/1", 400).await, [Some("new".into())].into());
    }
}

on_single_and_cluster! {
    async fn a_tag_invalidation_reaches_every_copy(server) {
        let (a, b) = (store(&server), store(&server));
        let tagged = entry("old").with_tags(["catalog"]);
        a.put("products/1", tagged).await.unwrap();
        heat(&server, &a, "products/1").await;
        b.remove_tag("catalog").await.unwrap();
        assert_eq!(reads(&a, "products/1", 400).await, [None].into());
        // The copies were refused, not only missed: they are deleted.
        let mut conn = server.conn();
        for copy in copies("products/1") {
            assert!(!conn.exists::<_, bool>(&copy).unwrap(), "{copy} is gone");
        }
    }
}

on_single_and_cluster! {
    async fn garbage_at_a_copy_reads_as_the_entry_and_is_replaced(server) {
        let store = store(&server);
        store.put("products/1", entry("v")).await.unwrap();
        heat(&server, &store, "products/1").await;
        let mut conn = server.conn();
        for copy in copies("products/1") {
            let _: () = conn.set(&copy, "garbage").unwrap();
        }
        assert_eq!(reads(&store, "products/1", 400).await, [Some("v".into())].into());
        for copy in copies("products/1") {
            let raw: Vec<u8> = conn.get(&copy).unwrap();
            assert_ne!(raw, b"garbage", "{copy} was replaced");
        }
    }
}

on_single_and_cluster! {
    /// Hundreds of readers on three instances keep a hot key's copies
    /// filled while another instance writes and removes it, round after
    /// round: no read that starts after a remove returned gets what it
    /// removed, from the entry or from any copy.
    async fn no_read_after_a_remove_sees_the_removed_value(server) {
        let instances: Vec<RedisStore> = (0..3).map(|_| store(&server)).collect();
        let writer = store(&server);
        writer.put("products/1", entry("v0")).await.unwrap();
        heat(&server, &instances[0], "products/1").await;
        // The round whose value was removed last, and the wrong reads.
        let removed = Arc::new(AtomicUsize::new(usize::MAX));
        let wrong = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..300)
            .map(|i| {
                let store = instances[i % instances.len()].clone();
                let (removed, wrong, stop) = (removed.clone(), wrong.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let before = removed.load(Ordering::SeqCst);
                        if let Some(v) = value(&store, "products/1").await
                            && before != usize::MAX
                            && v == format!("v{before}")
                        {
                            wrong.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for round in 0..20 {
            if round > 0 {
                let v: &'static str = format!("v{round}").leak();
                writer.put("products/1", entry(v)).await.unwrap();
            }
            // Let the readers fill copies from the new value.
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.remove("products/1").await.unwrap();
            removed.store(round, Ordering::SeqCst);
        }
        stop.store(true, Ordering::SeqCst);
        for reader in readers {
            reader.await.unwrap();
        }
        assert_eq!(wrong.load(Ordering::SeqCst), 0, "reads of a removed value");
    }
}
