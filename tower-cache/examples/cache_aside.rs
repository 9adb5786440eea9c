//! Cache-aside on an axum route: reads are answered from the cache, and a
//! successful write deletes what it changed.
//!
//! ```text
//! cargo run -p tower-cache --example cache_aside
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p tower-cache --example cache_aside
//! ```
//!
//! With `REDIS_URL`, Redis is the L2 behind the in-process L1
//! ([`TieredStore`]); without it, the cache is the L1 alone.
//!
//! It serves `GET` and `PUT /products/{id}` behind [`CacheAsideLayer`] on
//! a free port of 127.0.0.1, then sends its own requests and checks the
//! answers: the first `GET` is a `MISS`, the second a `HIT` the handler
//! never sees; a `PUT` deletes the entry, so the next `GET` loads the new
//! name; 50 concurrent `GET`s of a product not cached yet reach the
//! handler once. It prints each step and exits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Router, routing::get};
use tokio::sync::RwLock;
use tower_cache::store::{MemoryStore, RedisStore, SharedStore, TieredStore};
use tower_cache::{Cache, CacheAsideLayer, Policy};

/// The origin: product names by id, and how many reads reached it.
#[derive(Clone, Default)]
struct Db {
    names: Arc<RwLock<HashMap<u64, String>>>,
    reads: Arc<AtomicUsize>,
}

async fn show(State(db): State<Db>, Path(id): Path<u64>) -> Result<String, StatusCode> {
    db.reads.fetch_add(1, Ordering::SeqCst);
    let names = db.names.read().await;
    names.get(&id).cloned().ok_or(StatusCode::NOT_FOUND)
}

async fn rename(State(db): State<Db>, Path(id): Path<u64>, name: String) -> StatusCode {
    db.names.write().await.insert(id, name);
    StatusCode::NO_CONTENT
}

/// GETs `url`: its `X-Cache` and its body.
async fn get_product(http: &reqwest::Client, url: &str) -> reqwest::Result<(String, String)> {
    let res = http.get(url).send().await?.error_for_status()?;
    let x_cache = res.headers().get("x-cache").and_then(|v| v.to_str().ok());
    let x_cache = x_cache.unwrap_or("none").to_owned();
    Ok((x_cache, res.text().await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // L1 in process; with REDIS_URL (never under `cargo test`), Redis
    // behind it as a shared L2, under a prefix of this run's own so that
    // the run starts cold.
    let store = match std::env::var("REDIS_URL").ok().filter(|_| !cfg!(test)) {
        Some(url) => {
            let prefix = format!("cache-aside-example-{}", std::process::id());
            let l2 = RedisStore::builder(url).prefix(prefix).build()?;
            SharedStore::new(TieredStore::new(MemoryStore::default(), l2))
        }
        None => SharedStore::new(MemoryStore::default()),
    };
    let policy = Policy::ttl(Duration::from_secs(30));
    let db = Db::default();
    let seed = (1..=2).map(|id| (id, format!("product {id}")));
    db.names.write().await.extend(seed);
    let cached = CacheAsideLayer::new(Cache::new(store), "/products/{id}", policy);
    let app = Router::new()
        .route("/products/{id}", get(show).put(rename).layer(cached))
        .with_state(db.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/products", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let one = format!("{base}/1");
    for expected in ["MISS", "HIT"] {
        let (x_cache, body) = get_product(&http, &one).await?;
        println!("GET /products/1: {x_cache} {body:?}");
        assert_eq!((x_cache.as_str(), body.as_str()), (expected, "product 1"));
    }
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(reads, 1, "the HIT never reached the handler");

    let put = http.put(&one).body("teapot").send().await?;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let (x_cache, body) = get_product(&http, &one).await?;
    println!("PUT /products/1, then GET: {x_cache} {body:?}");
    assert_eq!((x_cache.as_str(), body.as_str()), ("MISS", "teapot"));

    // A stampede on a product not cached yet: one load, shared by all.
    let before = db.reads.load(Ordering::SeqCst);
    let two = format!("{base}/2");
    let stampede = (0..50).map(|_| get_product(&http, &two));
    let answers = futures_util::future::try_join_all(stampede).await?;
    let reads = db.reads.load(Ordering::SeqCst) - before;
    println!("50 concurrent GET /products/2: {reads} read of the origin");
    assert!(answers.iter().all(|(_, body)| body == "product 2"));
    assert_eq!(reads, 1);
    Ok(())
}

#[cfg(test)]
#[test]
fn runs() -> Result<(), Box<dyn std::error::Error>> {
    main()
}
