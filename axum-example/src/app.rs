//! The routes, each with its caching strategy configured in code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Json, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tower::Service;
use tower_cache::http::path_tag;
use tower_cache::store::SharedStore;
use tower_cache::{
    Cache, CacheAsideLayer, CacheStatus, Policy, Profile, ReadThrough, ReadThroughLayer,
    RefreshAheadLayer,
};
use tower_layer::Layer;

use crate::db::{Db, DbError, TopProduct, User};

/// A JSON error with its status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "database failure");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database failure".into())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

fn not_found(what: &str, id: u64) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no {what} {id}"))
}

/// Sets `X-Cache` on a response built by a handler (the typed layers
/// report how they answered; the HTTP layer sets it itself).
fn with_status(status: CacheStatus, body: impl IntoResponse) -> Response {
    let mut res = body.into_response();
    res.headers_mut()
        .insert("x-cache", HeaderValue::from_static(status.as_str()));
    res
}

/// The typed repository the read-through route sits on.
#[derive(Clone)]
pub struct UserRepo {
    db: Db,
}

impl Service<u64> for UserRepo {
    type Response = Option<User>;
    type Error = DbError;
    type Future = Pin<Box<dyn Future<Output = Result<Option<User>, DbError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), DbError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u64) -> Self::Future {
        let db = self.db.clone();
        Box::pin(async move { db.user("/users/{id}", id).await })
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    db: Db,
    users: ReadThrough<UserRepo, SharedStore>,
    profiles: Arc<Vec<Profile>>,
    metrics: PrometheusHandle,
}

/// Builds the router over `db` and `cache`.
pub fn router(db: Db, cache: Cache<SharedStore>, metrics: PrometheusHandle) -> Router {
    let products = CacheAsideLayer::new(
        cache.clone(),
        "/products/{id}",
        Policy::ttl(Duration::from_secs(60)).stale_while_revalidate(Duration::from_secs(30)),
    )
    // One site: instances behind a balancer share entries whatever Host they see.
    .key_host(false)
    // A write to a product also changes its price.
    .invalidates(|parts| vec![path_tag(&format!("{}/price", parts.uri.path()))]);
    let users_layer = ReadThroughLayer::new(
        cache.clone(),
        "/users/{id}",
        Policy::ttl(Duration::from_secs(300)).negative_ttl(Duration::from_secs(10)),
    )
    .namespace("user:");
    let me = CacheAsideLayer::new(cache.clone(), "/me", Policy::ttl(Duration::from_secs(60)))
        .key_host(false)
        .per_user(|parts| user_id(&parts.headers).map(|id| format!("user-{id}")));
    let top = RefreshAheadLayer::new(
        CacheAsideLayer::new(
            cache.clone(),
            "/reports/top",
            Policy::ttl(Duration::from_secs(5)),
        ),
        0.8,
    );
    let profiles = vec![
        products.profile().clone(),
        users_layer.profile().clone(),
        me.profile().clone(),
        top.read_layer().profile().clone(),
    ];
    let state = AppState {
        users: users_layer.layer(UserRepo { db: db.clone() }),
        db,
        profiles: Arc::new(profiles),
        metrics,
    };

    Router::new()
        .route("/", get(index))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route(
            "/products/{id}",
            get(get_product)
                .put(put_product)
                .delete(delete_product)
                .layer(products),
        )
        .route("/users/{id}", get(get_user))
        .route("/me", get(get_me).layer(me))
        .route("/reports/top", get(top_products).layer(top))
        // Baselines for the load comparison: no cache at all, and a
        // prebuilt in-memory response (the upper bound for any route).
        .route("/uncached/products/{id}", get(get_product_uncached))
        .route("/static/product", get(static_product))
        .with_state(state)
}

/// The bytes `/products/42` answers with, prebuilt.
async fn static_product() -> Response {
    const BODY: &str = r#"{"id":42,"name":"Product 42","price_cents":4200}"#;
    ([(header::CONTENT_TYPE, "application/json")], BODY).into_response()
}

async fn get_product(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    product_json(&s.db, "/products/{id}", id).await
}

async fn get_product_uncached(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    product_json(&s.db, "/uncached/products/{id}", id).await
}

