//! An L2 hit is one `MGET`, and no invalidation made anywhere is missed
//! for it, against a real redis-server.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{RedisStore, Store};
use tower_cache_tests::RedisServer;

fn entry(v: &str) -> Entry {
    Entry::new(Bytes::from(v.to_owned())).with_ttl(Duration::from_secs(60))
}

fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn value(store: &RedisStore, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .unwrap()
        .map(|e| String::from_utf8(e.value().to_vec()).unwrap())
}

/// `calls` of each command since the last reset, by name.
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
        .filter_map(|l| {
            l.strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l2_hit_is_one_mget() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    store
        .put("k", entry("v").with_tags(["product:1", "products"]))
        .await
        .unwrap();
    // The first read also reads the versions the entry needs.
    assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut server.connection())
        .unwrap();
    for _ in 0..100 {
        assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
    }
    assert_eq!(calls(&server, "mget"), 100);
    assert_eq!(calls(&server, "evalsha") + calls(&server, "eval"), 0);
    assert_eq!(calls(&server, "get"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_by_another_instance_reach_the_next_hit() {
    let server = RedisServer::start();
    let (reader, writer) = (redis_store(&server), redis_store(&server));
    reader
        .put("tagged", entry("t").with_tags(["product:1"]))
        .await
        .unwrap();
    reader.put("other", entry("o")).await.unwrap();
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    assert_eq!(value(&reader, "other").await.as_deref(), Some("o"));

    writer.remove_tag("product:1").await.unwrap();
    assert_eq!(value(&reader, "tagged").await, None);
    assert_eq!(value(&reader, "other").await.as_deref(), Some("o"));

    writer.invalidate_all().await.unwrap();
    assert_eq!(value(&reader, "other").await, None);
    reader.put("other", entry("o2")).await.unwrap();
    assert_eq!(value(&reader, "other").await.as_deref(), Some("o2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_counter_never_lets_an_invalidated_entry_back() {
    let server = RedisServer::start();
    let (reader, writer) = (redis_store(&server), redis_store(&server));
    reader
        .put("tagged", entry("t").with_tags(["p"]))
        .await
        .unwrap();
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    let mut conn = server.connection();
    let _: () = conn.del("{tc:}v").unwrap();
    // Read with no counter: the versions are read again.
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    let _: () = conn.set("{tc:}v", "not a number").unwrap();
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    writer.remove_tag("p").await.unwrap();
    assert_eq!(value(&reader, "tagged").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_key_overwritten_without_an_invalidation_is_seen_at_the_next_one() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    store
        .put("tagged", entry("t").with_tags(["p"]))
        .await
        .unwrap();
    assert_eq!(value(&store, "tagged").await.as_deref(), Some("t"));
    let mut conn = server.connection();
    let _: () = conn.rpush("{tc:}t:p", "x").unwrap();
    // Any invalidation in the namespace, of another tag here.
    store.remove_tag("unrelated").await.unwrap();
    assert_eq!(value(&store, "tagged").await, None);
}
