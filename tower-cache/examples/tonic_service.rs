//! A tonic service whose unary `GetProduct` is cached with
//! `CacheAsideLayer::tonic_method`: served on a free port of 127.0.0.1,
//! called twice by a tonic client over TCP, the second answer from the
//! cache.
//!
//! ```sh
//! cargo run -p tower-cache --features tonic --example tonic_service
//! ```
//!
//! The service is written by hand here, to keep the example to one file;
//! a generated one (`CatalogServer::new(...)` from `tonic-prost-build`)
//! goes behind the layer the same way, as in `axum-example/src/grpc.rs`.

use std::convert::Infallible;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower_cache::store::MemoryStore;
use tower_cache::{Cache, CacheAsideLayer, Policy};

const GET_PRODUCT: &str = "/catalog.Catalog/GetProduct";

/// `catalog.GetProductRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct GetProductRequest {
    #[prost(uint64, tag = "1")]
    id: u64,
}

/// `catalog.Product`.
#[derive(Clone, PartialEq, prost::Message)]
struct Product {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    name: String,
}

/// The `catalog.Catalog` service; `loads` counts the calls that reach it.
#[derive(Clone, Default)]
struct Catalog {
    loads: Arc<AtomicU64>,
}

impl NamedService for Catalog {
    const NAME: &'static str = "catalog.Catalog";
}

impl UnaryService<GetProductRequest> for Catalog {
    type Response = Product;
    type Future = BoxFuture<'static, Result<Response<Product>, Status>>;

    fn call(&mut self, request: Request<GetProductRequest>) -> Self::Future {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let id = request.into_inner().id;
        Box::pin(async move {
            let mut reply = Response::new(Product {
                id,
                name: format!("Product {id}"),
            });
            // What the reply is about: `cache.remove_tag("product:42")`
            // drops it. The layer takes the tag out before the reply leaves.
            if let Ok(tag) = format!("product:{id}").parse() {
                reply.metadata_mut().insert("cache-tag", tag);
            }
            Ok(reply)
        })
    }
}

impl tower::Service<http::Request<Body>> for Catalog {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let catalog = self.clone();
        Box::pin(async move {
            Ok(match request.uri().path() {
                GET_PRODUCT => {
                    let codec = ProstCodec::<Product, GetProductRequest>::default();
                    Grpc::new(codec).unary(catalog, request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let layer = CacheAsideLayer::new(
        Cache::new(MemoryStore::default()),
        GET_PRODUCT,
        Policy::ttl(Duration::from_secs(60)),
    )
    .tonic_method(GET_PRODUCT);
    let catalog = Catalog::default();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(catalog.clone())
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    println!("serving catalog.Catalog on {addr}");

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);
    let mut replies = Vec::new();
    for _ in 0..2 {
        client.ready().await?;
        let reply = client
            .unary(
                Request::new(GetProductRequest { id: 42 }),
                http::uri::PathAndQuery::from_static(GET_PRODUCT),
                ProstCodec::<GetProductRequest, Product>::default(),
            )
            .await?;
        let x_cache = reply
            .metadata()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let product = reply.into_inner();
        println!("{} {:?}: {x_cache}", product.id, product.name);
        replies.push((product, x_cache));
    }

    assert_eq!(replies[0].1, "MISS");
    assert_eq!(replies[1].1, "HIT", "the second answer is the cache's");
    assert_eq!(replies[0].0, replies[1].0, "the same reply");
    assert_eq!(
        catalog.loads.load(Ordering::SeqCst),
        1,
        "one call reached the service"
    );

    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_second_call_is_answered_from_the_cache() -> Result<(), Box<dyn std::error::Error>> {
        super::main()
    }
}
