use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;

/// A read service whose entries are refreshed ahead of expiry. Built by
/// [`RefreshAheadLayer`](super::RefreshAheadLayer); it delegates every
/// call to the read service inside, whose policy does the refreshing.
#[derive(Clone, Debug)]
pub struct RefreshAhead<S> {
    pub(super) inner: S,
}

impl<S> RefreshAhead<S> {
    /// The read service inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R> Service<R> for RefreshAhead<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        ResponseFuture::new(self.inner.call(request))
    }
}
