//! An L2 hit is one `GET` on the connection on which Redis tracks the
//! namespace's counter (one `MGET` without it), and no invalidation made
//! anywhere is missed for it, against a real redis-server.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use tower_cache::Entry;
use tower_cache::store::{RedisStore, Store, StoreError};
use tower_cache_tests::{PATIENCE, RedisServer, wait_until};

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

/// Reads `key` `times` times, each served `want`.
async fn serves(store: &RedisStore, key: &str, want: &str, times: usize) {
    for _ in 0..times {
        assert_eq!(value(store, key).await.as_deref(), Some(want));
    }
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

/// The ids of the clients on which Redis tracks keys (`CLIENT LIST`
/// flag `t`).
fn tracking_clients(server: &RedisServer) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.connection())
        .unwrap();
    list.lines()
        .filter(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("flags="))
                .is_some_and(|flags| flags.contains('t'))
        })
        .filter_map(|line| Some(line.split(' ').next()?.strip_prefix("id=")?.to_owned()))
        .collect()
}

/// Waits until `n` clients have tracking on.
async fn until_tracking(server: &RedisServer, n: usize) {
    let tracked = wait_until(PATIENCE, || async { tracking_clients(server).len() >= n }).await;
    assert!(tracked.is_some(), "no tracking connection came up");
}

/// Waits until a read of `key` (served `want`) costs Redis one `GET` and
/// nothing else: the store's tracked connection is up and the counter
/// read on it.
async fn until_one_get(server: &RedisServer, store: &RedisStore, key: &str, want: &str) {
    let one = wait_until(PATIENCE, || async {
        server.reset_stats();
        let served = value(store, key).await;
        assert_eq!(served.as_deref(), Some(want));
        calls(server, "get") == 1 && calls(server, "mget") + calls(server, "evalsha") == 0
    })
    .await;
    assert!(one.is_some(), "a read never became one GET");
}

