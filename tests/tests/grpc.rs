//! A unary gRPC method cached by `CacheAsideLayer`, with a real tonic
//! server and client over TCP.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower_cache::layer::cache_aside::MakeGrpcBody;
use tower_cache::store::{MemoryStore, TieredStore};
use tower_cache::{Cache, CacheAsideLayer, Policy};
use tower_cache_tests::RedisServer;

#[derive(Clone, PartialEq, prost::Message)]
struct GetProduct {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Product {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(uint64, tag = "3")]
    served: u64,
}

const GET_PRODUCT: &str = "/catalog.Catalog/GetProduct";
const LIST_PRODUCTS: &str = "/catalog.Catalog/ListProducts";

/// The catalog's gRPC service, written without code generation.
#[derive(Clone, Default)]
struct Catalog {
    calls: Arc<AtomicUsize>,
}

impl NamedService for Catalog {
    const NAME: &'static str = "catalog.Catalog";
}

struct GetProductHandler(Catalog);

impl UnaryService<GetProduct> for GetProductHandler {
    type Response = Product;
    type Future = BoxFuture<'static, Result<Response<Product>, Status>>;

    fn call(&mut self, request: Request<GetProduct>) -> Self::Future {
        let served = self.0.calls.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        Box::pin(async move {
            let id = request.into_inner().id;
            if id == 0 {
                return Err(Status::not_found("no product 0"));
            }
            Ok(Response::new(Product {
                id,
                name: format!("Product {id}"),
                served,
            }))
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

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let catalog = self.clone();
        Box::pin(async move {
            match req.uri().path() {
                GET_PRODUCT | LIST_PRODUCTS => {
                    let mut grpc = Grpc::new(ProstCodec::<Product, GetProduct>::default());
                    Ok(grpc.unary(GetProductHandler(catalog), req).await)
                }
                _ => Ok(Status::unimplemented("no such method").into_http()),
            }
        })
    }
}

async fn serve<St: tower_cache::Store>(
    catalog: Catalog,
    layer: CacheAsideLayer<St, MakeGrpcBody<Body>>,
) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(catalog)
            .serve_with_incoming(tokio_stream_from(listener))
            .await
            .unwrap();
    });
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

async fn call(channel: &Channel, path: &'static str, id: u64) -> Result<Product, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    client
        .unary(
            Request::new(GetProduct { id }),
            http::uri::PathAndQuery::from_static(path),
            ProstCodec::<GetProduct, Product>::default(),
        )
        .await
        .map(Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_unary_method_is_cached_by_request_message() {
    let redis = RedisServer::start();
    // A generous timeout: a slow machine must not make Redis look away.
    let l2 = tower_cache::store::RedisStore::builder(redis.url())
        .op_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let store = TieredStore::new(MemoryStore::default(), l2);
    cached_by_request_message(Cache::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_unary_method_is_cached_by_request_message_in_memory() {
    cached_by_request_message(Cache::new(MemoryStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_limit_is_served_uncached() {
    let layer = CacheAsideLayer::new(
        Cache::new(MemoryStore::default()),
        GET_PRODUCT,
        Policy::ttl(Duration::from_secs(60)),
    )
    .max_body_bytes(1)
    .grpc_method(GET_PRODUCT, |bytes: Bytes| Body::new(Full::new(bytes)));
    let catalog = Catalog::default();
    let channel = serve(catalog.clone(), layer.clone()).await;
    let first = call(&channel, GET_PRODUCT, 7).await.unwrap();
    let second = call(&channel, GET_PRODUCT, 7).await.unwrap();
    assert_eq!((first.name.as_str(), second.id), ("Product 7", 7));
    assert_ne!(first.served, second.served, "not cached");
    assert_eq!(layer.profile().stats().bypasses, 2);
}

async fn cached_by_request_message<St: tower_cache::Store>(cache: Cache<St>) {
    let layer = CacheAsideLayer::new(cache, GET_PRODUCT, Policy::ttl(Duration::from_secs(60)))
        .grpc_method(GET_PRODUCT, |bytes: Bytes| Body::new(Full::new(bytes)));
    let catalog = Catalog::default();
    let channel = serve(catalog.clone(), layer.clone()).await;

    let first = call(&channel, GET_PRODUCT, 7).await.unwrap();
    let second = call(&channel, GET_PRODUCT, 7).await.unwrap();
    assert_eq!(first, second, "the cached reply, byte for byte");
    assert_eq!(first.name, "Product 7");
    assert_eq!(catalog.calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.profile().stats().hits, 1);

    let other = call(&channel, GET_PRODUCT, 8).await.unwrap();
    assert_eq!(other.name, "Product 8");
    assert_eq!(
        catalog.calls.load(Ordering::SeqCst),
        2,
        "the message is in the key"
    );

    // Errors are not cached.
    for _ in 0..2 {
        let err = call(&channel, GET_PRODUCT, 0).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    assert_eq!(catalog.calls.load(Ordering::SeqCst), 4);

    // A method that is not marked is never cached.
    let a = call(&channel, LIST_PRODUCTS, 7).await.unwrap();
    let b = call(&channel, LIST_PRODUCTS, 7).await.unwrap();
    assert_ne!(a.served, b.served);
}
