//! The existence filter shared through a real redis-server: instances are
//! separate filters over separate stores (separate connections), as two
//! processes would be.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::time::{Duration, Instant};

use proptest::prelude::*;
use redis::Commands;
use tower_cache::filter::{ExistenceFilter, FilterError};
use tower_cache::store::RedisStore;
use tower_cache_tests::{RedisServer, TestRedis, on_single_and_cluster};

const OP_TIMEOUT: Duration = Duration::from_secs(5);

fn store(server: &impl TestRedis) -> RedisStore {
    server
        .store_builder()
        .op_timeout(OP_TIMEOUT)
        .retry_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// One instance's filter of products over its own store.
fn instance(server: &impl TestRedis) -> ExistenceFilter {
    ExistenceFilter::builder()
        .expected_items(100_000)
        .false_positive_rate(0.001)
        .shared("products", store(server))
        .build()
}

fn ids(range: std::ops::RangeInclusive<u64>) -> impl Iterator<Item = String> {
    range.map(|id| id.to_string())
}

/// Ids that neither filter holds locally (no false positive of `f`).
fn unseen(f: &ExistenceFilter, from: u64, n: usize) -> Vec<String> {
    (from..)
        .map(|id| id.to_string())
        .filter(|id| !f.contains_local(id))
        .take(n)
        .collect()
}

on_single_and_cluster! {
    async fn an_id_inserted_on_one_instance_is_found_on_the_other(server) {
        let (a, b) = (instance(&server), instance(&server));
        a.load(ids(1..=10_000)).await.unwrap();
        b.load(ids(1..=10_000)).await.unwrap();
        let new = unseen(&a, 1_000_000, 1).remove(0);
        assert!(!a.may_contain(&new).await, "not inserted yet");
        b.insert(&new).await.unwrap();
        assert!(!a.contains_local(&new), "A has not read it yet");
        assert!(
            a.may_contain(&new).await,
            "A reads B's insert before saying no"
        );
        assert!(a.contains_local(&new), "and keeps it");
    }
}

on_single_and_cluster! {
    async fn hundreds_of_concurrent_inserts_on_two_instances_are_all_found_on_both(server) {
        let (a, b) = (instance(&server), instance(&server));
        a.load(ids(1..=1_000)).await.unwrap();
        b.load(ids(1..=1_000)).await.unwrap();
        let fresh = unseen(&a, 2_000_000, 400);
        let mut tasks = Vec::new();
        for (i, id) in fresh.iter().cloned().enumerate() {
            let (mine, other) = if i % 2 == 0 {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            tasks.push(tokio::spawn(async move {
                mine.insert(&id).await.unwrap();
                // From the moment the insert returned, the other instance
                // never says no, even while others insert beside it.
                assert!(other.may_contain(&id).await, "{id} after its insert");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for id in &fresh {
            assert!(a.may_contain(id).await && b.may_contain(id).await, "{id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_later_holds_what_the_others_inserted() {
    let server = RedisServer::start();
    let a = instance(&server);
    a.load(ids(1..=5_000)).await.unwrap();
    let created = unseen(&a, 3_000_000, 50);
    for id in &created {
        a.insert(id).await.unwrap();
    }
    // A new instance whose key source knows none of it.
    let late = instance(&server);
    late.load(std::iter::empty::<String>()).await.unwrap();
    for id in ids(1..=5_000).chain(created.iter().cloned()) {
        assert!(
            late.contains_local(&id),
            "{id} from the snapshot and the log"
        );
    }
    // And it still rules out ids nobody inserted.
    let absent = unseen(&a, 9_000_000, 100);
    let mut ruled_out = 0;
    for id in &absent {
        if !late.may_contain(id).await {
            ruled_out += 1;
        }
    }
    assert!(ruled_out > 90, "{ruled_out} of 100 ruled out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_folded_into_the_snapshot_and_nothing_is_lost() {
    let server = RedisServer::start();
    let small = |server: &RedisServer| {
        ExistenceFilter::builder()
            .expected_items(10_000)
            .shared("small", store(server))
            .max_log_items(16)
            .build()
    };
    let (a, b) = (small(&server), small(&server));
    a.load(ids(1..=100)).await.unwrap();
    b.load(ids(1..=100)).await.unwrap();
    let created = unseen(&a, 5_000_000, 300);
    for (i, id) in created.iter().enumerate() {
        let (mine, other) = if i % 3 == 0 { (&b, &a) } else { (&a, &b) };
        mine.insert(id).await.unwrap();
        assert!(other.may_contain(id).await, "{id} after its insert");
    }
    for id in &created {
        assert!(a.may_contain(id).await && b.may_contain(id).await, "{id}");
    }
    let mut c = server.connection();
    let logs: Vec<String> = c.keys("tc:f:{small:*}:log").unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let len: u64 = c.strlen(&logs[0]).unwrap();
    assert!(len <= 17 * 8, "the log was folded: {len} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_an_unknown_id_is_reported_present_at_once() {
    let mut server = RedisServer::start();
    let (a, b) = (instance(&server), instance(&server));
    a.load(ids(1..=1_000)).await.unwrap();
    b.load(ids(1..=1_000)).await.unwrap();
    let [unknown, written]: [String; 2] = unseen(&a, 7_000_000, 2).try_into().unwrap();
    server.stop();
    let started = Instant::now();
    for _ in 0..50 {
        assert!(
            a.may_contain(&unknown).await,
            "fail-open: the origin is asked"
        );
    }
    assert!(a.stats().fail_open >= 50);
    // Known ids never needed Redis.
    assert!(a.may_contain("7").await);
    // An insert that cannot reach Redis says so, and holds locally.
    assert!(matches!(
        a.insert(&written).await,
        Err(FilterError::Unshared(_))
    ));
    assert!(a.may_contain(&written).await);
    assert!(
        started.elapsed() < OP_TIMEOUT * 10,
        "no check waited for the timeout each time: {:?}",
        started.elapsed()
    );
    // Redis comes back empty; A's next contact publishes its whole copy.
    server.restart();
    tokio_wait(|| async { a.sync().await.is_ok() }).await;
    assert!(
        b.may_contain(&written).await,
        "B finds what A wrote during the outage"
    );
    assert!(b.may_contain("7").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_filter_keys_is_removed_and_never_a_wrong_no() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server), instance(&server));
    a.load(ids(1..=1_000)).await.unwrap();
    b.load(ids(1..=1_000)).await.unwrap();
    let [first, second]: [String; 2] = unseen(&a, 8_000_000, 2).try_into().unwrap();
    a.insert(&first).await.unwrap();
    let mut c = server.connection();
    let log: String = c
        .keys::<_, Vec<String>>("tc:f:{products:*}:log")
        .unwrap()
        .remove(0);
    // A torn hash at the end of the log, then the epoch as a list.
    let _: () = redis::cmd("APPEND")
        .arg(&log)
        .arg("abc")
        .query(&mut c)
        .unwrap();
    let epoch = log.replace(":log", ":epoch");
    let _: () = c.del(&epoch).unwrap();
    let _: () = c.rpush(&epoch, "x").unwrap();
    b.insert(&second).await.unwrap();
    assert!(a.may_contain(&first).await && a.may_contain(&second).await);
    assert!(b.may_contain(&first).await && b.may_contain(&second).await);
    let len: u64 = c.strlen(&log).unwrap();
    assert_eq!(len % 8, 0, "the torn tail was cut");
}

async fn tokio_wait<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn a_key_inserted_on_any_instance_is_present_on_every_instance(
        keys in proptest::collection::vec((".{1,16}", 0usize..3), 1..40),
    ) {
        let server = RedisServer::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let instances = [instance(&server), instance(&server), instance(&server)];
            for (key, on) in &keys {
                instances[*on].insert(key).await.unwrap();
                for i in &instances {
                    prop_assert!(i.may_contain(key).await, "{key:?}");
                }
            }
            Ok(())
        })?;
    }
}
