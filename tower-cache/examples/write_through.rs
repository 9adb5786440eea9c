//! Write-through: a write goes to the database first, then into the cache,
//! so the read right after it is a hit with the new value.
//!
//! ```text
//! cargo run -p tower-cache --example write_through
//! ```
//!
//! `Prices` is the repository, a `tower::Service` both for reads (`u64`)
//! and for writes ([`Write<u64, i64>`](Write)). Its reads go through a
//! `ReadThrough<Prices>`, its writes through a `WriteThrough<Prices>`; the
//! two share one [`Cache`] and one namespace. The program serves `GET`
//! and `PUT /products/{id}/price` on a free port of 127.0.0.1, then reads
//! a price (`MISS`, one query), sets it, and reads it again: a `HIT` with
//! the new price, and still one query. It prints each answer and exits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use tower::{Layer, Service, ServiceExt};
use tower_cache::store::{MemoryStore, SharedStore};
use tower_cache::{
    Cache, Policy, ReadThrough, ReadThroughLayer, Write, WriteThrough, WriteThroughLayer,
};

/// The prices table, counting the queries that read it.
#[derive(Clone, Default)]
struct Prices {
    rows: Arc<Mutex<HashMap<u64, i64>>>,
    queries: Arc<AtomicUsize>,
}

impl Prices {
    fn rows(&self) -> MutexGuard<'_, HashMap<u64, i64>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service<u64> for Prices {
    type Response = Option<i64>;
    type Error = Infallible;
    type Future = Ready<Result<Option<i64>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u64) -> Self::Future {
        self.queries.fetch_add(1, Ordering::SeqCst);
        ready(Ok(self.rows().get(&id).copied()))
    }
}

impl Service<Write<u64, i64>> for Prices {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, write: Write<u64, i64>) -> Self::Future {
        self.rows().insert(write.key, write.value);
        ready(Ok(()))
    }
}

#[derive(Clone)]
struct AppState {
    prices: ReadThrough<Prices>,
    set_price: WriteThrough<Prices>,
}

async fn price(State(mut state): State<AppState>, Path(id): Path<u64>) -> Response {
    match state.prices.lookup(id).await {
        Ok((Some(cents), status)) => ([("x-cache", status.as_str())], Json(cents)).into_response(),
        Ok((None, _)) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn set_price(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    cents: Json<i64>,
) -> StatusCode {
    match state.set_price.oneshot(Write::new(id, cents.0)).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

/// GETs `url`: its `X-Cache` and the price.
async fn get_price(
    http: &reqwest::Client,
    url: &str,
) -> Result<(String, i64), Box<dyn std::error::Error>> {
    let res = http.get(url).send().await?.error_for_status()?;
    let x_cache = res.headers()["x-cache"].to_str()?.to_owned();
    Ok((x_cache, res.json().await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Prices::default();
    db.rows().insert(1, 250);
    let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    let policy = Policy::ttl(Duration::from_secs(60));
    let reads = ReadThroughLayer::new(cache.clone(), "prices", policy.clone()).namespace("price:");
    let writes = WriteThroughLayer::new(cache, "prices", policy).namespace("price:");
    let state = AppState {
        prices: reads.layer(db.clone()),
        set_price: writes.layer(db.clone()),
    };
    let app = Router::new()
        .route("/products/{id}/price", get(price).put(set_price))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/products/1/price", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let first = get_price(&http, &url).await?;
    println!("GET /products/1/price: {} {}", first.0, first.1);
    assert_eq!(first, ("MISS".to_owned(), 250));

    let put = http.put(&url).json(&1_999).send().await?;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let after = get_price(&http, &url).await?;
    println!("PUT 1999, then GET: {} {}", after.0, after.1);
    assert_eq!(after, ("HIT".to_owned(), 1_999));
    assert_eq!(db.rows().get(&1), Some(&1_999), "in the database too");
    assert_eq!(
        db.queries.load(Ordering::SeqCst),
        1,
        "no reload after the write"
    );
    Ok(())
}

#[cfg(test)]
#[test]
fn runs() -> Result<(), Box<dyn std::error::Error>> {
    main()
}
