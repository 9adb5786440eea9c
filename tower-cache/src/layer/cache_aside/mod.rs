//! Cache-aside for HTTP services: reads answered from the cache, writes
//! passed through and followed by invalidation.
//!
//! [`CacheAsideLayer`] wraps a service of `http::Request` to
//! `http::Response` (an axum route, a tonic service, a hyper client):
//!
//! - **Reads** (`GET`, `HEAD`, the gRPC methods named with
//!   [`grpc_method`](CacheAsideLayer::grpc_method), or what a classifier
//!   given to [`classify`](CacheAsideLayer::classify) says) are answered from the
//!   cache; a miss goes to the inner service and its response is stored
//!   under the rules of the [`http`](crate::http) module (never 5xx, never
//!   `Set-Cookie` or `private` in the shared cache, bodies up to
//!   [`max_body_bytes`](CacheAsideLayer::max_body_bytes)). Concurrent
//!   misses on one key make one inner call.
//! - **Misses stream**: the caller whose miss reached the inner service
//!   gets its response as the inner service sends it, while a copy is
//!   collected for the store; the callers that waited for that load get
//!   the stored response. A body past `max_body_bytes` streams on to its
//!   caller and is not stored; a caller that goes away does not stop the
//!   store.
//! - **Writes** (`POST`, `PUT`, `PATCH`, `DELETE`) go through untouched;
//!   when they do not fail (2xx, 3xx: RFC 9111 §4.4) the entries of the
//!   written path (tag `path:{path}`), of the paths the answer's
//!   `Location` and `Content-Location` name on the same origin, and the
//!   tags named with [`invalidates`](CacheAsideLayer::invalidates) are
//!   deleted, so the next read loads the new value. [`double_delete`](CacheAsideLayer::double_delete)
//!   deletes once more after a delay.
//! - Responses carry `X-Cache: HIT | MISS | STALE | BYPASS` and `Age`.
//!
//! The error type is the inner service's: a cache problem never becomes an
//! error. When a caller waited for another caller's load that failed or
//! timed out, it gets a `502` or `504` response.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_cache::store::{MemoryStore, SharedStore};
//! use tower_cache::{Cache, CacheAsideLayer, Policy};
//!
//! let cache = Cache::new(SharedStore::new(MemoryStore::default()));
//! let app: Router = Router::new().route(
//!     "/products/{id}",
//!     get(|| async { r#"{"id":1}"# })
//!         .put(|| async { "saved" })
//!         .layer(
//!             CacheAsideLayer::new(
//!                 cache,
//!                 "/products/{id}",
//!                 Policy::ttl(Duration::from_secs(30))
//!                     .stale_while_revalidate(Duration::from_secs(60)),
//!             )
//!             .max_body_bytes(256 * 1024),
//!         ),
//! );
//! ```

mod absent;
mod grpc;
mod hit;
mod layer;
mod load;
mod read;
mod service;
mod warm;
mod write;

pub use grpc::{GrpcMethods, MakeGrpcBody, NoGrpc};
pub use layer::CacheAsideLayer;
pub use service::CacheAside;

/// Response future of [`CacheAside`]: the response, its body `B` behind a
/// [`CacheBody`](crate::http::CacheBody), or the inner service's error `E`.
/// A hit answered from an entry held in process is ready at once; every
/// other call is one boxed future.
pub type ResponseFuture<B, E> = super::future::ResponseFuture<
    futures_util::future::Either<
        futures_util::future::Ready<Result<http::Response<crate::http::CacheBody<B>>, E>>,
        futures_util::future::BoxFuture<
            'static,
            Result<http::Response<crate::http::CacheBody<B>>, E>,
        >,
    >,
>;

#[cfg(test)]
mod tests;
