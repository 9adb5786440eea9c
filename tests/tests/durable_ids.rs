//! Write-behind's durable log against a real Redis: every delivered write
//! carries the log ids of the writes it stands for, the same when it is
//! delivered again, so a writer that records them applies each write once.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tower::{Service, ServiceExt, service_fn};
use tower_cache::layer::write_behind::{DurableLog, EntryId};
use tower_cache::store::{MemoryStore, RedisQueue, RedisStore};
use tower_cache::{Cache, Policy, Write, WriteBehindLayer};
use tower_cache_tests::{PATIENCE, RedisServer};
use tower_layer::Layer;

fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn counter(queue: RedisQueue) -> WriteBehindLayer<u64, i64, MemoryStore> {
    WriteBehindLayer::<u64, i64, _>::new(
        Cache::new(MemoryStore::default()),
        "views",
        Policy::default(),
    )
    .max_delay(Duration::from_secs(3_600))
    .merge(|a, b| a + b)
    .durable(queue)
}

/// A write as the writer saw it: key, value and log ids.
type Seen = (u64, i64, Vec<String>);

fn seen(write: &Write<u64, i64>) -> Seen {
    let ids = write.log_ids().iter().map(|id| id.to_string()).collect();
    (write.key, write.value, ids)
}

/// The database of an exactly-once writer: counts, and the log ids applied.
#[derive(Default)]
struct Db {
    views: HashMap<u64, i64>,
    applied: HashSet<EntryId>,
    /// Every write the writer was given, applied or skipped.
    seen: Vec<Seen>,
}

impl Db {
    /// Applies `batch` as one transaction: a write one of whose ids is
    /// applied already is skipped.
    fn apply(&mut self, batch: &[Write<u64, i64>]) {
        for write in batch {
            self.seen.push(seen(write));
            assert!(!write.log_ids().is_empty(), "a durable write has log ids");
            if write.log_ids().iter().any(|id| self.applied.contains(id)) {
                continue;
            }
            self.applied.extend(write.log_ids().iter().cloned());
            *self.views.entry(write.key).or_default() += write.value;
        }
    }
}

type Shared = Arc<Mutex<Db>>;

/// Acknowledges 5 increments of key 7 and 1 of key 8 as `consumer`; its
/// writer applies the batch to `db` and then never answers, and the
/// process "dies" there (the worker is dropped): the writes are applied,
/// and still pending in the log. Returns what the writer was given.
async fn apply_then_die(queue: RedisQueue, db: &Shared) -> Vec<Seen> {
    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
    let taken_tx = Arc::new(Mutex::new(Some(taken_tx)));
    let writer = {
        let db = db.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            db.lock().unwrap().apply(&batch);
            if let Some(tx) = taken_tx.lock().unwrap().take() {
                let _ = tx.send(batch.iter().map(seen).collect::<Vec<_>>());
            }
            std::future::pending::<Result<(), std::io::Error>>()
        })
    };
    let (svc, worker) = counter(queue).pair(writer);
    let worker = tokio::spawn(worker);
    for key in [7, 7, 8, 7, 7, 7] {
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    let handle = svc.handle();
    let flush = tokio::spawn(async move { handle.flush().await });
    let taken = tokio::time::timeout(PATIENCE, taken_rx)
        .await
        .expect("the writer is given the batch")
        .unwrap();
    // Dies between the writer's effect and the log's acknowledgement.
    worker.abort();
    flush.abort();
    let _ = worker.await;
    drop(svc);
    taken
}

/// A writer applying every batch to `db`.
fn exactly_once_writer(
    db: &Shared,
) -> impl Service<Vec<Write<u64, i64>>, Response = (), Error = std::io::Error, Future: Send>
+ Send
+ 'static {
    let db = db.clone();
    service_fn(move |batch: Vec<Write<u64, i64>>| {
        db.lock().unwrap().apply(&batch);
        async { Ok::<_, std::io::Error>(()) }
    })
}

