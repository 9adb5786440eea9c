//! The HTTP adapter: what the layers need to cache `http::Request` /
//! `http::Response` services.
//!
//! - **Keys**: method, host, path and sorted query, plus the request
//!   headers a route names, under a namespace and version prefix; or a key
//!   function of the user's. Keys longer than [`MAX_PLAIN_KEY_LEN`] are
//!   replaced by their SHA-256, never truncated.
//! - **Privacy**: a request with `Authorization` or `Cookie` bypasses the
//!   shared cache unless the route gives a per-user key; a response with
//!   `Set-Cookie`, `Cache-Control: no-store` or `no-cache` is never stored,
//!   and one with `Cache-Control: private` only under a per-user key.
//! - **Request directives**: `no-store` bypasses the cache; `no-cache` (and
//!   `Pragma: no-cache`) reloads from the origin.
//! - **What is stored**: 200, 203, 204, 300, 301, 404 and 410 by default
//!   (404 and 410 for the negative TTL), never 5xx (a 5xx lets
//!   stale-if-error serve the previous entry). `s-maxage`/`max-age` from
//!   the origin set the TTL. Bodies are read up to a maximum size; a larger
//!   body streams through uncached and intact. Trailers are kept.
//! - **Response headers**: `X-Cache: HIT | MISS | STALE | BYPASS` and
//!   `Age`. An `ETag` is stored with each entry (computed from the body
//!   when the origin sends none) and `If-None-Match` is answered with 304.
//! - **Vary**: a response's `Vary` is recorded with the entry; a request
//!   whose values differ is not served that entry (it is reloaded). Name
//!   the headers a route varies on with `vary_on` to keep one entry per
//!   value instead.

mod body;
mod cache_control;
mod key;
mod rules;
mod stored;

pub use body::CacheBody;
pub(crate) use body::{Collected, collect_limited};
pub(crate) use cache_control::CacheControl;
pub(crate) use key::KeyScheme;
pub use key::{KeyFn, MAX_PLAIN_KEY_LEN};
pub use rules::{DEFAULT_MAX_BODY_BYTES, path_tag};
pub(crate) use rules::{Decision, HttpRules, Storability, TagsFn, UserFn, mark};
pub(crate) use stored::StoredResponse;

use http::HeaderName;

/// The response header telling how the cache answered.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

pub use crate::engine::CacheStatus;

impl CacheStatus {
    pub(crate) fn header_value(self) -> http::HeaderValue {
        http::HeaderValue::from_static(self.as_str())
    }
}
