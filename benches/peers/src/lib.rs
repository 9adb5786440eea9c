//! The Rust peers of tower-cache, each behind axum 0.8 with an in-memory
//! (moka) store and a one-hour TTL, in front of the same origin: one route
//! whose handler answers the 48-byte product JSON.
//!
//! Used by `peer_hits` (in process, for instruction counts) and
//! `peer_server` (over TCP, for the load comparison).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use axum::routing::{get, get_service};
use bytes::Bytes;
use http_body_util::Full;
use tower::ServiceBuilder;

/// The origin's answer, the same bytes as every other target's.
pub const BODY: &[u8] = br#"{"id":42,"name":"Product 42","price_cents":4200}"#;

/// How long every peer keeps an entry.
pub const TTL: Duration = Duration::from_secs(3600);

/// Entries each peer's in-memory store may hold.
const CAPACITY: u64 = 10_000;

/// How many times the origin handler ran, over all routers of the process.
static ORIGIN_CALLS: AtomicUsize = AtomicUsize::new(0);

/// How many times the origin handler has run so far.
pub fn origin_calls() -> usize {
    ORIGIN_CALLS.load(Ordering::Relaxed)
}

/// The origin: counts its call and answers the product. It sends
/// `Cache-Control: max-age=3600` for all peers alike; only
/// http-cache-tower needs it (see [`http_cache_tower`]).
fn origin() -> Response<Full<Bytes>> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    res
}

/// The origin as an axum handler.
async fn product() -> Response<Full<Bytes>> {
    origin()
}

/// A cache layer's error as a response (axum routes cannot fail).
async fn internal_error<E: std::fmt::Display>(err: E) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

/// One peer cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `tower-http-cache` with its moka `InMemoryBackend`.
    TowerHttpCache,
    /// `hitbox-tower` with `hitbox-moka`.
    Hitbox,
    /// `http-cache-tower` with http-cache's `MokaManager`.
    HttpCacheTower,
}

impl Target {
    /// Every peer, in the order of the reports.
    pub const ALL: [Target; 3] = [
        Target::TowerHttpCache,
        Target::Hitbox,
        Target::HttpCacheTower,
    ];

    /// The peer's crate name, used on the command line and in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Target::TowerHttpCache => "tower-http-cache",
            Target::Hitbox => "hitbox",
            Target::HttpCacheTower => "http-cache-tower",
        }
    }

    /// The peer named `name`.
    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The peer's app: the route `path` (an axum pattern with one `{id}`
    /// segment) behind the peer's cache layer.
    pub fn router(self, path: &str) -> Router {
        match self {
            Target::TowerHttpCache => tower_http_cache(path),
            Target::Hitbox => hitbox(path),
            Target::HttpCacheTower => http_cache_tower(path),
        }
    }
}

/// tower-http-cache: stores every 2xx GET for its own TTL. It reads
/// Cache-Control only to refuse `no-store`, `no-cache` and `private`, so
/// the origin's `max-age` plays no part. The inner service's body must be
/// `Sync`, which axum's `Body` is not, so the origin is a `service_fn`
/// answering `Full<Bytes>` rather than a routed handler; on a hit the inner
/// service is not called either way.
fn tower_http_cache(path: &str) -> Router {
    use tower_http_cache::prelude::{CacheLayer, InMemoryBackend};
    let cache = CacheLayer::builder(InMemoryBackend::new(CAPACITY))
        .ttl(TTL)
        .build();
    let svc = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(internal_error))
        .layer(cache)
        .service_fn(|_req: Request<axum::body::Body>| async { Ok::<_, Infallible>(origin()) });
    Router::new().route(path, get_service(svc))
}

/// hitbox: caches what its predicates accept (here GET requests and 200
/// answers) for the policy's TTL, keyed by the extractors (method and the
/// `{id}` segment); it does not read Cache-Control.
fn hitbox(path: &str) -> Router {
    use hitbox::Config;
    use hitbox::policy::PolicyConfig;
    use hitbox_http::extractors::Method as MethodKey;
    use hitbox_http::extractors::path::PathExtractor;
    use hitbox_http::predicates::request::Method;
    use hitbox_http::predicates::response::StatusCode as Status;

    let backend = hitbox_moka::MokaBackend::builder()
        .max_entries(CAPACITY)
        .build();
    let config = Config::builder()
        .request_predicate(Method::new(http::Method::GET).expect("GET is a method"))
        .response_predicate(Status::new(http::StatusCode::OK))
        .extractor(MethodKey::new().path(path))
        .policy(PolicyConfig::builder().ttl(TTL).build())
        .build();
    let cache = hitbox_tower::Cache::builder()
        .backend(backend)
        .config(config)
        .build();
    Router::new().route(path, get(product).route_layer(cache))
}

/// http-cache-tower: an RFC 9111 cache (shared by default, as a client's
/// or a proxy's would be), so it stores only what the origin's headers let
/// it: without `max-age` (or `Expires`, or its `default_ttl`) nothing is
/// fresh and every request goes to the handler. `max_ttl` caps the
/// lifetime at the hour. Its key is the method and the whole URI, and it
/// parses that URI as an absolute URL: a server sees origin-form targets
/// (`/products/42`), so a layer in front completes them from `Host`.
fn http_cache_tower(path: &str) -> Router {
    use http_cache::{HttpCacheOptions, MokaManager};
    use http_cache_tower::HttpCacheLayer;

    let store = moka::future::Cache::builder()
        .max_capacity(CAPACITY)
        .time_to_live(TTL)
        .build();
    let options = HttpCacheOptions {
        max_ttl: Some(TTL),
        ..HttpCacheOptions::default()
    };
    let cache = HttpCacheLayer::with_options(MokaManager::new(store), options);
    let layers = ServiceBuilder::new()
        .map_request(absolute_uri)
        .layer(HandleErrorLayer::new(internal_error))
        .layer(cache);
    Router::new().route(path, get(product).route_layer(layers))
}

/// `http://{Host}{path}` for an origin-form request target.
fn absolute_uri<B>(mut req: Request<B>) -> Request<B> {
    if req.uri().scheme().is_some() {
        return req;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = format!("http://{host}{target}").parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    req
}
