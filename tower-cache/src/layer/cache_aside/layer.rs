use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, StatusCode};
use tower_layer::Layer;

use super::absent::{Absent, AbsentAnswer};
use super::{CacheAside, MakeGrpcBody, NoGrpc};
use crate::filter::ExistenceFilter;
use crate::http::{
    DEFAULT_CACHE_STATUS_NAME, DecodedMemo, HttpRules, KeyScheme, RequestClass, cache_status_name,
};
use crate::store::SharedStore;
use crate::{Cache, Policy, Profile};

/// Applies [`CacheAside`] to an HTTP service. See the
/// [module docs](crate::layer::cache_aside).
///
/// `G` says how the request body of the cached gRPC methods is rebuilt:
/// [`NoGrpc`] until [`grpc_method`](Self::grpc_method) sets a
/// [`MakeGrpcBody`] for the service's body type.
pub struct CacheAsideLayer<St = SharedStore, G = NoGrpc> {
    pub(super) cache: Cache<St>,
    pub(super) profile: Profile,
    pub(super) rules: Arc<HttpRules>,
    pub(super) double_delete: Option<Duration>,
    pub(super) write_through: bool,
    pub(super) grpc: G,
    /// The decoded forms of entries lately read from a store that keeps
    /// none in process, shared by the layer's clones.
    pub(super) memo: Arc<DecodedMemo>,
    /// The existence filter asked on misses, if any.
    pub(super) absent: Option<Arc<Absent>>,
    /// The answer for a key the filter rules out.
    pub(super) absent_answer: AbsentAnswer,
}

impl<St, G: Clone> Clone for CacheAsideLayer<St, G> {
    fn clone(&self) -> Self {
        CacheAsideLayer {
            cache: self.cache.clone(),
            profile: self.profile.clone(),
            rules: self.rules.clone(),
            double_delete: self.double_delete,
            write_through: self.write_through,
            grpc: self.grpc.clone(),
            memo: self.memo.clone(),
            absent: self.absent.clone(),
            absent_answer: self.absent_answer.clone(),
        }
    }
}

impl<St, G> std::fmt::Debug for CacheAsideLayer<St, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheAsideLayer")
            .field("profile", &self.profile)
            .field("double_delete", &self.double_delete)
            .finish_non_exhaustive()
    }
}

impl<St> CacheAsideLayer<St, NoGrpc> {
    /// A layer over `cache`, named `name` (the metrics label; for axum,
    /// the route), with `policy` and the default HTTP rules.
    ///
    /// Every key of the layer starts with `name`, so two layers with
    /// different names never read or write each other's entries, whatever
    /// a request's `Host`, path or query says. Give two layers the same
    /// name only when they should share entries.
    pub fn new(cache: Cache<St>, name: impl Into<String>, policy: Policy) -> Self {
        let name = name.into();
        let mut rules = HttpRules::default();
        rules.key.name.clone_from(&name);
        rules.policy_windows = (policy.swr, policy.sie);
        CacheAsideLayer {
            cache,
            profile: Profile::new(name, policy),
            rules: Arc::new(rules),
            double_delete: None,
            write_through: false,
            grpc: NoGrpc,
            memo: Arc::default(),
            absent: None,
            absent_answer: AbsentAnswer::default(),
        }
    }
}

