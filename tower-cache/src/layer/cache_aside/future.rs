use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::Response;

use crate::http::CacheBody;

/// Response future of [`CacheAside`](super::CacheAside).
pub struct ResponseFuture<B: http_body::Body, E> {
    pub(super) inner: BoxFuture<'static, Result<Response<CacheBody<B>>, E>>,
}

impl<B: http_body::Body, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<B: http_body::Body, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
