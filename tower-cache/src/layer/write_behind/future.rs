use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

/// Response future of [`WriteBehind`](super::WriteBehind): resolves once
/// the write is queued (and cached).
pub struct ResponseFuture {
    ready: Option<Result<(), tower::BoxError>>,
    boxed: Option<BoxFuture<'static, Result<(), tower::BoxError>>>,
}

impl ResponseFuture {
    pub(super) fn ready(result: Result<(), tower::BoxError>) -> Self {
        ResponseFuture {
            ready: Some(result),
            boxed: None,
        }
    }

    pub(super) fn boxed(fut: BoxFuture<'static, Result<(), tower::BoxError>>) -> Self {
        ResponseFuture {
            ready: None,
            boxed: Some(fut),
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl Future for ResponseFuture {
    type Output = Result<(), tower::BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.ready.take() {
            return Poll::Ready(result);
        }
        match self.boxed.as_mut() {
            Some(fut) => fut.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
