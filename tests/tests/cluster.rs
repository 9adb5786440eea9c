//! The stores on a real Redis Cluster: entries over every master, invalidation across slots, coherent instances, a dead master, failover, bad seeds, garbage, and the durable write-behind log.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::Commands;
use tower::{ServiceExt, service_fn};
use tower_cache::store::{MemoryStore, RedisQueue, RedisStore, Store, StoreError, TieredStore};
use tower_cache::{Cache, Entry, Fetched, Fill, Loaded, Policy, Profile, Write, WriteBehindLayer};
use tower_cache_tests::{PATIENCE, RedisCluster, wait_until};
use tower_layer::Layer;

fn entry(v: &str) -> Entry {
    Entry::new(Bytes::from(v.to_owned())).with_ttl(Duration::from_secs(60))
}

fn store(cluster: &RedisCluster) -> RedisStore {
    RedisStore::cluster_builder(cluster.urls())
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn value(store: &impl Store, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .expect("store read")
        .map(|e| String::from_utf8(e.value().to_vec()).expect("utf8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_spread_over_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let l2 = store(&cluster);
    for i in 0..300 {
        l2.put(&format!("products/{i}"), entry(&i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..300 {
        assert_eq!(
            value(&l2, &format!("products/{i}")).await,
            Some(i.to_string())
        );
    }
    let per_master = cluster.keys_per_master();
    assert_eq!(per_master.len(), 3);
    for (port, keys) in per_master {
        assert!(keys >= 50, "master {port} holds {keys} of 300 entries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_and_namespace_invalidation_hold_across_slots() {
    let cluster = RedisCluster::start(3, 0);
    let l2 = store(&cluster);
    let version = l2.version().await.unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    let masters: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.master_of(&l2.entry_key(k)))
        .collect();
    assert_eq!(masters.len(), 3, "the tagged entries are on every master");
    for key in &keys {
        l2.put(key, entry("v").with_tags(["t"]).with_version(version))
            .await
            .unwrap();
    }
    l2.put("untagged", entry("u").with_version(version))
        .await
        .unwrap();
    l2.remove_tag("t").await.unwrap();
    for key in &keys {
        assert_eq!(value(&l2, key).await, None, "{key} was invalidated");
    }
    assert_eq!(value(&l2, "untagged").await, Some("u".into()));

    // Loaded before the invalidation, written after it: refused.
    let loaded = entry("old")
        .with_tags(["p"])
        .with_version(l2.version().await.unwrap());
    l2.remove_tag("p").await.unwrap();
    l2.put("late", loaded).await.unwrap();
    assert_eq!(value(&l2, "late").await, None);
    let exists: bool = cluster.connection().exists(l2.entry_key("late")).unwrap();
    assert!(!exists, "the refused write is not left in Redis");

    // The whole namespace, across every slot.
    let version = l2.version().await.unwrap();
    for key in &keys {
        l2.put(key, entry("w").with_version(version)).await.unwrap();
    }
    l2.invalidate_all().await.unwrap();
    for key in &keys {
        assert_eq!(value(&l2, key).await, None);
    }
    l2.put("after", entry("a")).await.unwrap();
    assert_eq!(value(&l2, "after").await, Some("a".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_stores_on_two_instances_stay_coherent_over_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let tiered = || {
        TieredStore::builder(MemoryStore::new(1 << 20), store(&cluster))
            .l1_ttl(Duration::from_secs(3_600))
            .build()
    };
    let (a, b) = (tiered(), tiered());
    a.ready().await;
    b.ready().await;
    let keys: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    for key in &keys {
        a.put(key, entry("v1").with_tags(["all-products"]))
            .await
            .unwrap();
        assert_eq!(value(&b, key).await, Some("v1".into()), "b's L1 filled");
    }
    // A write on a: b's L1 copies go.
    for key in &keys {
        a.put(key, entry("v2").with_tags(["all-products"]))
            .await
            .unwrap();
    }
    for key in &keys {
        let seen = wait_until(PATIENCE, || async {
            value(&b, key).await.as_deref() == Some("v2")
        })
        .await;
        assert!(seen.is_some(), "b sees a's write of {key}");
    }
    // A tag invalidation on b: a's L1 copies go.
    for key in &keys {
        assert_eq!(value(&a, key).await, Some("v2".into()));
    }
    b.remove_tag("all-products").await.unwrap();
    for key in &keys {
        let gone = wait_until(PATIENCE, || async { value(&a, key).await.is_none() }).await;
        assert!(gone.is_some(), "a drops {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_no_request() {
    let mut cluster = RedisCluster::start(3, 0);
    let op_timeout = Duration::from_millis(300);
    let l2 = RedisStore::cluster_builder(cluster.urls())
        .op_timeout(op_timeout)
        .build()
        .unwrap();
    let cache = Cache::new(l2.clone());
    let profile = Profile::new("product", Policy::ttl(Duration::from_secs(60)));
    let load = |key: &str| {
        let key = key.to_owned();
        move || async move { Ok::<_, std::io::Error>(Loaded::<()>::Store(Fill::new(key))) }
    };
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.fetch(key, &profile, load(key)).await.unwrap();
    }
    let victim = cluster.master_of(&l2.entry_key(&keys[0]));
    cluster.kill(victim);
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        for key in &keys {
            let started = Instant::now();
            let fetched = cache.fetch(key, &profile, load(key)).await;
            slowest = slowest.max(started.elapsed());
            let fetched = fetched.unwrap_or_else(|e| panic!("round {round}, {key}: {e}"));
            let value = match fetched {
                Fetched::Hit(e) | Fetched::Miss(e) | Fetched::Stale(e) => e,
                Fetched::Passed(()) => panic!("{key} passed through"),
            };
            assert_eq!(value.value().as_ref(), key.as_bytes());
        }
    }
    // Fail-open, bounded by the operation timeout (a few of them per
    // request: a read and a write), never by the cluster's own retries.
    assert!(
        slowest < op_timeout * 10,
        "slowest request {slowest:?} with a {op_timeout:?} op timeout"
    );
}

async fn survive_a_master_change(promote: impl FnOnce(&mut RedisCluster, u16) -> u16) {
    let mut cluster = RedisCluster::start(3, 1);
    let l2 = store(&cluster);
    l2.put("k", entry("before")).await.unwrap();
    let master = cluster.master_of(&l2.entry_key("k"));
    // The replica has the entry before its master goes.
    let replica = cluster.replica_of(master).unwrap();
    let replicated = wait_until(PATIENCE, || async {
        let mut conn = cluster.node(replica).connection();
        let _: redis::RedisResult<()> = redis::cmd("READONLY").query(&mut conn);
        conn.exists::<_, bool>(l2.entry_key("k")).unwrap_or(false)
    })
    .await;
    assert!(replicated.is_some(), "the replica has the entry");
    let promoted = promote(&mut cluster, master);
    assert_eq!(cluster.master_of(&l2.entry_key("k")), promoted);
    let served = wait_until(PATIENCE, || async {
        matches!(l2.get("k").await, Ok(Some(_)))
    })
    .await;
    assert!(served.is_some(), "the promoted node serves the entry");
    assert_eq!(value(&l2, "k").await, Some("before".into()));
    l2.put("k", entry("after")).await.unwrap();
    assert_eq!(value(&l2, "k").await, Some("after".into()));
    let on_promoted: Vec<u8> = cluster
        .node(promoted)
        .connection()
        .get(l2.entry_key("k"))
        .unwrap();
    assert!(
        !on_promoted.is_empty(),
        "the write went to the promoted node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_is_followed() {
    survive_a_master_change(|cluster, master| {
        let replica = cluster.replica_of(master).unwrap();
        cluster.failover(replica);
        replica
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_is_replaced_by_its_promoted_replica() {
    survive_a_master_change(RedisCluster::kill_and_promote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_seed_list_is_a_clear_error() {
    let none = RedisStore::cluster(Vec::<String>::new()).unwrap_err();
    assert!(
        matches!(&none, StoreError::Config(m) if m.contains("seed")),
        "{none}"
    );
    let bad = RedisStore::cluster(["redis://127.0.0.1:7000", "not a url"]).unwrap_err();
    assert!(
        matches!(&bad, StoreError::Config(m) if m.contains("not a url")),
        "{bad}"
    );
    let prefix = RedisStore::cluster_builder(["redis://127.0.0.1:7000"])
        .prefix("{shop}")
        .build()
        .unwrap_err();
    assert!(matches!(prefix, StoreError::Config(_)), "{prefix}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_an_entry_key_reads_as_a_miss_and_is_removed() {
    let cluster = RedisCluster::start(3, 0);
    let l2 = store(&cluster);
    let mut conn = cluster.connection();
    let _: () = conn.set(l2.entry_key("bytes"), "not an envelope").unwrap();
    let _: () = conn.rpush(l2.entry_key("list"), "x").unwrap();
    let _: () = conn.set(l2.version_key(), "not a number").unwrap();
    assert_eq!(value(&l2, "bytes").await, None);
    let left: bool = conn.exists(l2.entry_key("bytes")).unwrap();
    assert!(!left, "undecodable bytes are removed");
    assert_eq!(value(&l2, "list").await, None);
    let (found, _) = l2.get_versioned("list").await.unwrap();
    assert!(found.is_none());
    let left: bool = conn.exists(l2.entry_key("list")).unwrap();
    assert!(
        !left,
        "a key of another type is removed by the read before a load"
    );
    l2.put("list", entry("fresh")).await.unwrap();
    assert_eq!(value(&l2, "list").await, Some("fresh".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_write_behind_on_a_cluster_delivers_every_acknowledged_write() {
    let cluster = RedisCluster::start(3, 0);
    let l2 = store(&cluster);
    let db = Arc::new(Mutex::new(HashMap::<u64, i64>::new()));
    let writer = {
        let db = db.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let mut db = db.lock().unwrap();
            for write in &batch {
                assert!(!write.log_ids().is_empty(), "a durable write has log ids");
                *db.entry(write.key).or_default() += write.value;
            }
            async { Ok::<_, std::io::Error>(()) }
        })
    };
    let svc = WriteBehindLayer::<u64, i64, _>::new(
        Cache::new(MemoryStore::default()),
        "views",
        Policy::default(),
    )
    .max_delay(Duration::from_millis(20))
    .merge(|a, b| a + b)
    .durable(RedisQueue::new(&l2, "views"))
    .layer(writer);
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(Write::new(i % 10, 1)).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    svc.handle().flush().await.unwrap();
    let db = db.lock().unwrap().clone();
    assert_eq!(db.len(), 10);
    assert!(db.values().all(|&n| n == 20), "{db:?}");
    let queue = RedisQueue::new(&l2, "views");
    assert_eq!(
        queue.len().await.unwrap(),
        0,
        "every delivered write left the log"
    );
}
