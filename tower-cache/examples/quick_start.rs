//! A product route behind cache-aside: `cargo run -p tower-cache --example quick_start`,
//! then `curl -i localhost:3000/products/1` twice (`X-Cache: MISS`, then `HIT`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Router, routing::get};
use tokio::sync::RwLock;
use tower_cache::store::{MemoryStore, RedisStore, SharedStore, TieredStore};
use tower_cache::{Cache, CacheAsideLayer, Policy};

/// Product names by id: the database of a real application.
pub type Products = Arc<RwLock<HashMap<u64, String>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let l1 = MemoryStore::default(); // in process, 64 MiB
    let store = match std::env::var("REDIS_URL") {
        // Redis as L2, shared by every instance, their L1s kept coherent through pub/sub
        Ok(url) => SharedStore::new(TieredStore::new(l1, RedisStore::new(url)?)),
        Err(_) => SharedStore::new(l1),
    };
    let products = Products::default();
    products.write().await.insert(1, "Teapot".to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app(Cache::new(store), products)).await?;
    Ok(())
}

/// `GET` and `PUT /products/{id}`. A `GET` is cached for 30 s, then served stale for 60 s
/// while it reloads; concurrent misses make one handler call.
pub fn app(cache: Cache, products: Products) -> Router {
    let policy =
        Policy::ttl(Duration::from_secs(30)).stale_while_revalidate(Duration::from_secs(60));
    let cached = CacheAsideLayer::new(cache, "/products/{id}", policy); // X-Cache: HIT | MISS | STALE | BYPASS
    Router::new()
        .route("/products/{id}", get(show).put(update).layer(cached))
        .with_state(products)
}

async fn show(State(products): State<Products>, Path(id): Path<u64>) -> Result<String, StatusCode> {
    let products = products.read().await;
    products.get(&id).cloned().ok_or(StatusCode::NOT_FOUND)
}

/// Renames a product. Once it succeeds, the layer deletes the cached `GET /products/{id}`.
async fn update(State(products): State<Products>, Path(id): Path<u64>, name: String) -> StatusCode {
    products.write().await.insert(id, name);
    StatusCode::NO_CONTENT
}