async fn product_json(
    db: &Db,
    route: &'static str,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let product = db.product(route, id).await?;
    let product = product.ok_or_else(|| not_found("product", id))?;
    Ok(Json(product).into_response())
}

#[derive(Deserialize)]
struct ProductUpdate {
    name: String,
    price_cents: i64,
}

async fn put_product(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
    body: Result<Json<ProductUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let Json(update) = body?;
    if update.price_cents < 0 || update.name.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "name must not be empty and price_cents must not be negative".into(),
        ));
    }
    let name = update.name.clone();
    let changed =
        s.db.run("/products/{id}", move |c| {
            c.execute(
                "UPDATE products SET name = ?2, price_cents = ?3 WHERE id = ?1",
                rusqlite::params![id as i64, name, update.price_cents],
            )
        })
        .await?;
    if changed == 0 {
        return Err(not_found("product", id));
    }
    Ok(
        Json(json!({ "id": id, "name": update.name, "price_cents": update.price_cents }))
            .into_response(),
    )
}

async fn delete_product(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let changed =
        s.db.run("/products/{id}", move |c| {
            c.execute("DELETE FROM products WHERE id = ?1", [id as i64])
        })
        .await?;
    if changed == 0 {
        return Err(not_found("product", id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_user(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let mut users = s.users.clone();
    let (user, status) = users.lookup(id).await.map_err(|e| {
        tracing::error!(error = %e, "user lookup failed");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "user lookup failed".into(),
        )
    })?;
    match user {
        Some(user) => Ok(with_status(status, Json(user))),
        None => Ok(with_status(status, not_found("user", id))),
    }
}

/// The user id in `Authorization: Bearer user-{id}`.
fn user_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer user-")?
        .parse()
        .ok()
}

async fn get_me(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(id) = user_id(&headers) else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer user-{id}".into(),
        ));
    };
    let user =
        s.db.user("/me", id)
            .await?
            .ok_or_else(|| not_found("user", id))?;
    let mut res = Json(user).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    Ok(res)
}

async fn top_products(State(s): State<AppState>) -> Result<Response, ApiError> {
    let top =
        s.db.run("/reports/top", |c| {
            let mut stmt = c.prepare(
                "SELECT id, name, views FROM products ORDER BY views DESC, id ASC LIMIT 10",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(TopProduct {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    views: r.get(2)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await?;
    Ok(Json(json!({ "top": top })).into_response())
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn index(State(s): State<AppState>) -> Html<String> {
    let mut rows = String::new();
    for p in s.profiles.iter() {
        let st = p.stats();
        let served = st.hits + st.stale + st.misses;
        let ratio = if served == 0 {
            "–".to_owned()
        } else {
            format!(
                "{:.1} %",
                100.0 * (st.hits + st.stale) as f64 / served as f64
            )
        };
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.name(),
            st.hits,
            st.stale,
            st.misses,
            st.bypasses,
            ratio
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>tower-cache example</title>\
         <meta http-equiv=refresh content=2></head><body><h1>tower-cache example</h1>\
         {ROUTES}<h2>Hit ratio per route</h2><table border=1 cellpadding=4>\
         <tr><th>route</th><th>hits</th><th>stale</th><th>misses</th><th>bypasses</th><th>hit ratio</th></tr>\
         {rows}</table></body></html>"
    ))
}

const ROUTES: &str = "<h2>Routes</h2><ul>\
<li><code>GET /products/{id}</code>, <code>PUT</code>, <code>DELETE</code>: cache-aside</li>\
<li><code>GET /users/{id}</code>: read-through</li>\
<li><code>GET /me</code> with <code>Authorization: Bearer user-{id}</code>: cached per user</li>\
<li><code>PUT /products/{id}/price</code>, <code>GET /products/{id}/price</code>: write-through</li>\
<li><code>POST /products/{id}/views</code>, <code>GET /products/{id}/views</code>: write-behind</li>\
<li><code>GET /reports/top</code>: refresh-ahead</li>\
<li><code>GET /metrics</code>: Prometheus</li>\
<li><code>GET /uncached/products/{id}</code>, <code>GET /static/product</code>: baselines for the load comparison</li></ul>";
