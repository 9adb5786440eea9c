//! The routes, each with its caching strategy configured in code.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Json, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use rusqlite::OptionalExtension;
use serde::Deserialize;
use serde_json::json;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tower_cache::filter::ExistenceFilter;
use tower_cache::store::RedisQueue;
use tower_cache::{
    Cache, CacheAsideLayer, CacheStatus, Policy, Profile, ReadThrough, ReadThroughLayer,
    RefreshAheadLayer, Write, WriteBehind, WriteBehindHandle, WriteThrough, WriteThroughLayer,
};
use tower_layer::Layer;

use crate::db::{Db, DbError, User};

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

/// A typed repository: a service over the database, boxed so the state
/// can name it.
type Repo<K, V> = BoxCloneSyncService<K, V, DbError>;

fn repo<K, V, F, Fut>(db: &Db, f: F) -> Repo<K, V>
where
    F: Fn(Db, K) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<V, DbError>> + Send + 'static,
    K: Send + 'static,
    V: 'static,
{
    let db = db.clone();
    BoxCloneSyncService::new(tower::service_fn(move |k: K| f(db.clone(), k)))
}

/// Why a price write failed.
#[derive(Debug, thiserror::Error)]
enum PriceError {
    #[error("no product {0}")]
    NotFound(u64),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Shared state of the handlers: one `Arc`, so the clone axum makes for
/// every request is a reference count, not a copy of every handle.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct AppInner {
    db: Db,
    cache: Cache,
    users: ReadThrough<Repo<u64, Option<User>>>,
    prices: ReadThrough<Repo<u64, Option<i64>>>,
    set_price: WriteThrough<BoxCloneSyncService<Write<u64, i64>, (), PriceError>>,
    views: ReadThrough<Repo<u64, Option<i64>>>,
    count_view: WriteBehind<u64, i64>,
    /// The typed routes' profiles, to count the requests that bypass them.
    typed: Arc<TypedProfiles>,
    metrics: PrometheusHandle,
    /// The product ids that exist, which a created product joins.
    product_filter: Option<ExistenceFilter>,
}

/// The profiles of the typed read-through routes.
struct TypedProfiles {
    users: Profile,
    prices: Profile,
    views: Profile,
}

/// Options of the app that tests and operators tune.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the write-behind view counter waits before it flushes a
    /// batch (`VIEWS_FLUSH_MS`, default 250 ms).
    pub views_flush: Duration,
    /// The view counter's durable log (`VIEWS_DURABLE=1`; default none:
    /// views wait for the database in memory).
    pub views_log: Option<RedisQueue>,
    /// The product ids that exist, asked before a missing product reaches
    /// the database (`PRODUCT_FILTER`, on by default; see `startup.rs`).
    pub product_filter: Option<ExistenceFilter>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            views_flush: Duration::from_millis(250),
            views_log: None,
            product_filter: None,
        }
    }
}

/// What the app must do before it exits: deliver the views not yet in the
/// database.
pub struct Shutdown {
    views: WriteBehindHandle<u64, i64>,
}

impl Shutdown {
    /// Delivers every acknowledged view to the database.
    pub async fn run(self) {
        self.views.shutdown().await;
    }
}