fn sorted(mut writes: Vec<Seen>) -> Vec<Seen> {
    writes.sort();
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_the_coalesced_write_again_with_the_same_ids() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    let db = Shared::default();
    let queue = RedisQueue::new(&l2, "views").consumer("pod-a");
    let first = apply_then_die(queue.clone(), &db).await;
    let key7 = first.iter().find(|w| w.0 == 7).unwrap();
    assert_eq!(
        (key7.1, key7.2.len()),
        (5, 5),
        "five increments as one write, with the ids of all five"
    );
    assert_eq!(
        queue.len().await.unwrap(),
        2,
        "the log holds the coalesced write as one entry, beside key 8's"
    );

    // The restart, under the same consumer name, delivers what was left.
    let svc = counter(queue.clone()).layer(exactly_once_writer(&db));
    svc.handle().flush().await.unwrap();
    let again: Vec<Seen> = db.lock().unwrap().seen[first.len()..].to_vec();
    assert_eq!(
        sorted(again),
        sorted(first),
        "the same writes, with the same ids"
    );
    assert_eq!(
        db.lock().unwrap().views,
        HashMap::from([(7, 5), (8, 1)]),
        "each acknowledged increment applied once"
    );
    assert_eq!(queue.len().await.unwrap(), 0);
    assert_eq!(queue.pending().await.unwrap(), 0);
    svc.handle().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_a_dead_consumers_writes_sees_the_same_ids() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    let db = Shared::default();
    let claim_after = Duration::from_millis(300);
    let first = apply_then_die(
        RedisQueue::new(&l2, "views")
            .consumer("pod-a")
            .claim_after(claim_after),
        &db,
    )
    .await;
    let peer = RedisQueue::new(&l2, "views")
        .consumer("pod-b")
        .claim_after(claim_after);
    let svc = counter(peer.clone()).layer(exactly_once_writer(&db));
    let claimed = tower_cache_tests::wait_until(PATIENCE, || async {
        db.lock().unwrap().seen.len() >= first.len() * 2
    })
    .await;
    assert!(claimed.is_some(), "the peer claims what pod-a left");
    let again: Vec<Seen> = db.lock().unwrap().seen[first.len()..].to_vec();
    assert_eq!(sorted(again), sorted(first));
    assert_eq!(db.lock().unwrap().views, HashMap::from([(7, 5), (8, 1)]));
    let settled =
        tower_cache_tests::wait_until(PATIENCE, || async { peer.pending().await.unwrap() == 0 })
            .await;
    assert!(settled.is_some(), "the claimed writes are acknowledged");
    svc.handle().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_failing_once_is_given_the_same_ids_again() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    let calls = Arc::new(Mutex::new(Vec::<Vec<Seen>>::new()));
    let writer = {
        let calls = calls.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let mut calls = calls.lock().unwrap();
            calls.push(batch.iter().map(seen).collect());
            let result = if calls.len() == 1 {
                Err(std::io::Error::other("the database is busy"))
            } else {
                Ok(())
            };
            async move { result }
        })
    };
    let svc = counter(RedisQueue::new(&l2, "retried"))
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .layer(writer);
    for key in [1, 2, 1] {
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    svc.handle().flush().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], calls[1], "the retry carries the same ids");
    let ids: Vec<usize> = calls[0].iter().map(|w| w.2.len()).collect();
    assert_eq!(
        ids,
        vec![2, 1],
        "key 1 stands for two writes, key 2 for one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_log_coalesced_writes_go_out_one_by_one_with_their_own_ids() {
    let mut server = RedisServer::start();
    let l2 = redis_store(&server);
    let db = Shared::default();
    let svc = counter(RedisQueue::new(&l2, "away")).layer(exactly_once_writer(&db));
    for _ in 0..3 {
        svc.clone().oneshot(Write::new(7, 1)).await.unwrap();
    }
    // The log cannot take the three as one entry: each goes out alone.
    server.stop();
    svc.handle().flush().await.unwrap();
    let db = db.lock().unwrap();
    let writes: Vec<(u64, i64, usize)> = db
        .seen
        .iter()
        .map(|(key, value, ids)| (*key, *value, ids.len()))
        .collect();
    assert_eq!(writes, vec![(7, 1, 1); 3]);
    let ids: HashSet<&String> = db.seen.iter().flat_map(|w| &w.2).collect();
    assert_eq!(ids.len(), 3, "each with its own id");
    assert_eq!(db.views, HashMap::from([(7, 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_takes_only_entries_the_consumer_still_holds() {
    let server = RedisServer::start();
    let l2 = redis_store(&server);
    let a = RedisQueue::new(&l2, "log").consumer("pod-a");
    let b = RedisQueue::new(&l2, "log").consumer("pod-b");
    a.open().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(a.append(Bytes::from(format!("w{n}"))).await.unwrap());
    }
    let group = vec![(ids[..2].to_vec(), Bytes::from_static(b"w0+w1"))];
    assert!(
        b.replace(&group).await.is_err(),
        "another consumer's entries are not replaced"
    );
    assert_eq!(a.len().await.unwrap(), 3, "and nothing changed");

    let replaced = a.replace(&group).await.unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(a.len().await.unwrap(), 2, "two entries became one");
    let pending = a.own_pending(None, 10).await.unwrap();
    let pending: Vec<(&EntryId, &[u8])> = pending
        .iter()
        .map(|e| (&e.id, e.payload.as_ref()))
        .collect();
    assert_eq!(
        pending,
        vec![(&ids[2], &b"w2"[..]), (&replaced[0], &b"w0+w1"[..])],
        "the new entry is pending for its consumer, the old ones are gone"
    );
    assert!(
        a.replace(&group).await.is_err(),
        "entries already replaced are not replaced twice"
    );
    assert_eq!(a.oldest().await.unwrap(), Some(ids[2].clone()));
}
