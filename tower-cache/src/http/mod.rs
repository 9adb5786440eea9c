//! The HTTP adapter: what the layers need to cache `http::Request` /
//! `http::Response` services.
//!
//! - **Reads and writes**: `GET` and `HEAD` are reads; `POST`, `PUT`,
//!   `PATCH` and `DELETE` are writes; or what a route's classifier says
//!   ([`RequestClass`]).
//! - **Keys**: method, host, path and query (sorted by parameter name),
//!   plus the request headers a route names, under a namespace and version
//!   prefix; or a key function of the user's. Every part taken from the
//!   request is escaped, so no request can spell a part of another's key;
//!   per-user keys carry a SHA-256 of the user, never the user itself.
//!   Keys longer than [`MAX_PLAIN_KEY_LEN`] are replaced by their SHA-256,
//!   never truncated.
//! - **Privacy**: a request with `Authorization` or `Cookie` bypasses the
//!   shared cache unless the route gives a per-user key (in the
//!   shared-cache mode, `Authorization` alone may be answered with what
//!   the origin marked `public`, RFC 9111 §3.5); a response with
//!   `Set-Cookie` or `Cache-Control: no-store` is never stored (nor, in
//!   the application mode, one with `no-cache`), and one with
//!   `Cache-Control: private` only under a per-user key.
//! - **Two modes**: the application mode, where the route's policy sets
//!   freshness, and the shared-cache mode
//!   ([`shared_cache`](crate::CacheAsideLayer::shared_cache)), where the
//!   origin's headers do, as RFC 9111, RFC 9213 (`CDN-Cache-Control`) and
//!   RFC 5861 say for a shared cache.
//! - **Request directives**: `no-store` bypasses the cache; `no-cache` (and
//!   `Pragma: no-cache` without `Cache-Control`) reloads from the origin, revalidating the stored
//!   response; `max-age` and `min-fresh` refuse entries too old or too
//!   close to expiry; `max-stale` accepts stale ones (never what the
//!   origin said to revalidate); `only-if-cached` answers from the store
//!   or with 504.
//! - **Revalidation**: a stale entry whose origin gave a validator is
//!   reloaded with a conditional request (`If-None-Match`, else
//!   `If-Modified-Since`); a `304` refreshes its headers and freshness
//!   (RFC 9111 §4.3.4) and its body never moves again. Such entries are
//!   kept past their stale windows to be revalidated
//!   ([`keep`](crate::CacheAsideLayer::keep)).
//! - **What is stored**: 200, 203, 204, 300, 301, 404 and 410 by default
//!   (404 and 410 for the negative TTL), never 5xx (a 5xx lets
//!   stale-if-error serve the previous entry). `s-maxage`/`max-age` from
//!   the origin set the TTL. Trailers are kept.
//! - **Misses stream**: the response to store goes to the client that
//!   triggered the load as the origin sends it (its head as soon as the
//!   origin's arrives), while a copy of its body is collected for the
//!   store up to a maximum size
//!   ([`max_body_bytes`](crate::CacheAsideLayer::max_body_bytes)). Past
//!   it the copy is dropped and the rest streams through uncached and
//!   intact; a body that fails midway is not stored and its client gets
//!   the error. A client that goes away does not stop the copy: callers
//!   waiting on the same load get the stored response once it is stored,
//!   and a client that read the whole body finds it stored, since the end
//!   of its body comes after the store. `HEAD` requests, gRPC calls
//!   (their trailers decide), 5xx answers (stale-if-error may answer in
//!   their place), bodies announced over the limit and requests whose
//!   `If-None-Match` only a computed `ETag` could answer are read whole
//!   first, as is the body of a `304` revalidation (the stored one).
//! - **Resource tags** (surrogate keys): a handler names the tags of its
//!   response in `Cache-Tag` (comma-separated; the header is configurable
//!   and removed before the response leaves the layer), and a write that
//!   [`invalidates`](crate::CacheAsideLayer::invalidates) one of them
//!   drops every entry carrying it, whatever URL spelled the read.
//! - **Response headers**: `X-Cache: HIT | MISS | STALE | BYPASS` and
//!   `Age`. An `ETag` is stored with each entry (the origin's, or one
//!   computed from the body when the origin sends none; the client whose
//!   miss streamed gets only the origin's, its body being unknown when the
//!   head is sent) and `If-None-Match` (or, without it,
//!   `If-Modified-Since`) is answered with 304 from the cache, or on a
//!   streamed miss from the origin's head. A cacheable load
//!   does not forward the client's `If-None-Match`, `If-Modified-Since`,
//!   `If-Match`, `If-Unmodified-Since`, `If-Range` or `Range`, so the
//!   origin answers with the whole representation.
//! - **Vary**: a response's `Vary` is recorded with the entry, and the
//!   values of the request headers it names pick the entry: the first
//!   variant loaded sits under the request's key, every other one under
//!   that key plus its header values, so variants live side by side and
//!   never replace one another. Naming the headers with `vary_on` puts
//!   them in the key from the start (one store read per request instead
//!   of two for the other variants).
//! - **Waiters never get another client's private answer**: callers that
//!   waited on a load whose response was a failure carrying `Set-Cookie`,
//!   `private` or `no-store` get a `502` of their own, not that response.

mod body;
mod cache_control;
mod decide;
mod decoded;
mod freshness;
mod key;
mod load;
mod memo;
mod respond;
mod rules;
mod status;
mod storability;
mod stored;
mod tags;
mod tee;

pub use body::CacheBody;
pub(crate) use body::{Collected, collect_limited};
pub(crate) use cache_control::CacheControl;
pub use decide::RequestClass;
pub(crate) use decide::{Decision, Wants};
pub(crate) use decoded::Decoded;
pub(crate) use key::KeyFn;
pub(crate) use key::KeyScheme;
pub use key::MAX_PLAIN_KEY_LEN;
pub(crate) use memo::DecodedMemo;
pub(crate) use respond::{decidable_from_head, respond_streamed};
pub use rules::{CDN_CACHE_CONTROL, DEFAULT_HEURISTIC_MAX, DEFAULT_KEEP, DEFAULT_MAX_BODY_BYTES};
pub(crate) use rules::{ClassifyFn, HttpRules, TagsFn, UserFn};
pub use status::{CACHE_STATUS, CacheStatus, DEFAULT_CACHE_STATUS_NAME, X_CACHE};
pub(crate) use status::{Fwd, Report, cache_status_name, mark};
pub(crate) use storability::Storability;
pub(crate) use stored::StoredResponse;
pub use tags::{DEFAULT_TAG_HEADER, MAX_RESPONSE_TAGS, MAX_TAG_LEN, path_tag};
pub(crate) use tee::tee;
