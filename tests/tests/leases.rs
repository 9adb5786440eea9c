//! One load per cluster of instances: leases in Redis, so that of every
//! instance missing a key at once, one loads it and the others wait for its
//! value.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::Commands;
use tokio::sync::Notify;
use tower_cache::store::{Lease, MemoryStore, RedisStore, Store, TieredStore};
use tower_cache::{Cache, Entry, Fill, Loaded, Policy, Profile};
use tower_cache_tests::{PATIENCE, RedisServer, TestRedis, on_single_and_cluster, wait_until};

/// Generous per-operation timeout: nothing here is about timeouts.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// One instance's L2: a store of its own, on connections of its own.
fn redis_store(server: &impl TestRedis) -> RedisStore {
    server
        .store_builder()
        .op_timeout(OP_TIMEOUT)
        .build()
        .unwrap()
}

const TTL: Duration = Duration::from_secs(60);

on_single_and_cluster! {
    async fn a_lease_is_granted_to_one_instance_until_released(server) {
        let (a, b) = (redis_store(&server), redis_store(&server));
        assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::Granted);
        assert_eq!(b.lease("k", 2, TTL).await.unwrap(), Lease::Taken);
        assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::Taken);
        // Only its holder's token releases it.
        b.release("k", 2).await.unwrap();
        assert_eq!(b.lease("k", 2, TTL).await.unwrap(), Lease::Taken);
        a.release("k", 1).await.unwrap();
        assert_eq!(b.lease("k", 2, TTL).await.unwrap(), Lease::Granted);
        // A write by its holder releases it in the same call.
        let entry = Entry::new(Bytes::from_static(b"v")).with_ttl(TTL);
        b.put_released("k", entry, 2).await.unwrap();
        // A lease over a stored value says so.
        assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::GrantedOverValue);
        // Every lease expires by itself.
        let pttl: i64 = server.connection().pttl("tc:l:{k}").unwrap();
        assert!((1..=60_000).contains(&pttl), "{pttl} ms");
    }
}

on_single_and_cluster! {
    async fn a_lease_whose_holder_died_expires(server) {
        let (a, b) = (redis_store(&server), redis_store(&server));
        let short = Duration::from_millis(200);
        assert_eq!(a.lease("k", 1, short).await.unwrap(), Lease::Granted);
        drop(a); // its holder is gone, the lease is left in Redis
        assert_eq!(b.lease("k", 2, TTL).await.unwrap(), Lease::Taken);
        let granted = wait_until(PATIENCE, || async {
            b.lease("k", 2, TTL).await.unwrap() == Lease::Granted
        })
        .await;
        assert!(granted.is_some(), "the lease expired");
    }
}

on_single_and_cluster! {
    async fn a_remove_ends_the_lease(server) {
        let (a, b) = (redis_store(&server), redis_store(&server));
        assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::Granted);
        b.remove("k").await.unwrap();
        assert_eq!(b.lease("k", 2, TTL).await.unwrap(), Lease::Granted);
        // The first holder's release leaves the new holder's lease alone.
        a.release("k", 1).await.unwrap();
        assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::Taken);
    }
}

on_single_and_cluster! {
    async fn garbage_at_a_lease_key_never_holds_loads_back_for_good(server) {
        let store = redis_store(&server);
        let mut conn = server.connection();
        // Something that never expires, set by something other than a lease.
        let _: () = conn.rpush("tc:l:{k}", "x").unwrap();
        assert_eq!(store.lease("k", 1, TTL).await.unwrap(), Lease::Taken);
        // The load that went ahead anyway clears it when it is done.
        store.release("k", 1).await.unwrap();
        assert_eq!(store.lease("k", 1, TTL).await.unwrap(), Lease::Granted);
        store.release("k", 1).await.unwrap();
        let _: () = conn.set("tc:l:{k}", "forever").unwrap();
        let entry = Entry::new(Bytes::from_static(b"v")).with_ttl(TTL);
        store.put_released("k", entry, 1).await.unwrap();
        assert_eq!(store.lease("k", 1, TTL).await.unwrap(), Lease::GrantedOverValue);
    }
}

#[tokio::test]
async fn a_store_of_one_process_needs_no_lease() {
    let store = MemoryStore::default();
    assert_eq!(store.lease("k", 1, TTL).await.unwrap(), Lease::Local);
    store.release("k", 1).await.unwrap();
}

/// Time the origin takes to answer.
const ORIGIN: Duration = Duration::from_millis(300);

/// One instance of a service: a cache over an L1 and an L2 of its own,
/// on connections of its own, as a process of its own would have.
async fn instance(server: &impl TestRedis, op_timeout: Duration) -> Cache<TieredStore> {
    let l2 = server
        .store_builder()
        .op_timeout(op_timeout)
        .build()
        .unwrap();
    let store = TieredStore::builder(MemoryStore::new(16 << 20), l2)
        .l1_ttl(Duration::from_secs(3_600))
        .retry_interval(Duration::from_millis(100))
        .build();
    store.ready().await;
    Cache::new(store)
}

