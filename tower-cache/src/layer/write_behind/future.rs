//! The response future of a write.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

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

    /// Runs `work` on a task of its own (`tower_cache.write_behind.write`,
    /// tracked by `tasks` so that shutdown waits for it), so that it goes on
    /// whether or not the caller polls the answer, and answers with its
    /// result.
    pub(super) fn spawned(
        tasks: &TaskTracker,
        work: impl Future<Output = Result<(), tower::BoxError>> + Send + 'static,
    ) -> Self {
        let span = tracing::debug_span!("tower_cache.write_behind.write");
        let task = tasks.spawn(work.instrument(span));
        ResponseFuture {
            ready: None,
            boxed: Some(Box::pin(async move {
                match task.await {
                    Ok(result) => result,
                    Err(error) => Err(error.into()),
                }
            })),
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
