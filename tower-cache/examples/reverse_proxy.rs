//! A caching reverse proxy: every request goes to one upstream HTTP/1.1
//! server, and the answers its headers let a shared cache keep are
//! served from tower-cache.
//!
//! ```text
//! UPSTREAM=127.0.0.1:3000 BIND=127.0.0.1:8080 \
//!     cargo run --release -p tower-cache --example reverse_proxy
//! ```
//!
//! Environment: `UPSTREAM` (required: the `host:port` requests are sent
//! to), `BIND` (default `127.0.0.1:8080`), `REDIS_URL` (when set: Redis as
//! L2 behind the in-process L1), `RUST_LOG` (logs go to stderr). Once it
//! accepts connections it prints `listening on {address}` on stdout; on
//! SIGINT or SIGTERM it stops accepting, answers the requests in flight
//! and exits.
//!
//! What happens to a request:
//!
//! - [`cache_layer`] answers it from the cache when it can, as a shared
//!   cache does (RFC 9111): `GET` and `HEAD` are reads, stored for as long
//!   as the origin's `CDN-Cache-Control`, `s-maxage`, `max-age` or
//!   `Expires` say, less their `Age`, or heuristically from
//!   `Last-Modified` (never when it sets a cookie, is `private`,
//!   `no-store` or a 5xx); a stale entry with an `ETag` or `Last-Modified`
//!   is revalidated with a conditional request; a successful `POST`,
//!   `PUT`, `PATCH` or `DELETE` invalidates its target and the
//!   same-origin paths its `Location` and `Content-Location` name.
//!   Answers carry `X-Cache` and `Age`.
//! - Otherwise [`Upstream`] sends it to `http://{UPSTREAM}{path and
//!   query}`, with the client's `Host` and `Via: 1.1 tower-cache`, over
//!   pooled keep-alive connections. The hop-by-hop headers (RFC 9110
//!   §7.6.1: `Connection` and every header it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are removed from the
//!   request and from the answer, so the cache never stores them.
//! - An upstream that cannot be reached or fails is answered with
//!   `502 Bad Gateway` and `Cache-Control: no-store`, never stored.
//!
//! Protocol upgrades (WebSocket) and `CONNECT` are not proxied: `Upgrade`
//! is a hop-by-hop header like the others.
//!
//! The tests in `tests/reverse_proxy.rs` run this file in-process: they
//! call [`serve`] on a listener of their own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::{Layer, Service};
use tower_cache::CacheAside;
use tower_cache::store::{MemoryStore, RedisStore, SharedStore, TieredStore};
use tower_cache::{Cache, CacheAsideLayer, Policy};
use tracing::Instrument;

/// The body of what [`Upstream`] answers: the upstream's own, or the
/// proxy's `502`.
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// The proxy as a service: [`cache_layer`] over [`Upstream`].
pub type Proxy = CacheAside<Upstream>;

/// How long connecting to the upstream may take before the request is
/// answered with `502`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle pooled connection to the upstream is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, after the shutdown signal, the requests in flight have to be
/// answered before their connections are closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long accepting pauses after it failed (most often for want of file
/// descriptors, which closing connections give back).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The `Via` entry added to every message forwarded (RFC 9110 §7.6.3).
const VIA: HeaderValue = HeaderValue::from_static("1.1 tower-cache");

