//! How a cache-aside layer rebuilds the request body of the gRPC methods it
//! caches, as a type parameter, so a body of the wrong type does not compile.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

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
