use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::{Either, ready};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::grpc::grpc_read;
use super::read::Read;
use super::write::write;
use super::{CacheAsideLayer, GrpcMethods, NoGrpc, ResponseFuture};
use crate::http::{CacheBody, CacheStatus, Decision, Fwd, HttpRules, Report, mark};
use crate::store::{SharedStore, Store};

/// An HTTP service behind a cache-aside cache. Built by
/// [`CacheAsideLayer`].
pub struct CacheAside<S, St = SharedStore, G = NoGrpc> {
    pub(super) inner: S,
    /// Shared by the service's clones: a clone per request (axum makes
    /// one) copies one pointer.
    pub(super) layer: Arc<CacheAsideLayer<St, G>>,
}

impl<S: Clone, St, G> Clone for CacheAside<S, St, G> {
    fn clone(&self) -> Self {
        CacheAside {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, St, G> fmt::Debug for CacheAside<S, St, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAside")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, St, G> CacheAside<S, St, G> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqB, ResB, St, G> Service<Request<ReqB>> for CacheAside<S, St, G>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Send,
    St: Store,
    G: GrpcMethods<ReqB>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let decision = self.layer.rules.decide(&parts);
        if let Decision::Read {
            key,
            head,
            reload: false,
            only_if_cached: false,
            wants: None,
            conditional,
            ..
        } = &decision
            && let Some(res) = self.layer.hit(key, *head, *conditional, &parts.headers)
        {
            // The service stays ready for the next call.
            return ResponseFuture::new(Either::Left(ready(Ok(res))));
        }
        // The ready service goes to this call; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        // Each decision boxes only its own future: a hit never pays to
        // allocate and move the state of the write or gRPC paths.
        let inner: futures_util::future::BoxFuture<'static, _> = match decision {
            Decision::Pass => Box::pin(async move {
                let mut res = pass(&layer.rules, inner, parts, body).await?;
                layer
                    .rules
                    .report(&mut res, &Report::forwarded(Fwd::Method));
                Ok(res)
            }),
            Decision::Bypass => {
                layer.profile.record_bypass();
                Box::pin(async move { bypass(&layer.rules, inner, parts, body).await })
            }
            Decision::Write { tags } => Box::pin(async move {
                let rules = layer.rules.clone();
                let mut res = write(layer, inner, parts, body, tags).await?;
                rules.report(&mut res, &Report::forwarded(Fwd::Method));
                Ok(res)
            }),
            Decision::Read {
                key,
                head,
                reload,
                only_if_cached,
                per_user,
                authorized,
                wants,
                conditional,
            } => {
                let read = Read {
                    key,
                    head,
                    reload,
                    only_if_cached,
                    per_user,
                    authorized,
                    wants,
                    conditional,
                    grpc: false,
                };
                Box::pin(read.run(layer, inner, parts, body))
            }
            Decision::GrpcRead { per_user } => {
                Box::pin(grpc_read(layer, inner, parts, body, per_user))
            }
        };
        ResponseFuture::new(Either::Right(inner))
    }
}

/// Sends the request to the inner service as it is; only the tag header
/// is taken out of the response.
pub(super) async fn pass<S, ReqB, ResB>(
    rules: &HttpRules,
    mut inner: S,
    parts: Parts,
    body: ReqB,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    let mut res = inner.call(Request::from_parts(parts, body)).await?;
    rules.take_response_tags(res.headers_mut());
    Ok(res.map(CacheBody::stream))
}

/// Sends the request to the inner service past the cache, marked
/// `X-Cache: BYPASS` and `Cache-Status: …; fwd=bypass`.
pub(super) async fn bypass<S, ReqB, ResB>(
    rules: &HttpRules,
    inner: S,
    parts: Parts,
    body: ReqB,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    let mut res = mark(pass(rules, inner, parts, body).await?, CacheStatus::Bypass);
    rules.report(&mut res, &Report::forwarded(Fwd::Bypass));
    Ok(res)
}

/// The answer to a request whose body failed while being read: it cannot
/// be handed to the service.
pub(super) fn unreadable_request<B: Body>(rules: &HttpRules) -> Response<CacheBody<B>> {
    let mut res = Response::new(CacheBody::empty());
    *res.status_mut() = StatusCode::BAD_REQUEST;
    let mut res = mark(res, CacheStatus::Bypass);
    let report = Report {
        detail: Some("unreadable-request"),
        ..Report::default()
    };
    rules.report(&mut res, &report);
    res
}

/// An empty response with `status`, marked `X-Cache: MISS`.
pub(super) fn error_response<B: Body>(status: StatusCode) -> Response<CacheBody<B>> {
    let mut res = Response::new(CacheBody::empty());
    *res.status_mut() = status;
    mark(res, CacheStatus::Miss)
}