impl<St, G> CacheAsideLayer<St, G> {
    fn rules(mut self, f: impl FnOnce(&mut HttpRules)) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        f(rules);
        rules.key.changed();
        self
    }

    /// Prefix of every key. Default: `"http:"`.
    #[must_use]
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.rules(|r| r.key.namespace = namespace)
    }

    /// A version in every key; bump it to drop every entry of the route at
    /// once (after a change in the response format). Default: 2 (the key
    /// format of this release).
    #[must_use]
    pub fn key_version(self, version: u32) -> Self {
        self.rules(|r| r.key.version = version)
    }

    /// Whether the request's host is part of the key. Turn it off when
    /// the service answers for one site and instances see different
    /// `Host` values (ports, internal names). Default: `true`.
    #[must_use]
    pub fn key_host(self, include: bool) -> Self {
        self.rules(|r| r.key.host = include)
    }

    /// Request headers that are part of the key, so that each value has an
    /// entry of its own (for example `accept-language`). Default: none.
    #[must_use]
    pub fn vary_on<I>(self, headers: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        let headers: Vec<_> = headers.into_iter().collect();
        self.rules(|r| r.key.headers = headers)
    }

    /// Replaces method, host, path and query in the key with what `key`
    /// returns; `None` bypasses the cache. Named headers, the user and the
    /// namespace are still added. Default: none.
    #[must_use]
    pub fn key_fn(self, key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        let key: crate::http::KeyFn = Arc::new(key);
        self.rules(|r| {
            r.key = KeyScheme {
                custom: Some(key),
                ..r.key.clone()
            }
        })
    }

    /// Caches requests that carry credentials (`Authorization`, `Cookie`)
    /// per user: `user` names the user, and the entry is keyed by that
    /// name, so it is never served to anyone else. Requests with
    /// credentials for which `user` returns `None` bypass the cache.
    /// Responses marked `Cache-Control: private` are stored under such
    /// keys. Default: off, and every request with credentials bypasses.
    #[must_use]
    pub fn per_user(self, user: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        let user: crate::http::UserFn = Arc::new(user);
        self.rules(|r| r.per_user = Some(user))
    }

    /// Decides which requests are reads, writes or not for the cache,
    /// instead of their method. `classify` sees the request head; return
    /// [`RequestClass::of_method`] for the default. Reads are still keyed
    /// by their head only (see [`RequestClass::Read`]), and the privacy
    /// rules apply to them whatever the class. Methods named with
    /// [`grpc_method`](Self::grpc_method) are reads regardless. Default:
    /// `GET` and `HEAD` are reads; `POST`, `PUT`, `PATCH` and `DELETE` are
    /// writes; other methods pass through untouched.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::Method;
    /// use tower_cache::store::MemoryStore;
    /// use tower_cache::{Cache, CacheAsideLayer, Policy, RequestClass};
    ///
    /// let layer = CacheAsideLayer::new(
    ///     Cache::new(MemoryStore::default()),
    ///     "/search",
    ///     Policy::ttl(Duration::from_secs(10)),
    /// )
    /// .classify(|parts| match (&parts.method, parts.uri.path()) {
    ///     // A live feed is never cached.
    ///     (&Method::GET, "/search/live") => RequestClass::Bypass,
    ///     // A report read with `QUERY` (its parameters in the URI).
    ///     (m, _) if m.as_str() == "QUERY" => RequestClass::Read,
    ///     (m, _) => RequestClass::of_method(m),
    /// });
    /// ```
    #[must_use]
    pub fn classify(
        self,
        classify: impl Fn(&Parts) -> RequestClass + Send + Sync + 'static,
    ) -> Self {
        let classify: crate::http::ClassifyFn = Arc::new(classify);
        self.rules(|r| r.classify = Some(classify))
    }

    /// Extra tags for stored reads, besides `path:{path}`, which every
    /// entry carries. Default: none.
    #[must_use]
    pub fn tags(self, tags: impl Fn(&Parts) -> Vec<String> + Send + Sync + 'static) -> Self {
        let tags: crate::http::TagsFn = Arc::new(tags);
        self.rules(|r| r.tags = Some(tags))
    }

    /// The response header in which a handler names the tags of its
    /// response (resource tags, also called surrogate keys), such as
    /// `Cache-Tag: product:12, catalog`: comma-separated, at most
    /// [`MAX_RESPONSE_TAGS`](crate::http::MAX_RESPONSE_TAGS) of at most
    /// [`MAX_TAG_LEN`](crate::http::MAX_TAG_LEN) bytes each. The stored
    /// entry carries them, and the header is removed from every response
    /// before it leaves the layer. `None` reads no tags and leaves the
    /// header alone. Default: [`DEFAULT_TAG_HEADER`](crate::http::DEFAULT_TAG_HEADER)
    /// (`cache-tag`).
    ///
    /// Tagging by resource rather than by URL is what makes one write
    /// invalidate every spelling of a resource (`/products/12`,
    /// `/products/012`, `/products/12?ref=mail`):
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::{Router, extract::Path, routing::get};
    /// use tower_cache::store::MemoryStore;
    /// use tower_cache::{Cache, CacheAsideLayer, Policy};
    ///
    /// async fn show(Path(id): Path<u64>) -> ([(&'static str, String); 1], String) {
    ///     ([("cache-tag", format!("product:{id}"))], format!("product {id}"))
    /// }
    ///
    /// let layer = CacheAsideLayer::new(
    ///     Cache::new(MemoryStore::default()),
    ///     "/products/{id}",
    ///     Policy::ttl(Duration::from_secs(60)),
    /// )
    /// .invalidates(|parts| {
    ///     let id = parts.uri.path().rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
    ///     id.map(|id| format!("product:{id}")).into_iter().collect()
    /// });
    /// let app: Router = Router::new().route("/products/{id}", get(show).put(|| async { "saved" }).layer(layer));
    /// ```
    #[must_use]
    pub fn tag_header(self, header: Option<HeaderName>) -> Self {
        self.rules(|r| r.tag_header = header)
    }

    /// Extra tags a successful write (POST, PUT, PATCH, DELETE) invalidates,
    /// besides `path:{path}` of the written path. Default: none.
    #[must_use]
    pub fn invalidates(self, tags: impl Fn(&Parts) -> Vec<String> + Send + Sync + 'static) -> Self {
        let tags: crate::http::TagsFn = Arc::new(tags);
        self.rules(|r| r.invalidates = Some(tags))
    }

    /// Deletes again `delay` after a write's invalidation, for the race in
    /// which a read that started before the write stores the old value
    /// after the first delete. Default: off.
    #[must_use]
    pub fn double_delete(mut self, delay: Duration) -> Self {
        self.double_delete = Some(delay);
        self
    }

    /// Write-through for HTTP: a successful `PUT` or `PATCH` whose response
    /// carries the new representation (a storable status such as 200) has
    /// that response stored as the entry a `GET` of the same URI reads,
    /// after the usual invalidation; the next read is a hit with the new
    /// value. Default: off (writes only invalidate).
    #[must_use]
    pub fn write_through(mut self, enabled: bool) -> Self {
        self.write_through = enabled;
        self
    }

    /// The statuses stored. Default: 200, 203, 204, 300, 301, 404, 410
    /// (404 and 410 for the negative TTL). 5xx is never stored.
    #[must_use]
    pub fn store_statuses<I: IntoIterator<Item = StatusCode>>(self, statuses: I) -> Self {
        let statuses: Vec<_> = statuses
            .into_iter()
            .filter(|s| !s.is_server_error())
            .collect();
        self.rules(|r| r.statuses = statuses)
    }

    /// Largest body stored. A miss streams to its caller whatever its
    /// size; the copy kept for the store stops past this many bytes, and
    /// the rest streams through uncached and intact. Default:
    /// [`DEFAULT_MAX_BODY_BYTES`](crate::http::DEFAULT_MAX_BODY_BYTES) (1 MiB).
    #[must_use]
    pub fn max_body_bytes(self, max: usize) -> Self {
        self.rules(|r| r.max_body_bytes = max)
    }

    /// Whether the origin's `s-maxage`/`max-age` sets the TTL of what it
    /// returns, in the application mode. Default: `true`.
    #[must_use]
    pub fn respect_origin_ttl(self, respect: bool) -> Self {
        self.rules(|r| r.respect_origin_ttl = respect)
    }

    /// The shared-cache mode: the layer caches as a reverse proxy or a CDN
    /// does (RFC 9111), in front of an origin whose headers rule. Default:
    /// off, the application mode.
    ///
    /// | | application mode (default) | shared-cache mode |
    /// |---|---|---|
    /// | freshness | the policy's TTL; the origin's `s-maxage`/`max-age` replace it | the origin's: `CDN-Cache-Control` (RFC 9213), `s-maxage`, `max-age`, `Expires` against `Date`, less the response's age (`Age`, or the time since `Date`); else a tenth of the time since `Last-Modified` for the statuses RFC 9110 lets a cache guess, at most [`heuristic_max`](Self::heuristic_max) |
    /// | stored | the [`store_statuses`](Self::store_statuses) | any status but 206, 304 and 5xx with explicit freshness; with heuristic freshness 200, 203, 204, 300, 301, 308, 404, 405, 410, 414; a response with neither freshness nor validator never |
    /// | response `no-cache` | not stored | stored, revalidated on every use |
    /// | `must-revalidate`, `proxy-revalidate`, `s-maxage` | – | never served stale |
    /// | `stale-while-revalidate`, `stale-if-error` from the origin (RFC 5861) | – | the entry's stale windows, instead of the policy's |
    /// | request with `Authorization` | bypasses unless [`per_user`](Self::per_user) | answered only with responses the origin marked `public`, `s-maxage` or `must-revalidate` (RFC 9111 §3.5), stored apart from those of requests without credentials |
    /// | request with `Cookie`, response with `Set-Cookie` or `private`, `Vary: *` | bypass / not stored | the same |
    ///
    /// In both modes: the request's `no-store`, `no-cache`, `max-age`,
    /// `min-fresh`, `max-stale` and `only-if-cached` are honoured; a stale
    /// entry with a validator is revalidated with a conditional request and
    /// a `304` refreshes it without its body moving; unsafe methods
    /// invalidate their target and same-origin `Location` and
    /// `Content-Location`. The policy's TTL applies to no response in this
    /// mode; its stale windows apply where the origin names none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cache::{Cache, CacheAsideLayer, Policy, store::MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::default());
    /// let layer = CacheAsideLayer::new(cache, "proxy", Policy::default())
    ///     .shared_cache()
    ///     .heuristic_max(Duration::from_secs(600));
    /// ```
    #[must_use]
    pub fn shared_cache(self) -> Self {
        self.rules(|r| r.shared = true)
    }

    /// The targeted cache fields (RFC 9213) obeyed in the shared-cache
    /// mode instead of `Cache-Control`, first first: `field` ahead of
    /// those set before. A targeted field that is present and parses
    /// replaces `Cache-Control` for this cache; one that does not parse is
    /// ignored. Default: [`CDN_CACHE_CONTROL`](crate::http::CDN_CACHE_CONTROL)
    /// (`CDN-Cache-Control`).
    #[must_use]
    pub fn targeted_cache_control(self, field: HeaderName) -> Self {
        self.rules(|r| r.targeted.insert(0, field))
    }

    /// The longest heuristic freshness in the shared-cache mode (a tenth of
    /// the time since `Last-Modified`, for a response without explicit
    /// freshness). Default: [`DEFAULT_HEURISTIC_MAX`](crate::http::DEFAULT_HEURISTIC_MAX)
    /// (1 hour).
    #[must_use]
    pub fn heuristic_max(self, max: Duration) -> Self {
        self.rules(|r| r.heuristic_max = max)
    }

    /// Whether answers carry `X-Cache: HIT | MISS | STALE | BYPASS`.
    /// Default: `true`.
    #[must_use]
    pub fn x_cache(self, send: bool) -> Self {
        self.rules(|r| r.x_cache = send)
    }

    /// Whether answers carry `Cache-Status` (RFC 9211), which says how the
    /// cache answered: `hit` with the entry's remaining freshness (`ttl`,
    /// negative when stale), or why the request went forward (`fwd=`
    /// `uri-miss`, `vary-miss`, `stale` for a revalidation or a replaced
    /// stale entry, `request` for the client's directives, `bypass`,
    /// `method`), the origin's status (`fwd-status`), `stored`, and
    /// `collapsed` for a caller that waited for another's load. Default:
    /// `true`, under the name [`DEFAULT_CACHE_STATUS_NAME`](crate::http::DEFAULT_CACHE_STATUS_NAME)
    /// (`tower-cache`).
    ///
    /// ```text
    /// Cache-Status: tower-cache; hit; ttl=42
    /// Cache-Status: tower-cache; fwd=stale; fwd-status=304; stored; ttl=60
    /// ```
    #[must_use]
    pub fn cache_status(self, send: bool) -> Self {
        self.rules(|r| {
            r.cache_status = send.then(|| cache_status_name(DEFAULT_CACHE_STATUS_NAME));
        })
    }

    /// The cache's name in `Cache-Status`, for example the instance's
    /// host name, so that a client behind several caches tells them apart;
    /// written as an RFC 8941 token when it is one, else as a string.
    /// Turns `Cache-Status` on. Default: `tower-cache`.
    #[must_use]
    pub fn cache_status_name(self, name: &str) -> Self {
        let name = cache_status_name(name);
        self.rules(|r| r.cache_status = Some(name))
    }

    /// How long an entry whose origin gave a validator (`ETag`,
    /// `Last-Modified`) is kept after it can no longer be served, so that
    /// the next read revalidates it with a conditional request instead of
    /// loading the body again. It is never served stale for longer than its
    /// stale windows say. Default: [`DEFAULT_KEEP`](crate::http::DEFAULT_KEEP)
    /// (10 minutes). Zero: entries leave with their stale windows.
    #[must_use]
    pub fn keep(self, keep: Duration) -> Self {
        self.rules(|r| r.keep = keep)
    }

    /// Caches the unary gRPC method at `path` (for example
    /// `"/catalog.Catalog/GetProduct"`), keyed by the request message
    /// bytes. `make_body` rebuilds the request body the inner service
    /// expects from those bytes (for tonic:
    /// `|b| tonic::body::Body::new(http_body_util::Full::new(b))`). A
    /// response is stored only when its `grpc-status` is 0 (OK). A request
    /// message larger than [`max_body_bytes`](Self::max_body_bytes) is
    /// handed to the service whole and uncached (the service's own
    /// message size limit applies to it); one whose body fails while being
    /// read gets a `400`.
    ///
    /// `B` must be the request body type of the service the layer wraps:
    /// another type does not compile. Every gRPC method of the layer uses
    /// the `make_body` of the last call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_cache::{Cache, CacheAsideLayer, Policy, store::MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = CacheAsideLayer::new(
    ///     Cache::new(MemoryStore::default()),
    ///     "catalog",
    ///     Policy::ttl(Duration::from_secs(30)),
    /// )
    /// .grpc_method("/catalog.Catalog/GetProduct", |message: Bytes| Full::new(message));
    /// let catalog = layer.layer(service_fn(|_: http::Request<Full<Bytes>>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
    /// }));
    /// let request = http::Request::get("/health").body(Full::new(Bytes::new())).unwrap();
    /// assert!(catalog.oneshot(request).await.is_ok());
    /// # }
    /// ```
    ///
    /// A body of another type than the service's does not compile:
    ///
    /// ```compile_fail
    /// # use std::time::Duration;
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # use tower_cache::{Cache, CacheAsideLayer, Policy, store::MemoryStore};
    /// # async fn run() {
    /// let layer = CacheAsideLayer::new(Cache::new(MemoryStore::default()), "catalog", Policy::default())
    ///     .grpc_method("/catalog.Catalog/GetProduct", |message: Bytes| message.to_vec());
    /// let catalog = layer.layer(service_fn(|_: http::Request<Full<Bytes>>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
    /// }));
    /// let request = http::Request::get("/").body(Full::new(Bytes::new())).unwrap();
    /// let _ = catalog.oneshot(request).await;
    /// # }
    /// ```
    pub fn grpc_method<B>(
        self,
        path: impl Into<String>,
        make_body: impl Fn(Bytes) -> B + Send + Sync + 'static,
    ) -> CacheAsideLayer<St, MakeGrpcBody<B>> {
        let path = path.into();
        let mut rules = self.rules;
        Arc::make_mut(&mut rules).grpc_methods.push(path);
        CacheAsideLayer {
            cache: self.cache,
            profile: self.profile,
            rules,
            double_delete: self.double_delete,
            write_through: self.write_through,
            grpc: MakeGrpcBody::new(make_body),
            memo: self.memo,
            absent: self.absent,
            absent_answer: self.absent_answer,
        }
    }

    /// Guards the route's misses with an existence filter: a read for
    /// which `key` names a key (`"42"` for `/products/42`) that `filter`
    /// says exists nowhere is answered with the
    /// [`absent_response`](Self::absent_response) (default `404`, empty
    /// body) without asking the inner service, and that answer is not
    /// stored. The filter is asked only when the store holds no entry for
    /// the read, never on a hit. A successful (2xx) `PUT`, `POST` or
    /// `PATCH` for which `key` names a key inserts it; insert the keys the
    /// application creates otherwise (a `POST` to a collection) with
    /// [`ExistenceFilter::insert`]. Answers are counted in
    /// `tower_cache_filtered_total` ([`ProfileStats::filtered`](crate::ProfileStats::filtered)).
    /// gRPC methods are not filtered. Default: no filter.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::{Router, routing::get};
    /// use tower_cache::filter::ExistenceFilter;
    /// use tower_cache::{Cache, CacheAsideLayer, Policy, store::MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let products = ExistenceFilter::builder().expected_items(100_000).build();
    /// products.load((1..=1_000u64).map(|id| id.to_string())).await.unwrap();
    /// let layer = CacheAsideLayer::new(
    ///     Cache::new(MemoryStore::default()),
    ///     "/products/{id}",
    ///     Policy::ttl(Duration::from_secs(60)),
    /// )
    /// .existence_filter(products, |parts| {
    ///     parts.uri.path().strip_prefix("/products/").map(str::to_owned)
    /// });
    /// let app: Router = Router::new().route("/products/{id}", get(|| async { "a product" }).layer(layer));
    /// # }
    /// ```
    #[must_use]
    pub fn existence_filter(
        mut self,
        filter: ExistenceFilter,
        key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.absent = Some(Arc::new(Absent {
            filter,
            key: Box::new(key),
        }));
        self
    }

    /// The answer to a read the [existence filter](Self::existence_filter)
    /// rules out: `status`, with `body` and its `Content-Type` when given.
    /// Default: `404 Not Found` with an empty body.
    #[must_use]
    pub fn absent_response(
        mut self,
        status: StatusCode,
        content_type: Option<http::HeaderValue>,
        body: impl Into<Bytes>,
    ) -> Self {
        self.absent_answer = AbsentAnswer {
            status,
            content_type,
            body: body.into(),
        };
        self
    }

    /// Reloads entries in the background once past `fraction` of their
    /// TTL (see [`Policy::refresh_ahead_at`]).
    #[must_use]
    pub fn refresh_ahead_at(mut self, fraction: f64) -> Self {
        self.profile = self.profile.map_policy(|p| p.refresh_ahead_at(fraction));
        self
    }

    /// The profile: name, policy and counters.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The key a read of `request` is stored under, as the layer would
    /// compute it (user, named headers and all); `None` when the request
    /// is not a cacheable read (a write, a request that bypasses the
    /// cache, an invalid `Host`). For removing one entry by hand with
    /// [`Cache::remove`](crate::Cache::remove).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cache::{Cache, CacheAsideLayer, Policy, store::MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::default());
    /// let layer = CacheAsideLayer::new(cache, "/products/{id}", Policy::ttl(Duration::from_secs(30)));
    /// let get = http::Request::get("http://shop.example/products/%31%32").body(()).unwrap();
    /// let same = http::Request::get("http://shop.example/products/12").body(()).unwrap();
    /// assert!(layer.key_for(&get).is_some());
    /// assert_eq!(layer.key_for(&get), layer.key_for(&same));
    /// ```
    pub fn key_for<B>(&self, request: &http::Request<B>) -> Option<String> {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = request.method().clone();
        parts.uri = request.uri().clone();
        parts.version = request.version();
        parts.headers = request.headers().clone();
        match self.rules.decide(&parts) {
            crate::http::Decision::Read { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl<S, St, G: Clone> Layer<S> for CacheAsideLayer<St, G> {
    type Service = CacheAside<S, St, G>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheAside {
            inner,
            layer: Arc::new(self.clone()),
        }
    }
}
