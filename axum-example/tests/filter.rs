//! The product route's existence filter and warming, in the app started as
//! a real process.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::App;
use tower_cache_tests::RedisServer;

/// `n` distinct ids that are no product (the catalog holds 1..=10,000),
/// spread over a wide range.
fn missing_ids(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < n {
        // xorshift64*: spread without a dependency.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        ids.insert(20_000 + x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1_000_000_000_000);
    }
    ids.into_iter().collect()
}

/// Sends a read of each id; answers how many the filter answered
/// (`Cache-Status: …; detail=absent`). Every answer must be a 404.
async fn read_missing(app: &App, ids: &[u64]) -> u64 {
    let mut filtered = 0;
    for id in ids {
        let res = app
            .client
            .get(app.url(&format!("/products/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "product {id}");
        let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
        if status.contains("detail=absent") {
            filtered += 1;
        }
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    filtered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_missing_ids_reach_the_database_only_as_false_positives() {
    let app = App::start(&[]).await;
    let ids = missing_ids(3_000, 0x9E37_79B9_7F4A_7C15);
    let filtered = read_missing(&app, &ids).await;
    let queries = app.origin_queries("/products/{id}").await;
    // Only the false positives (0.1 % configured) were asked for.
    assert_eq!(
        queries,
        ids.len() as u64 - filtered,
        "one query per id the filter let through"
    );
    assert!(queries <= 15, "{queries} queries for 3,000 missing ids");
    assert_eq!(
        app.metric("tower_cache_filtered_total{cache=\"/products/{id}\"}")
            .await as u64,
        filtered
    );
    // A product created after start-up is found.
    let post = app
        .client
        .post(app.url("/products"))
        .json(&json!({"name": "New", "price_cents": 500}));
    let (status, _, body) = app.send(post).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_u64().unwrap();
    let (status, x, body) = app.get(&format!("/products/{id}")).await;
    assert_eq!((status, x.as_str()), (StatusCode::OK, "MISS"));
    assert_eq!(body["name"], json!("New"));
    // Products that exist are served as before.
    assert_eq!(app.get("/products/9999").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_filter_every_missing_id_is_a_query() {
    let app = App::start(&[("PRODUCT_FILTER", "off")]).await;
    let ids = missing_ids(300, 7);
    assert_eq!(read_missing(&app, &ids).await, 0);
    assert_eq!(app.origin_queries("/products/{id}").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_created_on_one_instance_is_found_on_the_other() {
    let redis = RedisServer::start();
    let db = support::SharedDb::new("filter");
    let (a, b) = db.two_instances(&redis.url()).await;
    for n in 0..20 {
        let post = a
            .client
            .post(a.url("/products"))
            .json(&json!({"name": format!("Made on A {n}"), "price_cents": 1}));
        let (status, _, body) = a.send(post).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = body["id"].as_u64().unwrap();
        // B built its filter before the product existed; the insert went
        // through Redis before A answered.
        let (status, _, body) = b.get(&format!("/products/{id}")).await;
        assert_eq!(status, StatusCode::OK, "product {id} on B");
        assert_eq!(body["name"], json!(format!("Made on A {n}")));
    }
    let ids = missing_ids(500, 99);
    let filtered = read_missing(&b, &ids).await;
    assert!(filtered >= 490, "{filtered} of 500 answered by B's filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_warm_the_first_read_of_a_most_viewed_product_is_a_hit() {
    let dir = std::env::temp_dir().join(format!("tower-cache-warm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.join("warm.db").display());
    // Product 4242 becomes the most viewed.
    let mut app = App::start(&[("DATABASE_URL", &db)]).await;
    for _ in 0..5 {
        let post = app.client.post(app.url("/products/4242/views"));
        assert!(app.send(post).await.0.is_success());
    }
    app.stop_gracefully().await;

    let cold = App::start(&[("DATABASE_URL", &db)]).await;
    assert_eq!(cold.get("/products/4242").await.1, "MISS", "not warmed");
    drop(cold);

    let started = Instant::now();
    let warm = App::start(&[("DATABASE_URL", &db), ("WARM", "1")]).await;
    assert!(started.elapsed() < Duration::from_secs(60));
    let queries = warm.origin_queries("/products/{id}").await;
    assert_eq!(queries, 100, "the 100 most viewed loaded before serving");
    let (status, x, body) = warm.get("/products/4242").await;
    assert_eq!((status, x.as_str()), (StatusCode::OK, "HIT"));
    assert_eq!(body["id"], json!(4242));
    assert_eq!(warm.get("/products/1").await.1, "HIT", "one of the 100");
    assert_eq!(
        warm.get("/products/5000").await.1,
        "MISS",
        "not one of them"
    );
    assert_eq!(warm.origin_queries("/products/{id}").await, 101);
    let _ = std::fs::remove_dir_all(&dir);
}
