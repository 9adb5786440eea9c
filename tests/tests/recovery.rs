//! Two instances over one real redis-server while it restarts, pauses or
//! dies: what their L1s serve, and what the origin pays for it.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceExt, service_fn};
use tower_cache::store::{MemoryStore, RedisStore, TieredStore};
use tower_cache::{Cache, Policy, ReadThroughLayer};
use tower_cache_tests::{PATIENCE, RedisServer, wait_until};
use tower_layer::Layer;

/// How many distinct hot keys the readers cycle through.
const HOT_KEYS: u64 = 120;

/// Origin loads of one instance, per key, and the value each key has in
/// the database (shared by the instances).
#[derive(Clone, Default)]
struct Origin {
    loads: Arc<Mutex<HashMap<u64, usize>>>,
    versions: Arc<Mutex<HashMap<u64, u64>>>,
}

impl Origin {
    fn total(&self) -> usize {
        self.loads.lock().unwrap().values().sum()
    }

    fn per_key(&self) -> HashMap<u64, usize> {
        self.loads.lock().unwrap().clone()
    }

    /// The value of `id` as the database has it now.
    fn value(&self, id: u64) -> String {
        let version = self.versions.lock().unwrap().get(&id).copied().unwrap_or(0);
        format!("product {id} v{version}")
    }

    /// A write to the database.
    fn write(&self, id: u64) {
        *self.versions.lock().unwrap().entry(id).or_default() += 1;
    }
}

/// An instance's loader: counts its calls in `counts` and reads `database`.
fn loader(
    counts: &Origin,
    database: &Origin,
) -> impl Service<u64, Response = String, Error = std::io::Error, Future = impl Send + use<>>
+ Clone
+ Send
+ use<> {
    let (loads, database) = (counts.loads.clone(), database.clone());
    service_fn(move |id: u64| {
        *loads.lock().unwrap().entry(id).or_default() += 1;
        let value = database.value(id);
        async move { Ok::<_, std::io::Error>(value) }
    })
}

/// One instance: its own L1, its own Redis connections. L1 copies outlive
/// every wait here, so that only the store's own rules drop or mark them.
fn instance(server: &RedisServer, max_unsynced: Duration) -> Cache<TieredStore> {
    let l2 = RedisStore::builder(server.url())
        .op_timeout(Duration::from_millis(500))
        .build()
        .expect("valid URL");
    let store = TieredStore::builder(MemoryStore::default(), l2)
        .l1_ttl(Duration::from_secs(3_600))
        .retry_interval(Duration::from_millis(200))
        .max_unsynced(max_unsynced)
        .build();
    Cache::new(store)
}

/// Products fresh for ten minutes and served stale for one more while a
/// background reload runs.
fn products() -> Policy {
    Policy::ttl(Duration::from_secs(600)).stale_while_revalidate(Duration::from_secs(60))
}

