//! Write-behind: writes are acknowledged at once and reach the database
//! later, in batches, with repeated writes to one key coalesced.
//!
//! ```text
//! cargo run -p tower-cache --example write_behind
//! ```
//!
//! A video player reports how far it got (`PUT /videos/{id}/position`,
//! answered `202 Accepted` as soon as the write is queued and cached).
//! `Positions` is the table: a batch writer
//! (`Service<Vec<Write<u64, u64>>>`, one transaction per batch) and a
//! reader. The state holds a `WriteBehind<u64, u64>` and a
//! `ReadThrough<Positions>` over one [`Cache`]. The program sends 30
//! reports for 3 videos, reads one back (a `HIT` with the last report,
//! though the table has nothing yet), flushes the queue and checks that
//! the table got one batch of 3 writes. It prints each step and exits.

use std::collections::BTreeMap;
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
    Cache, Policy, ReadThrough, ReadThroughLayer, Write, WriteBehind, WriteBehindLayer,
};

/// Seconds watched per video, and the batches written.
#[derive(Clone, Default)]
struct Positions {
    rows: Arc<Mutex<BTreeMap<u64, u64>>>,
    batches: Arc<AtomicUsize>,
}

impl Positions {
    fn rows(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service<Vec<Write<u64, u64>>> for Positions {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Vec<Write<u64, u64>>) -> Self::Future {
        println!("writer: one batch of {} writes", batch.len());
        self.batches.fetch_add(1, Ordering::SeqCst);
        let writes = batch.into_iter().map(|w| (w.key, w.value));
        self.rows().extend(writes); // one transaction
        ready(Ok(()))
    }
}

impl Service<u64> for Positions {
    type Response = Option<u64>;
    type Error = Infallible;
    type Future = Ready<Result<Option<u64>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u64) -> Self::Future {
        ready(Ok(self.rows().get(&id).copied()))
    }
}

#[derive(Clone)]
struct AppState {
    positions: ReadThrough<Positions>,
    report: WriteBehind<u64, u64>,
}

async fn show(State(mut state): State<AppState>, Path(id): Path<u64>) -> Response {
    match state.positions.lookup(id).await {
        Ok((seconds, status)) => ([("x-cache", status.as_str())], Json(seconds)).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn save(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Json(seconds): Json<u64>,
) -> StatusCode {
    match state.report.oneshot(Write::new(id, seconds)).await {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE, // shutting down
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Positions::default();
    let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    let policy = Policy::ttl(Duration::from_secs(300));
    let report = WriteBehindLayer::new(cache.clone(), "positions", policy.clone())
        .namespace("position:")
        // A batch leaves once it holds `max_batch` keys (100 by default) or
        // `max_delay` after its first write (100 ms by default). An hour
        // here, so that this run's one batch leaves at `flush`, whatever
        // the machine's speed.
        .max_delay(Duration::from_secs(3_600))
        .layer(db.clone());
    let handle = report.handle();
    let positions = ReadThroughLayer::new(cache, "positions", policy)
        .namespace("position:")
        .layer(db.clone());
    let app = Router::new()
        .route("/videos/{id}/position", get(show).put(save))
        .with_state(AppState { positions, report });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/videos", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    for seconds in (10..=100).step_by(10) {
        for id in 1..=3 {
            let url = format!("{base}/{id}/position");
            let res = http.put(url).json(&seconds).send().await?;
            assert_eq!(res.status(), StatusCode::ACCEPTED);
        }
    }
    let rows = db.rows().len();
    println!("30 reports acknowledged, {rows} rows in the table");
    let res = http.get(format!("{base}/2/position")).send().await?;
    let x_cache = res.headers()["x-cache"].to_str()?.to_owned();
    let seconds: Option<u64> = res.json().await?;
    println!("GET /videos/2/position: {x_cache} {seconds:?}");
    assert_eq!((x_cache.as_str(), seconds), ("HIT", Some(100)));
    assert!(db.rows().is_empty(), "nothing delivered before the flush");

    handle.flush().await?;
    let (batches, rows) = (db.batches.load(Ordering::SeqCst), db.rows().clone());
    println!("after flush: {batches} batch, rows {rows:?}");
    assert_eq!(batches, 1);
    assert_eq!(rows, BTreeMap::from([(1, 100), (2, 100), (3, 100)]));
    handle.shutdown().await; // on shutdown, everything acknowledged is delivered
    Ok(())
}

#[cfg(test)]
#[test]
fn runs() -> Result<(), Box<dyn std::error::Error>> {
    main()
}
