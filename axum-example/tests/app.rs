//! The example app, started as a real process on a real TCP port.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::{App, send, stampede};
use tower_cache_tests::{PATIENCE, RedisServer};

async fn assert_cold_stampede_makes_one_query(app: &App) {
    let replies = stampede(app, "/products/42", 200).await;
    for (status, _, body) in &replies {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(
            *body,
            json!({"id": 42, "name": "Product 42", "price_cents": 4200})
        );
    }
    assert_eq!(app.origin_queries("/products/{id}").await, 1);
    assert_eq!(app.get("/products/42").await.1, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_stampede_makes_one_query() {
    let app = App::start(&[("ORIGIN_DELAY_MS", "300")]).await;
    assert_cold_stampede_makes_one_query(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_stampede_makes_one_query_with_redis() {
    let redis = RedisServer::start();
    let app = App::start(&[("ORIGIN_DELAY_MS", "300"), ("REDIS_URL", &redis.url())]).await;
    assert_cold_stampede_makes_one_query(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_strategy_is_observable_over_http() {
    let app = App::start(&[]).await;
    assert_every_read_strategy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_strategy_is_observable_over_http_with_redis() {
    let redis = RedisServer::start();
    let app = App::start(&[("REDIS_URL", &redis.url())]).await;
    assert_every_read_strategy(&app).await;
    // The entries are in Redis, not only in the process.
    assert!(in_redis(&redis, "/products/1"));
    assert!(in_redis(&redis, "/reports/top"));
}

/// Whether Redis holds a catalog entry whose key contains `needle`.
fn in_redis(redis: &RedisServer, needle: &str) -> bool {
    use redis::Commands;
    let mut conn = redis.connection();
    let Ok(keys) = conn.scan_match::<_, String>("catalog:*") else {
        return false;
    };
    keys.filter_map(Result::ok).any(|k| k.contains(needle))
}

async fn assert_every_read_strategy(app: &App) {
    // cache-aside, invalidated by writes
    assert_eq!(app.get("/products/1").await.1, "MISS");
    assert_eq!(app.get("/products/1").await.1, "HIT");
    assert_eq!(
        app.get("/products/1/price").await.2["price_cents"],
        json!(100)
    );
    let put = app
        .client
        .put(app.url("/products/1"))
        .json(&json!({"name": "Renamed", "price_cents": 123}));
    assert_eq!(app.send(put).await.0, StatusCode::OK);
    let (_, x, body) = app.get("/products/1").await;
    assert_eq!((x.as_str(), &body["name"]), ("MISS", &json!("Renamed")));
    let (_, x, body) = app.get("/products/1/price").await;
    assert_eq!((x.as_str(), &body["price_cents"]), ("MISS", &json!(123)));
    let delete = app.client.delete(app.url("/products/2"));
    assert_eq!(app.send(delete).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/products/2").await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.origin_queries("/products/{id}").await, 5);

    // read-through
    let (status, x, body) = app.get("/users/3").await;
    assert_eq!((status, x.as_str()), (StatusCode::OK, "MISS"));
    assert_eq!(body, json!({"id": 3, "name": "User 3"}));
    assert_eq!(app.get("/users/3").await.1, "HIT");
    assert_eq!(app.get("/users/5000").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/users/5000").await.1,
        "HIT",
        "not found is cached too"
    );
    assert_eq!(app.origin_queries("/users/{id}").await, 2);

    // per-user: never shared, 401 without credentials
    for (user, expected) in [(7, "MISS"), (8, "MISS"), (7, "HIT"), (8, "HIT")] {
        let req = app
            .client
            .get(app.url("/me"))
            .header("authorization", format!("Bearer user-{user}"));
        let (status, x, body) = app.send(req).await;
        assert_eq!((status, x.as_str()), (StatusCode::OK, expected));
        assert_eq!(body["name"], json!(format!("User {user}")));
    }
    assert_eq!(app.origin_queries("/me").await, 2);
    assert_eq!(app.get("/me").await.0, StatusCode::UNAUTHORIZED);

    // a public route with credentials bypasses, and stores nothing
    let req = app
        .client
        .get(app.url("/products/9"))
        .header("authorization", "Bearer user-1");
    assert_eq!(app.send(req).await.1, "BYPASS");
    assert_eq!(app.get("/products/9").await.1, "MISS");
    // the typed public routes too
    for path in ["/users/11", "/products/11/price", "/products/11/views"] {
        let req = app
            .client
            .get(app.url(path))
            .header("authorization", "Bearer user-1");
        let (status, x, _) = app.send(req).await;
        assert_eq!((status, x.as_str()), (StatusCode::OK, "BYPASS"), "{path}");
        assert_eq!(app.get(path).await.1, "MISS", "{path}: nothing stored");
    }

    // write-behind: the count is served from the cache, unflushed views included
    let post = app.client.post(app.url("/products/12/views"));
    assert_eq!(app.send(post).await.0, StatusCode::ACCEPTED);
    let (_, x, body) = app.get("/products/12/views").await;
    assert_eq!(body, json!({"id": 12, "views": 1}));
    assert!(matches!(x.as_str(), "HIT" | "MISS"), "{x}");
    let post = app.client.post(app.url("/products/10001/views"));
    assert_eq!(app.send(post).await.0, StatusCode::NOT_FOUND);

    // the index page shows the hit ratio per route
    let html = app.text("/").await;
    let row = html
        .split("<tr>")
        .find(|r| r.contains("<code>/products/{id}</code>"))
        .unwrap_or_else(|| panic!("no row for /products/{{id}} in {html}"));
    assert!(row.contains(" %</td>"), "a hit ratio in {row}");

    // refresh-ahead: TTL 5 s, reloaded in the background past 4 s
    assert_eq!(app.origin_queries("/reports/top").await, 0);
    let mut asked = Instant::now();
    assert_eq!(app.get("/reports/top").await.1, "MISS");
    let mut loaded = Instant::now();
    let mut late = 0;
    loop {
        // Past 4 s, the read that starts the reload.
        tokio::time::sleep_until((loaded + Duration::from_millis(4_300)).into()).await;
        let sent = Instant::now();
        let x = app.get("/reports/top").await.1;
        if x == "HIT" {
            break;
        }
        // A miss is an expiry: fine only if this read may have reached the
        // app 5 s after the entry was loaded. It then loaded it again, and
        // the next read in the last second of its TTL starts over.
        assert!(
            asked.elapsed() >= Duration::from_secs(5),
            "{x} {:?} after the entry was loaded, within its TTL",
            asked.elapsed()
        );
        late += 1;
        assert!(
            late < 5,
            "no read reached the app within the TTL's last second"
        );
        (asked, loaded) = (sent, Instant::now());
    }
    // The reload lands before the entry would expire: reads are hits all
    // along, until one is served the reloaded entry.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (x, age) = app.cache_headers("/reports/top").await;
        assert_eq!(x, "HIT", "refreshed ahead, never expired into a miss");
        if age.is_some_and(|age| age < 4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reloaded; still {age:?} s old"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Past the first entry's TTL.
    tokio::time::sleep_until((loaded + Duration::from_millis(5_200)).into()).await;
    let (_, x, body) = app.get("/reports/top").await;
    assert_eq!(x, "HIT", "refreshed ahead, never expired into a miss");
    assert_eq!(body["top"].as_array().unwrap().len(), 10);
    assert_eq!(app.origin_queries("/reports/top").await, late + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_json_and_unknown_ids_404() {
    let app = App::start(&[]).await;
    let (status, _, body) = app.get("/products/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());
    let bad_json = app
        .client
        .put(app.url("/products/1"))
        .header("content-type", "application/json")
        .body("{not json");
    let (status, _, body) = app.send(bad_json).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());
    let negative = app
        .client
        .put(app.url("/products/1"))
        .json(&json!({"name": "x", "price_cents": -1}));
    assert_eq!(app.send(negative).await.0, StatusCode::BAD_REQUEST);
    let (status, _, body) = app.get("/products/10001").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_redis_and_sqlite() {
    let redis = RedisServer::start();
    let db = support::SharedDb::new("app");
    let (a, b) = db.two_instances(&redis.url()).await;

    assert_eq!(a.get("/products/77").await.1, "MISS");
    assert_eq!(b.get("/products/77").await.1, "HIT", "through L2");
    let put = a
        .client
        .put(a.url("/products/77"))
        .json(&json!({"name": "Seen everywhere", "price_cents": 1}));
    assert_eq!(a.send(put).await.0, StatusCode::OK);
    // B's copy would stay in its L1 for 30 s: only A's invalidation
    // message, well before that, makes B read the new value.
    let start = Instant::now();
    loop {
        let (_, _, body) = b.get("/products/77").await;
        if body["name"] == json!("Seen everywhere") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "B saw the write within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_fails_no_request_and_is_used_again_when_back() {
    let mut redis = RedisServer::start();
    let app = App::start(&[("REDIS_URL", &redis.url())]).await;
    assert_eq!(app.get("/products/5").await.0, StatusCode::OK);

    redis.stop();
    let start = Instant::now();
    // Ids of rows the example seeds (1..=1000), new ones first; a fast
    // machine wraps around to ones already read.
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(2) {
        let id = 100 + n % 900;
        for path in [
            "/products/5".to_owned(),
            format!("/products/{id}"),
            format!("/users/{id}"),
        ] {
            let (status, _, _) = app.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path} while Redis is down");
        }
        n += 1;
    }

    redis.restart();
    let back = Instant::now();
    // Each read is of a product no read asked for before: it misses L1 and
    // goes to Redis as soon as the store uses Redis again.
    let mut fresh = 9_999;
    loop {
        let path = format!("/products/{fresh}");
        assert_eq!(app.get(&path).await.0, StatusCode::OK, "{path}");
        if in_redis(&redis, &path) {
            break;
        }
        assert!(
            back.elapsed() < PATIENCE,
            "Redis used again after it returned"
        );
        fresh -= 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut app = App::start(&[("ORIGIN_DELAY_MS", "500")]).await;
    let in_flight = tokio::spawn(send(app.client.get(app.url("/products/3"))));
    // Stopped once the request waits on its (500 ms) query.
    let deadline = Instant::now() + PATIENCE;
    while app.origin_queries("/products/{id}").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the app"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.stop_gracefully().await;
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], json!(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_price_is_a_hit_right_after_the_write() {
    let app = App::start(&[]).await;
    assert_eq!(app.get("/products/5/price").await.1, "MISS");
    let put = app
        .client
        .put(app.url("/products/5/price"))
        .json(&json!({"price_cents": 777}));
    let (status, _, body) = app.send(put).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"id": 5, "price_cents": 777}))
    );
    let queries = app.origin_queries("/products/{id}/price").await;
    let (_, x, body) = app.get("/products/5/price").await;
    assert_eq!(
        (x.as_str(), body),
        ("HIT", json!({"id": 5, "price_cents": 777}))
    );
    assert_eq!(
        app.origin_queries("/products/{id}/price").await,
        queries,
        "no query for the read"
    );
    assert_eq!(app.get("/products/5").await.2["price_cents"], json!(777));
    let unknown = app
        .client
        .put(app.url("/products/99999/price"))
        .json(&json!({"price_cents": 1}));
    assert_eq!(app.send(unknown).await.0, StatusCode::NOT_FOUND);
}

async fn views(app: &App, id: u64) -> i64 {
    app.get(&format!("/products/{id}/views")).await.2["views"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_views_are_all_counted_and_survive_a_graceful_restart() {
    let dir = std::env::temp_dir().join(format!("tower-cache-views-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.join("views.db").display());
    let db_file = dir.join("views.db");
    let in_database = || -> i64 {
        rusqlite::Connection::open(&db_file)
            .unwrap()
            .query_row("SELECT views FROM products WHERE id = 8", [], |r| r.get(0))
            .unwrap()
    };
    // Batches wait a minute: only the graceful shutdown delivers them.
    let mut app = App::start(&[("DATABASE_URL", &db), ("VIEWS_FLUSH_MS", "60000")]).await;
    let delete = app.client.delete(app.url("/products/9"));
    assert_eq!(app.send(delete).await.0, StatusCode::NO_CONTENT);
    let tasks: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(send(app.client.post(app.url("/products/8/views")))))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().0, StatusCode::ACCEPTED);
    }
    assert_eq!(views(&app, 8).await, 1_000, "unflushed views are counted");
    let flushes_before = app.metric("write_behind_flushes_total").await;
    assert_eq!(flushes_before, 0.0, "nothing flushed yet");
    assert_eq!(in_database(), 0, "acknowledged, not yet in the database");

    app.stop_with("-INT").await;
    assert_eq!(in_database(), 1_000, "the shutdown delivered every view");
    app.spawn().await;
    assert_eq!(
        views(&app, 8).await,
        1_000,
        "every view reached the database"
    );
    assert_eq!(
        app.get("/products/9").await.0,
        StatusCode::NOT_FOUND,
        "a restart does not seed deleted rows back"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A crafted `Host` once made `GET /reports/top` land on the key of
/// `GET /products/2?x=/reports/top`, which then answered with the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_host_never_poisons_another_route() {
    let app = App::start(&[]).await;
    let crafted = app
        .client
        .get(app.url("/reports/top"))
        .header("host", "/products/2?x=");
    let (status, x_cache, _) = app.send(crafted).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(x_cache, "BYPASS", "an invalid Host is not cached");
    for _ in 0..2 {
        let (status, _, body) = app.get("/products/2?x=/reports/top").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["id"], json!(2), "the product, not the report: {body}");
    }
}

/// Every spelling the app reads as product 12 is cached under its own key
/// but tagged `product:12`, so one write invalidates them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_invalidates_every_spelling_of_the_product() {
    let app = App::start(&[]).await;
    let spellings = [
        "/products/12",
        "/products/%31%32",
        "/products/012",
        "/products/+12",
    ];
    for path in spellings {
        let (status, _, body) = app.get(path).await;
        assert_eq!(
            (status, &body["id"]),
            (StatusCode::OK, &json!(12)),
            "{path}"
        );
        assert_eq!(app.get(path).await.1, "HIT", "{path}");
    }
    let res = app
        .client
        .get(app.url("/products/12"))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers().get("cache-tag").is_none(),
        "the tag stays inside"
    );
    let put = app
        .client
        .put(app.url("/products/12"))
        .json(&json!({"name": "Renamed", "price_cents": 1}));
    assert_eq!(app.send(put).await.0, StatusCode::OK);
    for path in spellings {
        // `/products/%31%32` shares the key of `/products/12` (reloaded
        // just before); the others are reloaded each.
        let (_, _, body) = app.get(path).await;
        assert_eq!(body["name"], json!("Renamed"), "{path} after the write");
    }
}
