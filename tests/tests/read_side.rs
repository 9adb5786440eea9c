//! The read layers over a `TieredStore` with a real Redis: what the unit
//! tests prove against `MemoryStore`, proven again with L2 in the path.
//! Redis runs in real time, so the TTLs here are short instead of paused.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use redis::Commands;
use tower::{ServiceExt, service_fn};
use tower_cache::store::{MemoryStore, RedisStore, TieredStore};
use tower_cache::{Cache, CacheAsideLayer, Policy, ReadThroughLayer, RefreshAheadLayer};
use tower_cache_tests::origin::{Origin, get, send};
use tower_cache_tests::{PATIENCE, RedisServer, wait_until};
use tower_layer::Layer;

/// A generous Redis timeout, so that a slow machine does not turn L2 reads
/// into misses; and L1 copies that outlive every wait here, so that only an
/// invalidation message drops one.
fn tiered(server: &RedisServer) -> TieredStore {
    let l2 = RedisStore::builder(server.url())
        .op_timeout(Duration::from_secs(5))
        .build()
        .expect("valid URL");
    TieredStore::builder(MemoryStore::default(), l2)
        .l1_ttl(Duration::from_secs(3_600))
        .build()
}

/// The Redis key of the entry a GET of `uri` is stored under.
fn redis_key<St>(layer: &CacheAsideLayer<St>, uri: &str) -> String {
    let request = http::Request::get(uri).body(()).expect("valid request");
    let key = layer.key_for(&request).expect("a cacheable read");
    format!("{}e:{{{key}}}", tower_cache::store::DEFAULT_PREFIX)
}