/// Builds the router over `db` and `cache`, with what must run before it
/// exits and what warms it.
pub fn router(
    db: Db,
    cache: Cache,
    metrics: PrometheusHandle,
    options: Options,
) -> (Router, Shutdown, crate::startup::Warmer) {
    let mut products = CacheAsideLayer::new(
        cache.clone(),
        "/products/{id}",
        Policy::ttl(Duration::from_secs(60)).stale_while_revalidate(Duration::from_secs(30)),
    )
    // One site: instances behind a balancer share entries whatever Host they see.
    .key_host(false)
    // Every spelling of a product (`/products/012`, `/products/%31%32`)
    // carries its tag, which a write of the product drops.
    .invalidates(|parts| {
        product_id_of(parts.uri.path())
            .map(product_tag)
            .into_iter()
            .collect()
    });
    if let Some(filter) = &options.product_filter {
        // A product id no instance ever saw is answered 404 without the
        // database; the filter is asked on misses only.
        products = products
            .existence_filter(filter.clone(), |parts| {
                product_id_of(parts.uri.path()).map(|id| id.to_string())
            })
            .absent_response(
                StatusCode::NOT_FOUND,
                Some(HeaderValue::from_static("application/json")),
                r#"{"error":"no such product"}"#,
            );
    }
    let warmer = crate::startup::Warmer::new(products.clone(), db.clone());
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
            // One aggregate key: no herd of entries to spread with jitter.
            Policy::ttl(Duration::from_secs(5)).jitter(0.0),
        ),
        0.8,
    );
    // Write-through: the price is written to the database, then cached;
    // the read right after is a hit.
    let price_policy = Policy::ttl(Duration::from_secs(300));
    let prices_layer =
        ReadThroughLayer::new(cache.clone(), "/products/{id}/price", price_policy.clone())
            .namespace("price:");
    let set_price = WriteThroughLayer::new(cache.clone(), "/products/{id}/price", price_policy)
        .namespace("price:")
        .layer(BoxCloneSyncService::new(tower::service_fn({
            let db = db.clone();
            move |w: Write<u64, i64>| {
                let db = db.clone();
                async move {
                    let changed = db
                        .run("/products/{id}/price", move |c| {
                            c.execute(
                                "UPDATE products SET price_cents = ?2 WHERE id = ?1",
                                rusqlite::params![w.key as i64, w.value],
                            )
                        })
                        .await?;
                    if changed == 0 {
                        return Err(PriceError::NotFound(w.key));
                    }
                    Ok(())
                }
            }
        })));
    // Write-behind: views are counted at once and reach the database in
    // batches of summed increments.
    let views_layer = ReadThroughLayer::new(
        cache.clone(),
        "/products/{id}/views",
        Policy::ttl(Duration::from_secs(60)),
    )
    .namespace("views:");
    let count_view = crate::views::counter(
        cache.clone(),
        db.clone(),
        options.views_flush,
        options.views_log,
    );
    let shutdown = Shutdown {
        views: count_view.handle(),
    };
    let profiles = vec![
        products.profile().clone(),
        users_layer.profile().clone(),
        me.profile().clone(),
        prices_layer.profile().clone(),
        views_layer.profile().clone(),
        top.read_layer().profile().clone(),
    ];
    let typed = TypedProfiles {
        users: users_layer.profile().clone(),
        prices: prices_layer.profile().clone(),
        views: views_layer.profile().clone(),
    };
    let state = AppState(Arc::new(AppInner {
        users: users_layer.layer(repo(&db, |db: Db, id: u64| async move {
            db.user("/users/{id}", id).await
        })),
        prices: prices_layer.layer(repo(&db, |db: Db, id: u64| async move {
            Ok(db
                .product("/products/{id}/price", id)
                .await?
                .map(|p| p.price_cents))
        })),
        views: views_layer.layer(repo(&db, |db: Db, id: u64| async move {
            db.run("/products/{id}/views", move |c| {
                c.query_row(
                    "SELECT views FROM products WHERE id = ?1",
                    [id as i64],
                    |r| r.get(0),
                )
                .optional()
            })
            .await
        })),
        set_price,
        count_view,
        cache,
        db,
        typed: Arc::new(typed),
        metrics: metrics.clone(),
        product_filter: options.product_filter,
    }));

    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route(
            "/products/{id}",
            get(get_product)
                .put(put_product)
                .delete(delete_product)
                .layer(products),
        )
        .route("/products", axum::routing::post(post_product))
        .route("/products/{id}/price", get(get_price).put(put_price))
        .route("/products/{id}/views", get(get_views).post(post_view))
        .route("/users/{id}", get(get_user))
        .route("/me", get(get_me).layer(me))
        .route("/reports/top", get(top_products).layer(top))
        // Baselines for the load comparison: no cache at all, and a
        // prebuilt in-memory response (the upper bound for any route).
        .route("/uncached/products/{id}", get(get_product_uncached))
        .route("/static/product", get(static_product))
        .with_state(state)
        // The live dashboard at `/`, over the cached routes' profiles.
        .merge(crate::dashboard::routes(profiles, metrics));
    (router, shutdown, warmer)
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
    let mut res = product_json(&s.db, "/uncached/products/{id}", id).await?;
    // The app keeps nothing; shared caches in front of it (the load
    // comparison's nginx and reverse proxy) may keep it for a minute.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    Ok(res)
}

async fn product_json(
    db: &Db,
    route: &'static str,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let product = db.product(route, id).await?;
    let product = product.ok_or_else(|| not_found("product", id))?;
    // The resource tag: the cache stores it with the entry and takes the
    // header out of the response.
    Ok(([("cache-tag", product_tag(id))], Json(product)).into_response())
}

/// The tag of everything cached about product `id`.
pub(crate) fn product_tag(id: u64) -> String {
    format!("product:{id}")
}