/// A Redis restart under load costs the origin at most one load per hot
/// key and instance: L1 entries are marked to revalidate, not dropped, and
/// each is served stale while one background reload replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_costs_at_most_one_load_per_hot_key_and_instance() {
    let mut server = RedisServer::start();
    let database = Origin::default();
    let origins = [Origin::default(), Origin::default()];
    let caches = [
        instance(&server, Duration::from_secs(60)),
        instance(&server, Duration::from_secs(60)),
    ];
    for cache in &caches {
        cache.store().ready().await;
    }
    let services: Vec<_> = caches
        .iter()
        .zip(&origins)
        .map(|(cache, origin)| {
            ReadThroughLayer::new(cache.clone(), "products", products())
                .namespace("p:")
                .layer(loader(origin, &database))
        })
        .collect();
    for svc in &services {
        for id in 0..HOT_KEYS {
            assert_eq!(svc.clone().oneshot(id).await.unwrap(), database.value(id));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for task in 0..200u64 {
        let svc = services[(task % 2) as usize].clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut id = task;
            while !stop.load(Ordering::Acquire) {
                id = (id * 31 + 7) % HOT_KEYS;
                svc.clone().oneshot(id).await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    // And a trickle of reads of keys read once, which miss L1 and ask
    // Redis, as real traffic does.
    for task in 0..2u64 {
        let svc = services[task as usize].clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut id = 1_000_000 * (task + 1);
            while !stop.load(Ordering::Acquire) {
                id += 1;
                svc.clone().oneshot(id).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before: Vec<_> = origins.iter().map(Origin::per_key).collect();

    server.restart();
    let resubscribed = wait_until(PATIENCE, || async {
        caches
            .iter()
            .all(|cache| cache.store().stats().subscriptions >= 2)
    })
    .await;
    assert!(resubscribed.is_some(), "both instances re-subscribed");
    // The readers go on for five seconds after Redis is back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Release);
    for reader in readers {
        reader.await.unwrap();
    }

    let mut total = 0;
    let mut worst = (0, 0, 0);
    for (instance, (origin, before)) in origins.iter().zip(&before).enumerate() {
        for (id, loads) in origin
            .per_key()
            .into_iter()
            .filter(|(id, _)| *id < HOT_KEYS)
        {
            let since = loads - before.get(&id).copied().unwrap_or(0);
            total += since;
            worst = worst.max((since, instance, id));
        }
    }
    println!(
        "origin loads of hot keys after the Redis restart: {total} for {HOT_KEYS} hot keys \
         on 2 instances (at most {} allowed)",
        2 * HOT_KEYS
    );
    let (most, instance, id) = worst;
    assert!(
        most <= 1,
        "instance {instance}: key {id} loaded {most} times after the restart"
    );
    assert!(origins.iter().map(Origin::total).sum::<usize>() > 0);
}

/// A read layer over an instance, as the tests call it.
type Products = BoxCloneService<u64, String, BoxError>;

/// Two instances over `server`, each with its read layer under `policy`
/// over its own counting loader of `database`, both holding `key`.
struct Pair {
    caches: [Cache<TieredStore>; 2],
    origins: [Origin; 2],
    services: [Products; 2],
}

async fn pair(
    server: &RedisServer,
    database: &Origin,
    max_unsynced: Duration,
    policy: &Policy,
    key: u64,
) -> Pair {
    let caches = [
        instance(server, max_unsynced),
        instance(server, max_unsynced),
    ];
    let origins = [Origin::default(), Origin::default()];
    let services = [0, 1].map(|i| {
        BoxCloneService::new(
            ReadThroughLayer::new(caches[i].clone(), "products", policy.clone())
                .namespace("p:")
                .layer(loader(&origins[i], database)),
        )
    });
    for (cache, svc) in caches.iter().zip(&services) {
        cache.store().ready().await;
        assert_eq!(svc.clone().oneshot(key).await.unwrap(), database.value(key));
    }
    Pair {
        caches,
        origins,
        services,
    }
}

/// A [`pair`] on the products route that never marks L1 on a timer.
async fn products_pair(server: &RedisServer, database: &Origin) -> Pair {
    pair(server, database, Duration::from_secs(3_600), &products(), 7).await
}

/// While Redis cannot carry invalidations, a write and remove on B reach
/// only the database; A still sees the new value within `max_unsynced`
/// (plus the time to notice), not after its L1 TTL.
async fn a_write_elsewhere_is_seen_within_max_unsynced(
    cut_off: fn(&mut RedisServer),
    restore: fn(&mut RedisServer),
) {
    let mut server = RedisServer::start();
    let database = Origin::default();
    let window = Duration::from_secs(2);
    // No stale window: a read past `max_unsynced` waits for its reload.
    let policy = Policy::ttl(Duration::from_secs(600));
    let Pair {
        caches, services, ..
    } = pair(&server, &database, window, &policy, 7).await;
    let old = database.value(7);

    cut_off(&mut server);
    database.write(7);
    caches[1].remove("p:7").await;
    let new = database.value(7);
    assert_ne!(old, new);

    let a = services[0].clone();
    let seen = wait_until(window + PATIENCE, || {
        let a = a.clone();
        let new = new.clone();
        async move { a.oneshot(7).await.unwrap() == new }
    })
    .await;
    assert!(seen.is_some(), "A never read the write made on B");
    println!(
        "A read B's write {:?} after it, max_unsynced {window:?}",
        seen.unwrap()
    );
    restore(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_elsewhere_is_seen_within_max_unsynced_while_redis_is_paused() {
    a_write_elsewhere_is_seen_within_max_unsynced(
        |server| server.pause(),
        |server| server.resume(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_elsewhere_is_seen_within_max_unsynced_while_redis_is_down() {
    a_write_elsewhere_is_seen_within_max_unsynced(RedisServer::stop, |_| {}).await;
}

/// Inside the window, L1 goes on serving what it holds, without asking
/// the origin, though the channel is known to be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_max_unsynced_l1_serves_without_the_origin() {
    let server = RedisServer::start();
    let database = Origin::default();
    let Pair {
        caches,
        origins,
        services,
    } = products_pair(&server, &database).await;
    let old = database.value(7);
    let loads = origins[0].total();

    server.pause();
    let lost = wait_until(PATIENCE, || async { !caches[0].store().subscribed() }).await;
    assert!(lost.is_some(), "A found the channel lost");
    database.write(7);
    for _ in 0..1_000 {
        assert_eq!(services[0].clone().oneshot(7).await.unwrap(), old);
    }
    assert_eq!(
        origins[0].total(),
        loads,
        "no origin call inside the window"
    );
    server.resume();
}

/// A remove made on B while Redis was away, replayed once it is back,
/// leaves no stale value on A, even on a route that serves stale entries
/// and whether or not A heard the replayed notice: A's L1 entry is out of
/// sync, and L2 (restarted empty) does not vouch for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_made_while_redis_was_away_leaves_no_stale_value_after_it_returns() {
    let mut server = RedisServer::start();
    let database = Origin::default();
    let Pair {
        caches, services, ..
    } = products_pair(&server, &database).await;

    server.stop();
    database.write(7);
    caches[1].remove("p:7").await;
    assert_eq!(caches[1].store().stats().invalidations_pending, 1);
    let new = database.value(7);

    server.restart();
    let replayed = wait_until(PATIENCE, || async {
        let b = caches[1].store();
        caches.iter().all(|cache| cache.store().subscribed())
            && b.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed.is_some(), "B replayed its remove");
    // Wait until A can ask L2 again: its first read after that is the
    // one that must not be stale.
    let open = wait_until(PATIENCE, || async { caches[0].store().l2_available() }).await;
    assert!(open.is_some(), "A uses L2 again");
    assert_eq!(services[0].clone().oneshot(7).await.unwrap(), new);
}

/// Past `max_unsynced` with Redis down, a hot key on a route with a
/// stale-while-revalidate window is served stale at once while one
/// background reload brings the new value: hundreds of readers, one
/// origin load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_unsynced_a_hot_key_is_served_stale_while_one_reload_runs() {
    let mut server = RedisServer::start();
    let database = Origin::default();
    let Pair {
        caches,
        origins,
        services,
    } = pair(&server, &database, Duration::from_secs(2), &products(), 7).await;
    let loads = origins[0].total();

    server.stop();
    database.write(7);
    let new = database.value(7);
    // When the first reader saw the new value: L1 is marked out of sync
    // again every window while Redis stays down, so a machine too busy to
    // let every reader see it within one window may reload once more.
    let first_seen: Arc<std::sync::OnceLock<std::time::Instant>> = Arc::default();
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let (a, new, first_seen) = (services[0].clone(), new.clone(), first_seen.clone());
            tokio::spawn(tokio::time::timeout(PATIENCE, async move {
                while a.clone().oneshot(7).await.unwrap() != new {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                first_seen.get_or_init(std::time::Instant::now);
            }))
        })
        .collect();
    for reader in readers {
        assert!(reader.await.unwrap().is_ok(), "a reader saw the write");
    }
    let windows = first_seen
        .get()
        .map_or(0, |t| t.elapsed().as_millis() / 2_000);
    let reloads = origins[0].total() - loads;
    assert!(
        reloads as u128 <= 1 + windows,
        "{reloads} reloads for 200 readers within {} windows",
        windows + 1
    );
    assert!(reloads >= 1, "the new value came from one reload");
    assert!(
        caches[0].store().stats().l1_unsynced > 0,
        "the entry out of sync was served while it reloaded"
    );
}
