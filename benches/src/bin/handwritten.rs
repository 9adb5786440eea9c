//! What users write instead of tower-cache, for the load comparison:
//! hand-written cache-aside in plain axum handlers, once over moka and once
//! over redis-rs, answering with the same bytes as the example app.
//!
//! `BIND` (default `127.0.0.1:3100`), `REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use redis::aio::ConnectionManager;

#[derive(Clone)]
struct AppState {
    moka: moka::future::Cache<u64, Bytes>,
    redis: ConnectionManager,
}

/// The origin: the same JSON the example app's database gives.
fn load(id: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":{id},"name":"Product {id}","price_cents":{}}}"#,
        id * 100
    ))
}

fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn moka_product(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    if let Some(hit) = s.moka.get(&id).await {
        return json(hit);
    }
    let value = load(id);
    s.moka.insert(id, value.clone()).await;
    json(value)
}

async fn redis_product(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    let key = format!("handwritten:{id}");
    let mut conn = s.redis.clone();
    if let Ok(Some(hit)) = redis::cmd("GET")
        .arg(&key)
        .query_async::<Option<Vec<u8>>>(&mut conn)
        .await
    {
        return json(Bytes::from(hit));
    }
    let value = load(id);
    let _ = redis::cmd("SET")
        .arg(&key)
        .arg(value.as_ref())
        .arg("EX")
        .arg(60)
        .query_async::<()>(&mut conn)
        .await;
    json(value)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3100".to_owned());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis = ConnectionManager::new(redis::Client::open(url)?).await?;
    let state = AppState {
        moka: moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(60))
            .build(),
        redis,
    };
    let app = Router::new()
        .route("/moka/products/{id}", get(moka_product))
        .route("/redis/products/{id}", get(redis_product))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
