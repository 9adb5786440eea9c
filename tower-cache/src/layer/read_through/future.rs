use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

/// Response future of [`ReadThrough`](super::ReadThrough).
pub struct ResponseFuture<V> {
    pub(super) inner: BoxFuture<'static, Result<V, tower::BoxError>>,
}

impl<V> std::fmt::Debug for ResponseFuture<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<V> Future for ResponseFuture<V> {
    type Output = Result<V, tower::BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