fn cache(server: &RedisServer) -> Cache<TieredStore> {
    Cache::new(tiered(server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_misses_make_one_inner_call() {
    let server = RedisServer::start();
    let origin = Origin::default();
    origin.set_delay(Duration::from_millis(200));
    let svc =
        CacheAsideLayer::new(cache(&server), "slow", Policy::default()).layer(origin.service());
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { get(&svc, "http://h/slow").await.text() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "/slow #1");
    }
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_hits_through_l2_and_sees_writes_of_the_first() {
    let server = RedisServer::start();
    let a_cache = cache(&server);
    let b_cache = cache(&server);
    a_cache.store().ready().await;
    b_cache.store().ready().await;
    let origin = Origin::default();
    let a = CacheAsideLayer::new(a_cache, "p", Policy::default()).layer(origin.service());
    let b = CacheAsideLayer::new(b_cache, "p", Policy::default()).layer(origin.service());

    assert_eq!(get(&a, "http://h/products/1").await.x_cache, "MISS");
    let from_l2 = get(&b, "http://h/products/1").await;
    assert_eq!(
        (from_l2.x_cache.as_str(), from_l2.text()),
        ("HIT", "/products/1 #1".to_owned())
    );

    send(&a, Method::PUT, "http://h/products/1", &[]).await;
    let after = wait_until(PATIENCE, || async {
        get(&b, "http://h/products/1").await.text() != "/products/1 #1"
    })
    .await;
    assert!(
        after.is_some(),
        "B stops serving the old value after A's write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_and_stale_if_error_with_redis() {
    let server = RedisServer::start();
    let origin = Origin::default();
    let swr = CacheAsideLayer::new(
        cache(&server),
        "swr",
        Policy::ttl(Duration::from_millis(300))
            .jitter(0.0)
            .stale_while_revalidate(Duration::from_secs(5)),
    )
    .layer(origin.service());
    let first = get(&swr, "http://h/swr").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = get(&swr, "http://h/swr").await;
    assert_eq!(
        (stale.x_cache.as_str(), stale.body.clone()),
        ("STALE", first.body.clone())
    );
    let refreshed = wait_until(PATIENCE, || async {
        let r = get(&swr, "http://h/swr").await;
        r.x_cache == "HIT" && r.body != first.body
    })
    .await;
    assert!(refreshed.is_some(), "revalidated in the background");

    let sie = CacheAsideLayer::new(
        cache(&server),
        "sie",
        Policy::ttl(Duration::from_millis(300))
            .jitter(0.0)
            .stale_if_error(Duration::from_secs(5)),
    )
    .layer(origin.service());
    let good = get(&sie, "http://h/sie").await;
    origin.set_failing(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = get(&sie, "http://h/sie").await;
    assert_eq!((stale.x_cache.as_str(), stale.body), ("STALE", good.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_cached_for_the_negative_ttl_with_redis() {
    let server = RedisServer::start();
    let origin = Origin::default();
    let layer = CacheAsideLayer::new(
        cache(&server),
        "neg",
        Policy::ttl(Duration::from_secs(60))
            .jitter(0.0)
            .negative_ttl(Duration::from_secs(2)),
    );
    let key = redis_key(&layer, "http://h/missing");
    let svc = layer.layer(origin.service());
    assert_eq!(get(&svc, "http://h/missing").await.status, 404);
    assert_eq!(get(&svc, "http://h/missing").await.x_cache, "HIT");
    let pttl: i64 = server.connection().pttl(&key).unwrap();
    assert!((1..=2_000).contains(&pttl), "negative TTL in Redis: {pttl}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(get(&svc, "http://h/missing").await.x_cache, "MISS");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_redis_expiries_of_entries_written_together() {
    let server = RedisServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = {
        let calls = calls.clone();
        service_fn(move |id: u64| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(id) }
        })
    };
    let svc = ReadThroughLayer::new(cache(&server), "j", Policy::ttl(Duration::from_secs(100)))
        .namespace("j:")
        .layer(loader);
    let mut conn = server.connection();
    let mut ttls = Vec::new();
    for id in 0..100u64 {
        let written = Instant::now();
        svc.clone().oneshot(id).await.unwrap();
        let pttl: i64 = conn.pttl(format!("tc:e:{{j:{id}}}")).unwrap();
        // Within ±10 % of 100 s, less what has passed since the write
        // began (and a millisecond of rounding).
        let passed = written.elapsed().as_millis() as i64 + 1;
        assert!(
            (90_000 - passed..=110_000).contains(&pttl),
            "key {id}: {pttl} ms, {passed} ms after the write began"
        );
        ttls.push(pttl);
    }
    let seconds: std::collections::HashSet<_> = ttls.iter().map(|t| t / 1_000).collect();
    assert!(seconds.len() > 8, "spread over {} seconds", seconds.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_keeps_a_key_warm_with_redis() {
    let server = RedisServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = {
        let calls = calls.clone();
        service_fn(move |_: u64| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(n) }
        })
    };
    // Refreshed past half the TTL: a read every 100 ms leaves each
    // background reload 1.5 s to land before the entry would expire.
    let read = ReadThroughLayer::new(
        cache(&server),
        "warm",
        Policy::ttl(Duration::from_secs(3)).jitter(0.0),
    );
    let layer = RefreshAheadLayer::new(read, 0.5);
    let profile = layer.read_layer().profile().clone();
    let svc = layer.layer(loader);
    let refreshed = wait_until(PATIENCE, || async {
        svc.clone().oneshot(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        profile.stats().refreshes >= 3
    })
    .await;
    let stats = profile.stats();
    assert!(refreshed.is_some(), "{stats:?}");
    assert_eq!(stats.misses, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_never_see_each_others_private_response() {
    let server = RedisServer::start();
    let origin = Origin::default();
    let user_of = |parts: &http::request::Parts| {
        parts
            .headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::to_owned)
    };
    // Two instances sharing Redis, both keyed per user.
    let a = CacheAsideLayer::new(cache(&server), "me", Policy::default())
        .per_user(user_of)
        .layer(origin.service());
    let b = CacheAsideLayer::new(cache(&server), "me", Policy::default())
        .per_user(user_of)
        .layer(origin.service());
    // A shared route without per-user keys.
    let shared =
        CacheAsideLayer::new(cache(&server), "shared", Policy::default()).layer(origin.service());
    for svc in [&a, &b, &a, &b] {
        for user in ["user-1", "user-2"] {
            let auth = format!("Bearer {user}");
            let r = send(svc, Method::GET, "http://h/me", &[("authorization", &auth)]).await;
            assert_eq!(r.text(), format!("me={auth}"));
        }
        let r = send(
            &shared,
            Method::GET,
            "http://h/me",
            &[("authorization", "Bearer user-1")],
        )
        .await;
        assert_eq!(r.x_cache, "BYPASS");
        assert_eq!(get(&shared, "http://h/me").await.text(), "me=");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_passes_through_unchanged() {
    let server = RedisServer::start();
    let origin = Origin::default();
    let layer =
        CacheAsideLayer::new(cache(&server), "big", Policy::default()).max_body_bytes(100 * 1024);
    let key = redis_key(&layer, "http://h/big");
    let svc = layer.layer(origin.service());
    for _ in 0..2 {
        let r = get(&svc, "http://h/big").await;
        assert_eq!(r.body.len(), 2 * 1024 * 1024);
        assert!(r.body.iter().all(|b| *b == b'x'));
        assert_eq!(r.x_cache, "MISS");
    }
    let exists: bool = server.connection().exists(&key).unwrap();
    assert!(!exists, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_entry_in_redis_reads_as_a_miss() {
    let server = RedisServer::start();
    let origin = Origin::default();
    let layer = CacheAsideLayer::new(cache(&server), "p", Policy::default());
    let key = &redis_key(&layer, "http://h/products/9");
    let mut conn = server.connection();
    let _: () = conn.set(key, b"\x00\x01 not an entry".as_slice()).unwrap();
    let svc = layer.layer(origin.service());
    let r = get(&svc, "http://h/products/9").await;
    assert_eq!((r.status.as_u16(), r.x_cache.as_str()), (200, "MISS"));
    assert_eq!(r.text(), "/products/9 #1");
    // An envelope whose payload is not a stored response is a miss too.
    let bad_payload = tower_cache::Entry::new("not a response").encode(key);
    let _: () = conn.set(key, bad_payload.as_ref()).unwrap();
    let fresh =
        CacheAsideLayer::new(cache(&server), "p", Policy::default()).layer(origin.service());
    let r = get(&fresh, "http://h/products/9").await;
    assert_eq!((r.status.as_u16(), r.x_cache.as_str()), (200, "MISS"));
    assert_eq!(get(&fresh, "http://h/products/9").await.x_cache, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_keys_in_redis_hold_no_user_and_cannot_be_forged() {
    let server = RedisServer::start();
    let origin = Origin::default();
    let user_of = |parts: &http::request::Parts| {
        parts
            .headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::to_owned)
    };
    let svc = CacheAsideLayer::new(cache(&server), "me", Policy::default())
        .per_user(user_of)
        .layer(origin.service());
    let bob = [("authorization", "Bearer bob-secret-token")];
    assert_eq!(
        send(&svc, Method::GET, "http://h/me", &bob).await.text(),
        "me=Bearer bob-secret-token"
    );
    let keys: Vec<String> = server.connection().keys("*").unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| !k.contains("bob-secret-token")),
        "{keys:?}"
    );
    for uri in [
        "http://h/me|user=bob-secret-token",
        "http://h/me?|user=bob-secret-token",
    ] {
        let forged = get(&svc, uri).await;
        assert_ne!(forged.text(), "me=Bearer bob-secret-token", "{uri}");
        assert_eq!(forged.x_cache, "MISS", "{uri}");
    }
}