async fn instances(server: &impl TestRedis, n: usize) -> Vec<Cache<TieredStore>> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(instance(server, OP_TIMEOUT).await);
    }
    all
}

fn profile(policy: Policy) -> Profile {
    Profile::new("product", policy.jitter(0.0))
}

/// The origin: counts its calls, answers `"product #{call}"` after
/// `delay`.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn load(
        &self,
        delay: Duration,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<Loaded<()>, std::io::Error>> + Send + 'static
    {
        let calls = self.calls.clone();
        move || {
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                Ok(Loaded::Store(Fill::new(format!("product #{n}"))))
            })
        }
    }
}

/// What `INFO section` says after `field` on its line.
fn info(server: &RedisServer, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

/// How many times a lease was asked for (`SET`, which nothing else here
/// sends).
fn lease_tries(server: &RedisServer) -> u64 {
    info(server, "commandstats", "cmdstat_set:calls=")
        .and_then(|l| l.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until an instance holds the lease on `products/1` and reads the
/// origin.
async fn wait_for_a_loading_holder(server: &RedisServer, origin: &Origin) {
    let mut conn = server.connection();
    let leased = wait_until(PATIENCE, || {
        let held: bool = conn.exists("tc:l:{products/1}").unwrap();
        let loading = origin.calls() == 1;
        async move { held && loading }
    })
    .await;
    assert!(leased.is_some(), "an instance holds the lease and loads");
}

/// Reads `key` on `cache`: the value and how long the caller waited.
async fn read(
    cache: &Cache<TieredStore>,
    profile: &Profile,
    origin: &Origin,
    key: &str,
) -> (String, Duration) {
    let start = Instant::now();
    let fetched = cache
        .fetch(key, profile, origin.load(ORIGIN))
        .await
        .unwrap();
    let value = String::from_utf8(fetched.entry().unwrap().value().to_vec()).unwrap();
    (value, start.elapsed())
}

/// `requests` concurrent cold reads of one key, spread over `caches`;
/// the values they got.
async fn stampede(
    caches: &[Cache<TieredStore>],
    profile: &Profile,
    origin: &Origin,
    requests: usize,
) -> Vec<String> {
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let cache = caches[i % caches.len()].clone();
            let (profile, origin) = (profile.clone(), origin.clone());
            tokio::spawn(async move { read(&cache, &profile, &origin, "products/1").await.0 })
        })
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.unwrap());
    }
    values
}

on_single_and_cluster! {
    async fn cold_requests_on_two_instances_make_one_origin_call(server) {
        let caches = instances(&server, 2).await;
        let origin = Origin::default();
        let profile = profile(Policy::ttl(Duration::from_secs(60)));
        let values = stampede(&caches, &profile, &origin, 500).await;
        assert_eq!(origin.calls(), 1);
        assert!(values.iter().all(|v| v == "product #1"), "{values:?}");
    }
}

