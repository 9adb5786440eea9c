use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

/// Response future of [`WriteThrough`](super::WriteThrough).
pub struct ResponseFuture<T> {
    pub(super) inner: BoxFuture<'static, Result<T, tower::BoxError>>,
}

impl<T> std::fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, tower::BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