/// Two stores on `server` with their tracked connections up, and the
/// entry `tagged` (`t`, tagged `p`) read once.
async fn reader_and_writer(server: &RedisServer) -> (RedisStore, RedisStore) {
    let (reader, writer) = (redis_store(server), redis_store(server));
    until_tracking(server, 2).await;
    reader
        .put("tagged", entry("t").with_tags(["p"]))
        .await
        .unwrap();
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    (reader, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l2_hit_is_one_get_once_the_counter_is_tracked() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    until_tracking(&server, 1).await;
    store
        .put("k", entry("v").with_tags(["product:1", "products"]))
        .await
        .unwrap();
    // The first reads read the versions the entry needs and the counter.
    until_one_get(&server, &store, "k", "v").await;
    server.reset_stats();
    serves(&store, "k", "v", 100).await;
    assert_eq!(calls(&server, "get"), 100);
    assert_eq!(calls(&server, "mget"), 0);
    assert_eq!(calls(&server, "evalsha") + calls(&server, "eval"), 0);
    assert_eq!(calls(&server, "client|caching"), 0);

    // An invalidation elsewhere: the next reads read the versions and the
    // counter again (the message about it comes before the reply to the
    // first read after it; the second reads the counter again), the ones
    // after are one `GET` again.
    let writer = redis_store(&server);
    writer.remove_tag("unrelated").await.unwrap();
    serves(&store, "k", "v", 2).await;
    server.reset_stats();
    serves(&store, "k", "v", 10).await;
    assert_eq!(calls(&server, "get"), 10);
    assert_eq!(calls(&server, "mget") + calls(&server, "evalsha"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l2_hit_is_one_mget_without_client_tracking() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(Duration::from_secs(5))
        .client_tracking(false)
        .build()
        .unwrap();
    store
        .put("k", entry("v").with_tags(["product:1", "products"]))
        .await
        .unwrap();
    // The first read also reads the versions the entry needs.
    assert_eq!(value(&store, "k").await.as_deref(), Some("v"));
    server.reset_stats();
    serves(&store, "k", "v", 100).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_started_after_an_invalidation_serves_what_it_invalidated() {
    const ROUNDS: usize = 30;
    const READERS: usize = 3;
    const TASKS: usize = 200;
    let server = RedisServer::start();
    let readers: Vec<RedisStore> = (0..READERS).map(|_| redis_store(&server)).collect();
    let writer = redis_store(&server);
    until_tracking(&server, READERS + 1).await;
    // The last round whose invalidation has returned, plus one (0: none).
    let invalidated = Arc::new(AtomicUsize::new(0));
    let round = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let served_stale = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = readers[t % READERS].clone();
            let (invalidated, round, done) = (invalidated.clone(), round.clone(), done.clone());
            let (served_stale, hits) = (served_stale.clone(), hits.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    let r = round.load(Ordering::SeqCst);
                    let gone = invalidated.load(Ordering::SeqCst) > r;
                    if let Ok(Some(_)) = store.get(&format!("k{r}")).await {
                        hits.fetch_add(1, Ordering::SeqCst);
                        if gone {
                            served_stale.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for r in 0..ROUNDS {
        let tag = format!("g{r}");
        writer
            .put(&format!("k{r}"), entry("v").with_tags([tag.as_str()]))
            .await
            .unwrap();
        round.store(r, Ordering::SeqCst);
        // Every reader has served it (its versions known, the counter armed).
        for reader in &readers {
            let seen = wait_until(PATIENCE, || async {
                reader.get(&format!("k{r}")).await.unwrap().is_some()
            })
            .await;
            assert!(seen.is_some(), "round {r}: the entry was never served");
        }
        let before = hits.load(Ordering::SeqCst);
        let served = wait_until(PATIENCE, || async {
            hits.load(Ordering::SeqCst) > before + 50
        })
        .await;
        assert!(served.is_some(), "round {r}: the readers stopped");
        writer.remove_tag(&tag).await.unwrap();
        invalidated.store(r + 1, Ordering::SeqCst);
        let before = hits.load(Ordering::SeqCst);
        let read = wait_until(PATIENCE, || async { hits.load(Ordering::SeqCst) >= before }).await;
        assert!(read.is_some());
        // Reads go on for a while after the invalidation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(served_stale.load(Ordering::SeqCst), 0);
    assert!(hits.load(Ordering::SeqCst) > ROUNDS * 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_is_made_again_and_reads_go_on() {
    let server = RedisServer::start();
    let (reader, writer) = reader_and_writer(&server).await;
    let before = tracking_clients(&server);
    for id in &before {
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut server.connection())
            .unwrap();
    }
    // Served while the connection is down (on the main connection) and
    // once it is back; an invalidation made meanwhile is seen.
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    writer.remove_tag("p").await.unwrap();
    assert_eq!(value(&reader, "tagged").await, None);
    let remade = wait_until(PATIENCE, || async {
        let now = tracking_clients(&server);
        now.len() >= 2 && now.iter().all(|id| !before.contains(id))
    })
    .await;
    assert!(
        remade.is_some(),
        "the tracking connections were not made again"
    );
    reader
        .put("tagged", entry("t2").with_tags(["q"]))
        .await
        .unwrap();
    until_one_get(&server, &reader, "tagged", "t2").await;
    writer.remove_tag("q").await.unwrap();
    assert_eq!(value(&reader, "tagged").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_changed_by_anyone_is_read_again() {
    let server = RedisServer::start();
    let (reader, writer) = reader_and_writer(&server).await;
    let mut conn = server.connection();
    // Rewound by hand to a value seen before, then flushed: neither is an
    // invalidation, and each is seen as a change of the counter.
    let counter: String = conn.get("{tc:}v").unwrap_or_default();
    writer.remove_tag("other").await.unwrap();
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    if !counter.is_empty() {
        let _: () = conn.set("{tc:}v", &counter).unwrap();
    }
    writer.remove_tag("p").await.unwrap();
    assert_eq!(value(&reader, "tagged").await, None);
    reader
        .put("again", entry("a").with_tags(["r"]))
        .await
        .unwrap();
    assert_eq!(value(&reader, "again").await.as_deref(), Some("a"));
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    assert_eq!(value(&reader, "again").await, None);
    reader
        .put("again", entry("b").with_tags(["r"]))
        .await
        .unwrap();
    assert_eq!(value(&reader, "again").await.as_deref(), Some("b"));
    writer.remove_tag("r").await.unwrap();
    assert_eq!(value(&reader, "again").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_resp3_serves_hits_with_mget() {
    let server = RedisServer::start_with_args(&["--rename-command", "HELLO", ""]);
    let (reader, writer) = (redis_store(&server), redis_store(&server));
    reader
        .put("tagged", entry("t").with_tags(["p"]))
        .await
        .unwrap();
    assert_eq!(value(&reader, "tagged").await.as_deref(), Some("t"));
    server.reset_stats();
    serves(&reader, "tagged", "t", 20).await;
    assert_eq!(calls(&server, "mget"), 20);
    assert_eq!(calls(&server, "get"), 0);
    assert!(tracking_clients(&server).is_empty());
    writer.remove_tag("p").await.unwrap();
    assert_eq!(value(&reader, "tagged").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_never_holds_a_tracked_read() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .op_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    until_tracking(&server, 1).await;
    store.put("k", entry("v")).await.unwrap();
    until_one_get(&server, &store, "k", "v").await;

    server.pause();
    // Many reads waiting on the tracked connection at once: each comes
    // back, timed out (a layer answers it from the origin), though Redis
    // answers nothing.
    let started = std::time::Instant::now();
    let reads: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get("k").await })
        })
        .collect();
    for read in reads {
        let got = tokio::time::timeout(PATIENCE, read)
            .await
            .expect("a read waited on a stalled Redis")
            .unwrap();
        assert!(matches!(got, Err(StoreError::Timeout)), "{got:?}");
    }
    println!("every read came back after {:?}", started.elapsed());
    server.resume();
    let back = wait_until(PATIENCE, || async {
        matches!(store.get("k").await, Ok(Some(_)))
    })
    .await;
    assert!(back.is_some(), "reads never came back");
    // And through the tracked connection again.
    until_one_get(&server, &store, "k", "v").await;
}
