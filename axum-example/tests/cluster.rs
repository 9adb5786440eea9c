//! Two instances of the example app on one real Redis Cluster (`REDIS_CLUSTER_URLS`): a write on one is seen by the other, and durable views are counted.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::{App, send};
use tower_cache_tests::{PATIENCE, RedisCluster, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_see_each_others_writes() {
    let cluster = RedisCluster::start(3, 0);
    let dir = std::env::temp_dir().join(format!("tower-cache-cluster-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.join("shared.db").display());
    let seeds = cluster.urls().join(",");
    let env = [
        ("REDIS_CLUSTER_URLS", seeds.as_str()),
        ("DATABASE_URL", db.as_str()),
        ("VIEWS_DURABLE", "1"),
        ("VIEWS_FLUSH_MS", "20"),
    ];
    let a = App::start(&env).await;
    let b = App::start(&env).await;

    assert_eq!(a.get("/products/77").await.1, "MISS");
    assert_eq!(b.get("/products/77").await.1, "HIT", "through the cluster");
    let put = a
        .client
        .put(a.url("/products/77"))
        .json(&json!({"name": "Seen everywhere", "price_cents": 1}));
    assert_eq!(a.send(put).await.0, StatusCode::OK);
    // B's copy would stay in its L1 for 30 s: only A's invalidation
    // message, over the cluster, makes B read the new value.
    let seen = wait_until(PATIENCE, || async {
        b.get("/products/77").await.2["name"] == json!("Seen everywhere")
    })
    .await;
    assert!(seen.is_some(), "B saw A's write");

    // The durable view counter's log lives on the cluster too.
    for app in [&a, &b] {
        for _ in 0..10 {
            let post = app.client.post(app.url("/products/5/views"));
            assert_eq!(send(post).await.0, StatusCode::ACCEPTED);
        }
    }
    let counted = wait_until(PATIENCE, || async {
        a.get("/products/5/views").await.2["views"].as_i64() == Some(20)
    })
    .await;
    assert!(counted.is_some(), "every acknowledged view is counted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_product_is_read_from_copies_on_other_masters() {
    let cluster = RedisCluster::start(3, 0);
    let seeds = cluster.urls().join(",");
    let env = [
        ("REDIS_CLUSTER_URLS", seeds.as_str()),
        ("CACHE_L1", "off"),
        ("CACHE_HOT_KEYS", "off"),
        ("CACHE_HOT_REPLICAS", "3"),
        ("CACHE_HOT_MIN_RATE", "20"),
    ];
    let app = App::start(&env).await;
    let copies = |cluster: &RedisCluster| -> Vec<String> {
        cluster
            .masters()
            .into_iter()
            .flat_map(|port| {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("*}r:*")
                    .query(&mut cluster.node(port).connection())
                    .unwrap();
                keys
            })
            .collect()
    };
    let copied = wait_until(PATIENCE, || async {
        for _ in 0..50 {
            assert_eq!(app.get("/products/42").await.0, StatusCode::OK);
        }
        copies(&cluster).len() >= 3
    })
    .await;
    assert!(
        copied.is_some(),
        "three copies of the hot product: {:?}",
        copies(&cluster)
    );
    // A write through the app reaches every copy.
    let put = app
        .client
        .put(app.url("/products/42"))
        .json(&json!({"name": "Copied", "price_cents": 1}));
    assert_eq!(app.send(put).await.0, StatusCode::OK);
    for _ in 0..100 {
        assert_eq!(app.get("/products/42").await.2["name"], json!("Copied"));
    }
}
