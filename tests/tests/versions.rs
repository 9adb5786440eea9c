//! Invalidations across instances whose clocks disagree: a real Redis orders
//! them by versions, so no instance's clock can bring back an invalidated
//! value nor keep a new one out.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tower_cache::store::{MemoryStore, RedisStore, Store, StoreError, TieredStore};
use tower_cache::{Cache, Entry, Fetched, Fill, Loaded, Policy, Profile};
use tower_cache_tests::{PATIENCE, RedisServer, command_calls, wait_until};

const SKEW_MS: u64 = 5_000;

/// A store as an instance whose clock is off by [`SKEW_MS`] writes to it:
/// every entry it stores carries timestamps that far ahead (or behind).
struct SkewedClock<St> {
    store: St,
    ahead: bool,
}

impl<St: Store> Store for SkewedClock<St> {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.store.get(key).await
    }
    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        let stored_at = if self.ahead {
            entry.stored_at() + SKEW_MS
        } else {
            entry.stored_at() - SKEW_MS
        };
        self.store.put(key, entry.with_stored_at(stored_at)).await
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.store.remove(key).await
    }
    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        self.store.remove_tag(tag).await
    }
    async fn version(&self) -> Result<u64, StoreError> {
        self.store.version().await
    }
}

async fn instance(server: &RedisServer) -> TieredStore {
    let l2 = RedisStore::builder(server.url())
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let store = TieredStore::builder(MemoryStore::new(1 << 20), l2)
        .l1_ttl(Duration::from_secs(3_600))
        .build();
    store.ready().await;
    store
}

fn profile() -> Profile {
    Profile::new("product", Policy::ttl(Duration::from_secs(600)))
}

/// The product row of the origin database.
type Db = Arc<Mutex<&'static str>>;

/// Reads the product from the origin now.
async fn read<St: Store>(cache: &Cache<St>, db: &Db) -> (String, bool) {
    let db = db.clone();
    let fetched = cache
        .fetch("products/1", &profile(), move || async move {
            let value = *db.lock().unwrap();
            Ok::<_, std::io::Error>(Loaded::<()>::Store(
                Fill::new(value).with_tags(vec!["product:1".into()]),
            ))
        })
        .await
        .unwrap();
    let hit = matches!(fetched, Fetched::Hit(_));
    let entry = fetched.entry().unwrap();
    (String::from_utf8(entry.value().to_vec()).unwrap(), hit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_runs_ahead_never_brings_back_an_invalidated_value() {
    let server = RedisServer::start();
    let a = Cache::new(SkewedClock {
        store: instance(&server).await,
        ahead: true,
    });
    let b = Cache::new(instance(&server).await);
    let db: Db = Arc::new(Mutex::new("old"));

    // A starts loading and reads the old row...
    let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow = {
        let (a, db, started, gate) = (a.clone(), db.clone(), started.clone(), gate.clone());
        tokio::spawn(async move {
            a.fetch("products/1", &profile(), move || async move {
                let value = *db.lock().unwrap();
                started.notify_one();
                gate.notified().await;
                Ok::<_, std::io::Error>(Loaded::<()>::Store(
                    Fill::new(value).with_tags(vec!["product:1".into()]),
                ))
            })
            .await
            .unwrap()
        })
    };
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .unwrap();
    // ...B writes the row and invalidates the product, earlier than A's
    // clock says A's load started...
    *db.lock().unwrap() = "new";
    b.remove_tag("product:1").await;
    // ...and only then does A's load finish and store.
    gate.notify_one();
    tokio::time::timeout(PATIENCE, slow).await.unwrap().unwrap();

    assert_eq!(read(&b, &db).await.0, "new", "B never reads the old value");
    assert_eq!(read(&a, &db).await.0, "new", "nor does A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_runs_behind_caches_right_after_an_invalidation() {
    let server = RedisServer::start();
    let a = Cache::new(SkewedClock {
        store: instance(&server).await,
        ahead: false,
    });
    let b = Cache::new(instance(&server).await);
    let db: Db = Arc::new(Mutex::new("old"));
    assert_eq!(read(&a, &db).await, ("old".into(), false));

    *db.lock().unwrap() = "new";
    b.remove_tag("product:1").await;
    // A's L1 copy goes when the invalidation reaches A.
    let heard = wait_until(PATIENCE, || async {
        a.store().store.stats().invalidations_received >= 1
    })
    .await;
    assert!(heard.is_some(), "A hears of the invalidation");
    let (value, _) = read(&a, &db).await;
    // A's clock is seconds behind B's: the value it loads after the
    // invalidation is still cached and served from then on.
    assert_eq!(value, "new");
    assert_eq!(read(&a, &db).await, ("new".into(), true), "A's own read");
    let other = Cache::new(instance(&server).await);
    assert_eq!(read(&other, &db).await, ("new".into(), true), "from L2");
}

/// A miss makes four round trips to Redis: the read, the leader's second
/// read (which brings the invalidation version with it), the lease on the
/// load across instances and the checked write; the version costs no round
/// trip of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_reads_the_version_with_the_entry() {
    let server = RedisServer::start();
    // Without client tracking, each read is one `MGET`, counted below
    // (with it, the read is one `GET` or one pipeline: as many round
    // trips).
    let store = RedisStore::builder(server.url())
        .op_timeout(Duration::from_secs(5))
        .client_tracking(false)
        .build()
        .unwrap();
    let cache = Cache::new(store);
    let db: Db = Arc::new(Mutex::new("v"));
    // Loads the scripts into Redis.
    cache.remove_tag("warm").await;
    read(&cache, &db).await;
    // Round trips: every store operation is one script or one `MGET`
    // (the commands scripts run are counted apart).
    let calls = |server: &RedisServer| command_calls(server, &["evalsha", "eval", "mget"]);
    server.reset_stats();
    let fetched = cache
        .fetch("products/2", &profile(), || async {
            Ok::<_, std::io::Error>(Loaded::<()>::Store(Fill::new("2")))
        })
        .await
        .unwrap();
    assert!(matches!(fetched, Fetched::Miss(_)));
    assert_eq!(
        calls(&server),
        4,
        "read, versioned read, lease, checked write"
    );
}
