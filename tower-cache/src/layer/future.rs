//! The response future the layers share.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

pin_project! {
    /// Response future of the layers: the future of one call, polled in
    /// place. Each layer names it in its own module, with the future it
    /// holds: [`read_through::ResponseFuture`](super::read_through::ResponseFuture),
    /// [`write_through::ResponseFuture`](super::write_through::ResponseFuture),
    /// [`refresh_ahead::ResponseFuture`](super::refresh_ahead::ResponseFuture)
    /// and, with the `http` feature, `cache_aside::ResponseFuture`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F) -> Self {
        ResponseFuture { inner }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