on_single_and_cluster! {
    async fn a_thousand_cold_requests_over_three_instances_make_one_origin_call(server) {
        let caches = instances(&server, 3).await;
        let origin = Origin::default();
        let profile = profile(Policy::ttl(Duration::from_secs(60)));
        let values = stampede(&caches, &profile, &origin, 1_000).await;
        println!(
            "origin calls for 1000 cold requests over 3 instances: {}",
            origin.calls()
        );
        assert_eq!(origin.calls(), 1);
        assert!(values.iter().all(|v| v == "product #1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lease_every_instance_loads() {
    let server = RedisServer::start();
    let caches = instances(&server, 3).await;
    let origin = Origin::default();
    let profile = profile(Policy::ttl(Duration::from_secs(60)).cross_instance_lease(false));
    stampede(&caches, &profile, &origin, 300).await;
    assert_eq!(origin.calls(), 3, "one per instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_holder_died_expires_and_another_instance_loads() {
    let server = RedisServer::start();
    let load_timeout = Duration::from_secs(2);
    let profile = profile(Policy::ttl(Duration::from_secs(60)).load_timeout(load_timeout));
    let origin = Origin::default();
    // A takes the lease and hangs in the origin...
    let a = instance(&server, OP_TIMEOUT).await;
    let hung = tokio::spawn({
        let (a, profile, origin) = (a.clone(), profile.clone(), origin.clone());
        async move { a.fetch("products/1", &profile, origin.load(PATIENCE)).await }
    });
    wait_for_a_loading_holder(&server, &origin).await;
    // ...and dies: its load stops, its lease is left in Redis.
    a.shutdown().await;
    hung.abort();
    a.store().shutdown().await;
    drop(a);
    let b = instance(&server, OP_TIMEOUT).await;
    let (value, waited) = read(&b, &profile, &origin, "products/1").await;
    assert_eq!(value, "product #2", "B loaded once the lease expired");
    assert!(
        waited < load_timeout + PATIENCE / 6,
        "B waited {waited:?}, the load timeout is {load_timeout:?}"
    );
    // A lease left with a longer life than this caller's load timeout
    // (by a holder configured otherwise) is waited for no longer than it.
    let _: () = server
        .connection()
        .pset_ex("tc:l:{products/2}", "another holder", 600_000)
        .unwrap();
    let (value, waited) = read(&b, &profile, &origin, "products/2").await;
    assert_eq!(value, "product #3");
    assert!(
        waited < load_timeout + PATIENCE / 6,
        "B waited {waited:?} for a 600 s lease, the load timeout is {load_timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_instance_loads_once_and_nothing_waits() {
    let mut server = RedisServer::start();
    let op_timeout = Duration::from_millis(200);
    let a = instance(&server, op_timeout).await;
    let b = instance(&server, op_timeout).await;
    server.stop();
    let origin = Origin::default();
    // A load timeout far above what a caller may wait here.
    let load_timeout = PATIENCE * 2;
    let profile = profile(Policy::ttl(Duration::from_secs(60)).load_timeout(load_timeout));
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (profile, origin) = (profile.clone(), origin.clone());
            tokio::spawn(async move { read(&cache, &profile, &origin, "products/1").await })
        })
        .collect();
    for task in tasks {
        let (_, waited) = task.await.unwrap();
        assert!(
            waited < PATIENCE / 3,
            "a caller waited {waited:?}: for a lease, not for the origin"
        );
    }
    assert_eq!(origin.calls(), 2, "one load per instance, in process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_a_remove_dropped_loads_anew_and_never_serves_the_old_value() {
    let server = RedisServer::start();
    let caches = instances(&server, 3).await;
    let (a, b, writer) = (&caches[0], &caches[1], &caches[2]);
    // Far above the test's patience: B cannot be answered by the lease's
    // expiry, only by the remove.
    let profile = profile(Policy::ttl(Duration::from_secs(60)).load_timeout(PATIENCE * 4));
    let db = Arc::new(Mutex::new("old"));
    let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let db_load = |gated: bool| {
        let (db, started, gate) = (db.clone(), started.clone(), gate.clone());
        move || async move {
            let value = *db.lock().unwrap();
            if gated {
                started.notify_one();
                gate.notified().await;
            }
            Ok::<_, std::io::Error>(Loaded::<()>::Store(Fill::new(value)))
        }
    };
    // A reads the old row and holds its lease...
    let slow = tokio::spawn({
        let (a, profile, load) = (a.clone(), profile.clone(), db_load(true));
        async move { a.fetch("products/1", &profile, load).await.unwrap() }
    });
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .unwrap();
    // ...B waits for A's value...
    let waiting = tokio::spawn({
        let (b, profile, load) = (b.clone(), profile.clone(), db_load(false));
        async move { b.fetch("products/1", &profile, load).await.unwrap() }
    });
    // A's lease, B's first try and one more while it waits.
    let waits = wait_until(PATIENCE, || {
        let tries = lease_tries(&server);
        async move { tries >= 3 }
    })
    .await;
    assert!(waits.is_some(), "B waits for A's value");
    // ...the row is written and the key removed: B loads the new row
    // while A is still loading the old one.
    *db.lock().unwrap() = "new";
    writer.remove("products/1").await;
    let got = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("B is answered without waiting for A")
        .unwrap();
    assert_eq!(&got.entry().unwrap().value()[..], b"new");
    gate.notify_one();
    slow.await.unwrap();
    for cache in &caches {
        let fetched = cache
            .fetch("products/1", &profile, db_load(false))
            .await
            .unwrap();
        assert_eq!(&fetched.entry().unwrap().value()[..], b"new");
    }
}

/// The process id of the redis-server behind `server`.
fn pid(server: &RedisServer) -> String {
    info(server, "server", "process_id:").unwrap()
}

/// Sends `signal` to the process `pid`.
fn signal(pid: &str, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_paused_while_a_lease_is_held_callers_load_in_process() {
    let server = RedisServer::start();
    let op_timeout = Duration::from_millis(200);
    let a = instance(&server, op_timeout).await;
    let b = instance(&server, op_timeout).await;
    let origin = Origin::default();
    let load_timeout = PATIENCE * 2;
    let profile = profile(Policy::ttl(Duration::from_secs(60)).load_timeout(load_timeout));
    // A holds the lease, loading slowly...
    let slow = tokio::spawn({
        let (a, profile, origin) = (a.clone(), profile.clone(), origin.clone());
        async move {
            a.fetch("products/1", &profile, origin.load(Duration::from_secs(2)))
                .await
        }
    });
    wait_for_a_loading_holder(&server, &origin).await;
    // ...when Redis stops answering.
    let redis = pid(&server);
    signal(&redis, "-STOP");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (b, profile, origin) = (b.clone(), profile.clone(), origin.clone());
            tokio::spawn(async move { read(&b, &profile, &origin, "products/1").await })
        })
        .collect();
    let mut answered = Vec::new();
    for task in tasks {
        answered.push(task.await.unwrap());
    }
    signal(&redis, "-CONT");
    for (_, waited) in &answered {
        assert!(
            *waited < PATIENCE / 3,
            "a caller waited {waited:?}: for the lease, not for its own load"
        );
    }
    assert_eq!(origin.calls(), 2, "B loaded once, in process");
    assert!(slow.await.unwrap().is_ok());
}
