//! The proxy of `examples/reverse_proxy.rs`, started in-process on a free
//! loopback port over an in-memory cache.

use std::net::SocketAddr;

use http::uri::Authority;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_cache::store::{MemoryStore, SharedStore};
use tower_cache::{Cache, CacheAsideLayer};
use tower_layer::Layer;

use super::reverse_proxy::{Upstream, cache_layer, serve};

/// A running proxy; it stops when dropped, closing its connections.
pub struct Proxy {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Proxy {
    /// Starts the proxy in front of `upstream`, with a `MemoryStore` of
    /// its own. It accepts connections once this returns.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        Proxy::start_with(upstream, |layer| layer).await
    }

    /// [`Proxy::start`], with the example's cache layer changed by
    /// `configure` (a builder call of the test's).
    pub async fn start_with(
        upstream: SocketAddr,
        configure: impl FnOnce(CacheAsideLayer) -> CacheAsideLayer,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let upstream: Authority = upstream.to_string().parse().expect("host:port");
        let cache = Cache::new(SharedStore::new(MemoryStore::default()));
        let server = tokio::spawn(serve(
            listener,
            configure(cache_layer(cache)).layer(Upstream::new(upstream)),
            std::future::pending(),
        ));
        Proxy { addr, server }
    }

    /// Where it listens, as `host:port`: the `Host` a client sends it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The URL of `path` on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // `serve` owns the connection tasks: they end with it.
        self.server.abort();
    }
}
