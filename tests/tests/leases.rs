//! One load per cluster of instances: leases in Redis, so that of every
//! instance missing a key at once, one loads it and the others wait for its
//! value.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{Lease, MemoryStore, RedisStore, Store};
use tower_cache_tests::{PATIENCE, RedisServer, wait_until};

/// Generous per-operation timeout: nothing here is about timeouts.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// One instance's L2: a store of its own, on connections of its own.
fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .op_timeout(OP_TIMEOUT)
        .build()
        .unwrap()
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_granted_to_one_instance_until_released() {
    let server = RedisServer::start();
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
    assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::Granted);
    // Every lease expires by itself.
    let pttl: i64 = server.connection().pttl("tc:l:{k}").unwrap();
    assert!((1..=60_000).contains(&pttl), "{pttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_holder_died_expires() {
    let server = RedisServer::start();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_ends_the_lease() {
    let server = RedisServer::start();
    let (a, b) = (redis_store(&server), redis_store(&server));
    assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::Granted);
    b.remove("k").await.unwrap();
    assert_eq!(b.lease("k", 2, TTL).await.unwrap(), Lease::Granted);
    // The first holder's release leaves the new holder's lease alone.
    a.release("k", 1).await.unwrap();
    assert_eq!(a.lease("k", 1, TTL).await.unwrap(), Lease::Taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_a_lease_key_never_holds_loads_back_for_good() {
    let server = RedisServer::start();
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
    assert_eq!(store.lease("k", 1, TTL).await.unwrap(), Lease::Granted);
}

#[tokio::test]
async fn a_store_of_one_process_needs_no_lease() {
    let store = MemoryStore::default();
    assert_eq!(store.lease("k", 1, TTL).await.unwrap(), Lease::Local);
    store.release("k", 1).await.unwrap();
}