/// The headers that concern one connection only (RFC 9110 §7.6.1),
/// besides those `Connection` names.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_cache=info".into()),
        )
        .init();

    let upstream: Authority = match std::env::var("UPSTREAM") {
        Ok(v) if !v.is_empty() => v.parse().map_err(|e| format!("UPSTREAM={v:?}: {e}"))?,
        _ => return Err("UPSTREAM=host:port is required".into()),
    };
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());

    // Kept to stop its invalidation subscriber at shutdown.
    let mut tiered_store = None;
    let store = if let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        let tiered = TieredStore::new(MemoryStore::default(), RedisStore::new(url)?);
        // Fail-open: start serving even when Redis is not up yet.
        if tokio::time::timeout(Duration::from_secs(2), tiered.ready())
            .await
            .is_err()
        {
            tracing::warn!("Redis is not answering; serving from L1 until it does");
        }
        tracing::info!("cache: L1 (moka) + L2 (Redis)");
        tiered_store = Some(tiered.clone());
        SharedStore::new(tiered)
    } else {
        tracing::info!("cache: L1 (moka) only; set REDIS_URL for an L2");
        SharedStore::new(MemoryStore::default())
    };
    let cache = Cache::new(store);

    let listener = TcpListener::bind(&bind).await?;
    println!("listening on {}", listener.local_addr()?);
    tracing::info!(%upstream, "proxying");
    serve(listener, proxy(upstream, cache.clone()), signal()).await;
    tracing::info!("stopped taking requests");
    cache.shutdown().await;
    if let Some(tiered) = tiered_store {
        tiered.shutdown().await;
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The cache in front of the upstream, named `proxy`, in the shared-cache
/// mode: the origin's headers decide what is stored and for how long (RFC
/// 9111: `CDN-Cache-Control`, `s-maxage`, `max-age`, `Expires`, `Age`,
/// heuristic freshness from `Last-Modified`), stale entries are
/// revalidated with conditional requests, and stale answers are served
/// only where the origin allows them (RFC 5861). The policy's TTL applies
/// to nothing here.
pub fn cache_layer(cache: Cache) -> CacheAsideLayer {
    CacheAsideLayer::new(cache, "proxy", Policy::default()).shared_cache()
}

/// The proxy to `upstream` over `cache`: [`cache_layer`] over
/// [`Upstream`].
pub fn proxy(upstream: Authority, cache: Cache) -> Proxy {
    cache_layer(cache).layer(Upstream::new(upstream))
}

/// Serves `proxy` on `listener` until `shutdown` completes; then stops
/// accepting, lets the requests in flight be answered for up to
/// [`SHUTDOWN_GRACE`] and returns.
///
/// Each connection is served on a task of its own (span
/// `proxy.connection`), owned by this future: dropping it, or the end of
/// the grace period, closes the connections still open.
pub async fn serve(listener: TcpListener, proxy: Proxy, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer makes the header read timeout (30 s) effective.
    http.timer(TokioTimer::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The connections that ended are reaped as new ones come.
        while connections.try_join_next().is_some() {}
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let service = TowerToHyperService::new(proxy.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(
            async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("proxy.connection", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "requests still in flight after the grace period; closing their connections"
        );
    }
}

/// Forwards requests to one upstream server over pooled keep-alive
/// connections, with the client's `Host`; answers `502` itself when the
/// upstream cannot be reached or fails. Hop-by-hop headers are removed
/// from the request and from the answer, and each gets `Via`.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
}

impl Upstream {
    /// Forwarding to the server at `authority` (`host:port`).
    pub fn new(authority: Authority) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Upstream { client, authority }
    }

    /// Sends `req` to the upstream; its answer, or a `502`.
    async fn forward(self, req: Request<Incoming>) -> Response<UpstreamBody> {
        let (mut parts, body) = req.into_parts();
        // A request in absolute form may name its host only in the URI.
        if !parts.headers.contains_key(header::HOST)
            && let Some(host) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(host.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = match Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(error) => {
                tracing::warn!(%error, "no upstream URI for the request");
                return bad_gateway();
            }
        };
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.append(header::VIA, VIA);

        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                parts.headers.append(header::VIA, VIA);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => {
                tracing::warn!(upstream = %self.authority, error = ?error, "upstream failed");
                bad_gateway()
            }
        }
    }
}

impl Service<Request<Incoming>> for Upstream {
    type Response = Response<UpstreamBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client takes requests at any time: it connects, or
        // waits for a pooled connection, per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // Boxed on the miss path only: a hit never reaches the upstream.
        let upstream = self.clone();
        Box::pin(async move { Ok(upstream.forward(req).await) })
    }
}

/// The proxy's own answer when the upstream gave none: `502`, marked
/// `no-store` so that no cache keeps it.
fn bad_gateway() -> Response<UpstreamBody> {
    let mut res = Response::new(Either::Right(Full::from("bad gateway\n")));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Removes the hop-by-hop headers: those `Connection` names, then
/// [`HOP_BY_HOP`].
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// SIGINT or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