/// The product a `/products/{id}` path names, read as axum's `Path<u64>`
/// reads it (percent-decoded, `012` and `+12` are 12).
fn product_id_of(path: &str) -> Option<u64> {
    let segment = path.strip_prefix("/products/")?;
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .parse()
        .ok()
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
    let (name, price_cents) = (update.name.clone(), update.price_cents);
    let updated = s.db.update_product("/products/{id}", id, name, price_cents);
    if !updated.await? {
        return Err(not_found("product", id));
    }
    // The layer deletes this route's entry; the price route caches the
    // same column under its own key.
    s.cache.remove(&format!("price:{id}")).await;
    Ok(
        Json(json!({ "id": id, "name": update.name, "price_cents": update.price_cents }))
            .into_response(),
    )
}

/// Creates a product: `201` with it and its `Location`. Its id joins the
/// existence filter before the answer leaves, so a read of it that follows
/// (on any instance sharing the filter) reaches the database.
async fn post_product(
    State(s): State<AppState>,
    body: Result<Json<ProductUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    if new.price_cents < 0 || new.name.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "name must not be empty and price_cents must not be negative".into(),
        ));
    }
    let id =
        s.db.create_product("/products", new.name.clone(), new.price_cents)
            .await?;
    if let Some(filter) = &s.product_filter
        && let Err(error) = filter.insert(&id.to_string()).await
    {
        tracing::warn!(id, %error, "new product not in the other instances' filters yet");
    }
    let body = json!({ "id": id, "name": new.name, "price_cents": new.price_cents });
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/products/{id}"))],
        Json(body),
    )
        .into_response())
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
    s.cache.remove(&format!("price:{id}")).await;
    s.cache.remove(&format!("views:{id}")).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let (user, status) = lookup(&s.users, &s.typed.users, &headers, id).await?;
    match user {
        Some(user) => Ok(with_status(status, Json(user))),
        None => Ok(with_status(status, not_found("user", id))),
    }
}

async fn get_price(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let (price, status) = lookup(&s.prices, &s.typed.prices, &headers, id).await?;
    let price = price.ok_or_else(|| not_found("product", id))?;
    Ok(with_status(
        status,
        Json(json!({ "id": id, "price_cents": price })),
    ))
}

#[derive(Deserialize)]
struct PriceUpdate {
    price_cents: i64,
}

async fn put_price(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
    body: Result<Json<PriceUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let Json(update) = body?;
    if update.price_cents < 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "price_cents must not be negative".into(),
        ));
    }
    let mut writer = s.set_price.clone();
    let written = async {
        writer.ready().await?;
        writer.call(Write::new(id, update.price_cents)).await
    };
    match written.await {
        Ok(()) => {
            // The product's own representation carries the price too.
            s.cache.remove_tag(&product_tag(id)).await;
            Ok(Json(json!({ "id": id, "price_cents": update.price_cents })).into_response())
        }
        Err(e)
            if matches!(
                e.downcast_ref::<PriceError>(),
                Some(PriceError::NotFound(_))
            ) =>
        {
            Err(not_found("product", id))
        }
        Err(e) => Err(lookup_failed(e)),
    }
}

async fn post_view(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    // Only products that exist are counted (a cached lookup).
    let (known, _) = s.views.clone().lookup(id).await.map_err(lookup_failed)?;
    if known.is_none() {
        return Err(not_found("product", id));
    }
    let mut views = s.count_view.clone();
    views.ready().await.map_err(lookup_failed)?;
    views.call(Write::new(id, 1)).await.map_err(lookup_failed)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "accepted": true })),
    )
        .into_response())
}

async fn get_views(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let (stored, status) = lookup(&s.views, &s.typed.views, &headers, id).await?;
    let stored = stored.ok_or_else(|| not_found("product", id))?;
    let unflushed = s.count_view.handle().pending(&id).unwrap_or(0);
    Ok(with_status(
        status,
        Json(json!({ "id": id, "views": stored + unflushed })),
    ))
}

/// A typed read through the cache; with credentials, straight from the
/// repository instead (`X-Cache: BYPASS`), and nothing is stored: these
/// routes are public and shared.
async fn lookup<
    V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
>(
    cached: &ReadThrough<Repo<u64, V>>,
    profile: &Profile,
    headers: &HeaderMap,
    id: u64,
) -> Result<(V, CacheStatus), ApiError> {
    if headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE) {
        profile.record_bypass();
        let value = cached.get_ref().clone().oneshot(id).await?;
        return Ok((value, CacheStatus::Bypass));
    }
    cached.clone().lookup(id).await.map_err(lookup_failed)
}

fn lookup_failed(e: tower::BoxError) -> ApiError {
    tracing::error!(error = %e, "cache layer call failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
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
    let top = s.db.top_products("/reports/top").await?;
    Ok(Json(json!({ "top": top })).into_response())
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
