//! The layers an axum state holds, named by their default types as the
//! docs name them (`ReadThrough<Repo>`, `WriteThrough<Repo>`,
//! `WriteBehind<K, V>`, `CacheAside<Router>`), built the way the docs
//! build them (`Cache::new(SharedStore::new(..))`), and served over real
//! TCP.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use std::future::{Ready, ready};
use tower::{Layer, Service, ServiceExt};
use tower_cache::store::{MemoryStore, SharedStore};
use tower_cache::{
    Cache, CacheAside, CacheAsideLayer, Policy, ReadThrough, ReadThroughLayer, Write, WriteBehind,
    WriteBehindLayer, WriteThrough, WriteThroughLayer,
};

/// A table of names: read by id, written one by one or in batches.
#[derive(Clone, Default)]
struct Repo(Arc<Mutex<HashMap<u64, String>>>);

impl Repo {
    fn set(&self, writes: impl IntoIterator<Item = Write<u64, String>>) {
        let mut rows = self.0.lock().expect("the table is never poisoned");
        rows.extend(writes.into_iter().map(|w| (w.key, w.value)));
    }
}

impl Service<u64> for Repo {
    type Response = Option<String>;
    type Error = Infallible;
    type Future = Ready<Result<Option<String>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, id: u64) -> Self::Future {
        ready(Ok(self
            .0
            .lock()
            .expect("the table is never poisoned")
            .get(&id)
            .cloned()))
    }
}

impl Service<Write<u64, String>> for Repo {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, write: Write<u64, String>) -> Self::Future {
        self.set([write]);
        ready(Ok(()))
    }
}

impl Service<Vec<Write<u64, String>>> for Repo {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, batch: Vec<Write<u64, String>>) -> Self::Future {
        self.set(batch);
        ready(Ok(()))
    }
}

/// Every layer a handler calls, by the names the docs give them.
#[derive(Clone)]
struct AppState {
    names: ReadThrough<Repo>,
    rename: WriteThrough<Repo>,
    rename_later: WriteBehind<u64, String>,
    catalog: CacheAside<Router>,
}

async fn name(State(mut state): State<AppState>, Path(id): Path<u64>) -> Response {
    match state.names.lookup(id).await {
        Ok((Some(name), status)) => ([("x-cache", status.as_str())], name).into_response(),
        Ok((None, _)) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn rename(State(state): State<AppState>, Path(id): Path<u64>, name: String) -> StatusCode {
    match state.rename.oneshot(Write::new(id, name)).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

async fn rename_later(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    name: String,
) -> StatusCode {
    match state.rename_later.oneshot(Write::new(id, name)).await {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Hands the request to the cached sub-application.
async fn catalog(State(state): State<AppState>, request: Request) -> Response {
    let Ok(response) = state.catalog.oneshot(request).await;
    response.map(axum::body::Body::new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_named_by_their_default_types_serve_an_axum_app() {
    let repo = Repo::default();
    let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    let policy = Policy::ttl(Duration::from_secs(60));
    let names = ReadThroughLayer::new(cache.clone(), "names", policy.clone()).namespace("name:");
    let renames = WriteThroughLayer::new(cache.clone(), "names", policy.clone()).namespace("name:");
    let later = WriteBehindLayer::new(cache.clone(), "names", policy.clone()).namespace("name:");
    // The outer route's path parameters travel with the request, so the
    // sub-application reads the URI rather than a `Path` of its own.
    let sub_app = Router::new().route(
        "/catalog/{id}",
        get(|uri: axum::http::Uri| async move { format!("item at {}", uri.path()) }),
    );
    let state = AppState {
        names: names.layer(repo.clone()),
        rename: renames.layer(repo.clone()),
        rename_later: later.layer(repo.clone()),
        catalog: CacheAsideLayer::new(cache, "/catalog", policy).layer(sub_app),
    };
    let handle = state.rename_later.handle();
    let app = Router::new()
        .route("/names/{id}", get(name).put(rename).post(rename_later))
        .route("/catalog/{id}", get(catalog))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            let res = request.send().await.unwrap();
            assert_eq!(res.status(), 200, "GET {}", res.url());
            let x_cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
            (x_cache, res.text().await.unwrap())
        }
    };
    let write = |method: reqwest::Method, path: &str, body: &'static str| {
        let request = http.request(method, format!("{base}{path}")).body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };

    // Write-through, then read-through: the read is a hit with the write.
    assert_eq!(write(reqwest::Method::PUT, "/names/1", "Ada").await, 204);
    assert_eq!(get("/names/1").await, ("HIT".into(), "Ada".into()));
    // Write-behind: acknowledged, cached at once, in the table once flushed.
    assert_eq!(write(reqwest::Method::POST, "/names/2", "Grace").await, 202);
    assert_eq!(get("/names/2").await, ("HIT".into(), "Grace".into()));
    handle.flush().await.unwrap();
    assert_eq!(
        repo.0.lock().unwrap().get(&2).map(String::as_str),
        Some("Grace")
    );
    // Cache-aside over the sub-application.
    assert_eq!(
        get("/catalog/7").await,
        ("MISS".into(), "item at /catalog/7".into())
    );
    assert_eq!(
        get("/catalog/7").await,
        ("HIT".into(), "item at /catalog/7".into())
    );
    handle.shutdown().await;
    server.abort();
}
