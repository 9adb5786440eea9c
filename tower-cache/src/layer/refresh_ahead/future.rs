use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

pin_project! {
    /// Response future of [`RefreshAhead`](super::RefreshAhead): the read
    /// layer's own future.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) inner: F,
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
