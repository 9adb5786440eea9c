//! Read-through over a typed repository: handlers ask the cache, and the
//! cache asks the repository when it has to.
//!
//! ```text
//! cargo run -p tower-cache --example read_through
//! ```
//!
//! `UserRepo` is a `tower::Service<u64>` answering `Option<User>` (a
//! database query in an application). [`ReadThroughLayer`] makes it a
//! `ReadThrough<UserRepo>`, which the axum state names by that type: the
//! cache is built over a [`SharedStore`], the store every type defaults
//! to. The program serves `GET /users/{id}` on a free port of 127.0.0.1,
//! then reads user 7 twice (one query; the second read is a `HIT`) and
//! the missing user 999 twice (a `404` cached for the negative TTL: one
//! query), prints each answer and exits.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};
use tower_cache::store::{MemoryStore, SharedStore};
use tower_cache::{Cache, Policy, ReadThrough, ReadThroughLayer};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The users table (ids 1 to 100), counting the queries that reach it.
#[derive(Clone, Default)]
struct UserRepo {
    queries: Arc<AtomicUsize>,
}

impl Service<u64> for UserRepo {
    type Response = Option<User>;
    type Error = Infallible;
    type Future = Ready<Result<Option<User>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u64) -> Self::Future {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let name = format!("User {id}");
        ready(Ok((1..=100).contains(&id).then_some(User { id, name })))
    }
}

#[derive(Clone)]
struct AppState {
    users: ReadThrough<UserRepo>, // over a `SharedStore`, values as JSON
}

async fn user(State(mut state): State<AppState>, Path(id): Path<u64>) -> Response {
    match state.users.lookup(id).await {
        Ok((Some(user), status)) => ([("x-cache", status.as_str())], Json(user)).into_response(),
        Ok((None, status)) => {
            (StatusCode::NOT_FOUND, [("x-cache", status.as_str())]).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repo = UserRepo::default();
    let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    let policy = Policy::ttl(Duration::from_secs(60)).negative_ttl(Duration::from_secs(5));
    let users = ReadThroughLayer::new(cache, "users", policy)
        .namespace("user:")
        .layer(repo.clone());
    let app = Router::new()
        .route("/users/{id}", get(user))
        .with_state(AppState { users });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/users", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let reads = [
        (7, 200, "MISS"),
        (7, 200, "HIT"),
        (999, 404, "MISS"),
        (999, 404, "HIT"),
    ];
    for (id, status, x_cache) in reads {
        let res = http.get(format!("{base}/{id}")).send().await?;
        let x_cache_got = res.headers()["x-cache"].to_str()?.to_owned();
        let got = (res.status().as_u16(), x_cache_got);
        println!("GET /users/{id}: {} {} {}", got.0, got.1, res.text().await?);
        assert_eq!(got, (status, x_cache.to_owned()));
    }
    let queries = repo.queries.load(Ordering::SeqCst);
    println!("{queries} queries for 4 reads");
    assert_eq!(queries, 2);
    Ok(())
}

#[cfg(test)]
#[test]
fn runs() -> Result<(), Box<dyn std::error::Error>> {
    main()
}
