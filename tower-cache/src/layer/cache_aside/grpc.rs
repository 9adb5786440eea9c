//! gRPC unary calls: the request message is part of the key, so the body
//! is read first and rebuilt for the inner service, by a function whose
//! type the layer carries, so a body of the wrong type does not compile.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::CacheAsideLayer;
use super::read::Read;
use super::service::{bypass, unreadable_request};
use crate::http::CacheBody;
use crate::store::Store;

/// No gRPC method is cached: the default of
/// [`CacheAsideLayer`](super::CacheAsideLayer), for services of any request
/// body.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGrpc;

/// Rebuilds a request body of type `B` from the bytes of a gRPC request
/// message, which the layer read to build the key. Set by
/// [`CacheAsideLayer::grpc_method`](super::CacheAsideLayer::grpc_method).
pub struct MakeGrpcBody<B> {
    make: Arc<dyn Fn(Bytes) -> B + Send + Sync>,
}

impl<B> MakeGrpcBody<B> {
    pub(super) fn new(make: impl Fn(Bytes) -> B + Send + Sync + 'static) -> Self {
        MakeGrpcBody {
            make: Arc::new(make),
        }
    }

    /// The request body carrying `message`.
    pub(super) fn body(&self, message: Bytes) -> B {
        (self.make)(message)
    }
}

impl<B> Clone for MakeGrpcBody<B> {
    fn clone(&self) -> Self {
        MakeGrpcBody {
            make: self.make.clone(),
        }
    }
}

impl<B> fmt::Debug for MakeGrpcBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MakeGrpcBody")
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::NoGrpc {}
    impl<B> Sealed for super::MakeGrpcBody<B> {}
}

/// What a [`CacheAside`](super::CacheAside) over a service with request
/// body `B` knows about the gRPC methods it caches: [`NoGrpc`] (none, for
/// any `B`) or [`MakeGrpcBody<B>`]. Sealed.
pub trait GrpcMethods<B>: sealed::Sealed + Clone + Send + Sync + 'static {
    /// How to rebuild a request body; `None` when no gRPC method is cached.
    #[doc(hidden)]
    fn make_body(&self) -> Option<&MakeGrpcBody<B>>;
}

impl<B> GrpcMethods<B> for NoGrpc {
    fn make_body(&self) -> Option<&MakeGrpcBody<B>> {
        None
    }
}

impl<B: 'static> GrpcMethods<B> for MakeGrpcBody<B> {
    fn make_body(&self) -> Option<&MakeGrpcBody<B>> {
        Some(self)
    }
}

/// A gRPC unary call: the request message is part of the key, so the body
/// is read first and rebuilt for the inner service.
pub(super) async fn grpc_read<S, ReqB, ResB, St, G>(
    layer: Arc<CacheAsideLayer<St, G>>,
    inner: S,
    parts: Parts,
    body: ReqB,
    per_user: Option<String>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Send,
    St: Store,
    G: GrpcMethods<ReqB>,
{
    let Some(make_body) = layer.grpc.make_body().cloned() else {
        // Unreachable: a layer without a way to rebuild bodies names no
        // gRPC method.
        layer.profile.record_bypass();
        return bypass(&layer.rules, inner, parts, body).await;
    };
    let Ok(message) = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
    else {
        layer.profile.record_bypass();
        return Ok(unreadable_request(&layer.rules));
    };
    if message.len() > layer.rules.max_body_bytes {
        // Too large to key and store: the service gets the whole message,
        // uncached. A unary message is read whole by the service anyway,
        // which enforces its own size limit.
        layer.profile.record_bypass();
        return bypass(&layer.rules, inner, parts, make_body.body(message)).await;
    }
    let Some(key) = layer
        .rules
        .key
        .key(&parts, per_user.as_deref(), Some(&message))
    else {
        layer.profile.record_bypass();
        return bypass(&layer.rules, inner, parts, make_body.body(message)).await;
    };
    let read = Read {
        key,
        head: false,
        reload: false,
        only_if_cached: false,
        per_user: per_user.is_some(),
        authorized: false,
        wants: None,
        conditional: false,
        grpc: true,
    };
    read.run(layer, inner, parts, make_body.body(message)).await
}

#[cfg(feature = "tonic")]
impl<St, G> super::CacheAsideLayer<St, G> {
    /// Caches the unary tonic method at `path` (`"/{package}.{Service}/{Method}"`,
    /// for example `"/catalog.Catalog/GetProduct"`), keyed by the request
    /// message bytes: [`grpc_method`](Self::grpc_method) for a service
    /// whose request body is [`tonic::body::Body`], as tonic's generated
    /// servers are. Call it once per cached method; every rule of
    /// `grpc_method` applies (only `grpc-status` 0 is stored, a message
    /// over [`max_body_bytes`](Self::max_body_bytes) goes to the service
    /// uncached). Needs the `tonic` feature.
    ///
    /// A handler names what its reply is about in the `cache-tag`
    /// metadata of its response, as an HTTP handler does in its header
    /// (see [`tag_header`](Self::tag_header)), so that one
    /// [`Cache::remove_tag`](crate::Cache::remove_tag) drops the gRPC and
    /// the HTTP entries of a resource together.
    ///
    /// On tonic's server the layer goes in front of the generated service,
    /// `Server::builder().layer(layer).add_service(CatalogServer::new(catalog))`;
    /// `examples/tonic_service.rs` runs one over TCP.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tonic::body::Body;
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_cache::{Cache, CacheAsideLayer, Policy, store::MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = CacheAsideLayer::new(
    ///     Cache::new(MemoryStore::default()),
    ///     "catalog",
    ///     Policy::ttl(Duration::from_secs(30)),
    /// )
    /// .tonic_method("/catalog.Catalog/GetProduct")
    /// .tonic_method("/catalog.Catalog/ListProducts");
    /// // Any service of `http::Request<tonic::body::Body>`: here one that
    /// // knows no method.
    /// let catalog = layer.layer(service_fn(|_: http::Request<Body>| async {
    ///     Ok::<_, std::convert::Infallible>(tonic::Status::unimplemented("").into_http::<Body>())
    /// }));
    /// let request = http::Request::post("/catalog.Catalog/GetProduct")
    ///     .header("content-type", "application/grpc")
    ///     .body(Body::empty())
    ///     .unwrap();
    /// let response = catalog.oneshot(request).await.unwrap();
    /// assert_eq!(response.headers()["grpc-status"], "12"); // UNIMPLEMENTED, not stored
    /// # }
    /// ```
    pub fn tonic_method(
        self,
        path: impl Into<String>,
    ) -> super::CacheAsideLayer<St, MakeGrpcBody<tonic::body::Body>> {
        self.grpc_method(path, |message: Bytes| {
            tonic::body::Body::new(http_body_util::Full::new(message))
        })
    }
}
