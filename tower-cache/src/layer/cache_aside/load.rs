//! The load of a cacheable read: the request sent to the origin
//! (conditional when a stored response is to be revalidated) and what
//! becomes of its answer: stored whole, streamed to its caller while a copy
//! is stored, passed to this caller only, or a failure.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::read::Pending;
use super::service::error_response;
use crate::http::{
    CacheBody, CacheStatus, Collected, HttpRules, Storability, StoredResponse, collect_limited,
    decidable_from_head, respond_streamed, tee,
};
use crate::{Entry, Fill, Loaded, Loader, PendingFill};

/// The load of a read: the request sent to the origin (conditional when
/// a stored response is to be revalidated) and its answer, to store, to
/// pass to this caller only, or a failure.
#[expect(
    clippy::struct_excessive_bools,
    reason = "the read's flags, one per property of the request"
)]
pub(super) struct HttpLoad<S, ReqB, ResB> {
    pub(super) pending: Arc<Pending<S, ReqB>>,
    pub(super) rules: Arc<HttpRules>,
    /// A `HEAD`, loaded as a `GET`.
    pub(super) head: bool,
    /// The key is a user's.
    pub(super) per_user: bool,
    /// The request carries `Authorization` (shared-cache mode).
    pub(super) authorized: bool,
    /// A gRPC unary call.
    pub(super) grpc: bool,
    /// The stored entry to revalidate, if the engine gave one (boxed: a
    /// hit moves this loader, and never fills it).
    pub(super) stale: Option<Box<Entry>>,
    pub(super) body: PhantomData<fn() -> ResB>,
}

impl<S, ReqB, ResB> Loader for HttpLoad<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Send,
{
    type Value = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Loaded<Self::Value>, S::Error>>;

    fn load(self) -> Self::Future {
        Box::pin(self.run())
    }

    fn revalidate(&mut self, stale: &Entry) {
        // Decoded only if the load runs.
        self.stale = Some(Box::new(stale.clone()));
    }

    fn can_revalidate(&self) -> bool {
        true
    }
}

impl<S, ReqB, ResB> HttpLoad<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Send,
{
    async fn run(self) -> Result<Loaded<Response<CacheBody<ResB>>>, S::Error> {
        let Some((mut inner, body)) = self.pending.take() else {
            // Unreachable: a loader runs once and the read only takes
            // the request back after the load is over.
            return Ok(Loaded::Pass(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
            )));
        };
        let headers = &self.pending.parts.headers;
        let (stale_tags, stale) = match &self.stale {
            Some(entry) => (
                entry.tags().to_vec(),
                StoredResponse::decode(entry.value())
                    .ok()
                    .filter(|s| s.vary_matches(headers) && s.validator().is_some()),
            ),
            None => (Vec::new(), None),
        };
        let started = Instant::now();
        let res = inner
            // Built here, on a load, not on every read: a hit never
            // pays for the copy.
            .call(Request::from_parts(
                HttpRules::origin_request(&self.pending.parts, stale.as_ref()),
                body,
            ))
            .await?;
        let delay = started.elapsed();
        self.pending.set_forwarded(stale.is_some(), res.status());
        let (mut res_parts, res_body) = res.into_parts();
        let mut resource_tags = self.rules.take_response_tags(&mut res_parts.headers);
        let rules = &self.rules;
        if res_parts.status == StatusCode::NOT_MODIFIED
            && let Some(stale) = stale
        {
            // Revalidated: the stored body, with the 304's headers.
            let Some((merged, data, trailers)) = HttpRules::merge_not_modified(stale, &res_parts)
            else {
                // The 304 names another representation than the stored one.
                return Ok(Loaded::Failed(
                    error_response(StatusCode::BAD_GATEWAY),
                    None,
                ));
            };
            resource_tags.extend(stale_tags);
            let storability = self.storability(&merged, delay);
            return Ok(self.finish(merged, data, trailers, storability, resource_tags));
        }
        let storability = self.storability(&res_parts, delay);
        if storability == Storability::Pass {
            let res = Response::from_parts(res_parts, CacheBody::stream(res_body));
            return Ok(Loaded::Pass(head_only(res, self.head)));
        }
        if self.streams(storability, &res_parts, &res_body) {
            return Ok(self.stream(res_parts, res_body, storability, resource_tags, delay));
        }
        let (data, trailers) = match collect_limited(res_body, rules.max_body_bytes).await {
            Collected::Complete { data, trailers } => (data, trailers),
            Collected::TooLarge(body) | Collected::Failed(body) => {
                let res = head_only(Response::from_parts(res_parts, body), self.head);
                return Ok(match storability {
                    Storability::Failed => Loaded::Failed(res, None),
                    _ => Loaded::Pass(res),
                });
            }
        };
        Ok(self.finish(res_parts, data, trailers, storability, resource_tags))
    }

    /// Whether a response to store streams to this caller as the origin
    /// sends it, a copy collected for the store. Not for a `HEAD` (its
    /// client gets no body), a gRPC call (its trailers decide), a failure
    /// (stale-if-error may answer in its place), a body known to be over
    /// the limit (it passes through, never stored), nor a request whose
    /// `If-None-Match` only the body's hash could answer.
    fn streams(&self, storability: Storability, res: &http::response::Parts, body: &ResB) -> bool {
        !self.head
            && !self.grpc
            && matches!(
                storability,
                Storability::Store { .. } | Storability::Shared(_)
            )
            && body.size_hint().lower() <= self.rules.max_body_bytes as u64
            && decidable_from_head(&res.headers, &self.pending.parts.headers)
    }

    /// A response streamed to this caller as the origin sends it: its head
    /// now, and the store once a copy of its body is read whole, built as
    /// [`HttpLoad::finish`] builds it. Nothing is stored when the body
    /// passes the limit or fails; the client gets the rest, or the error.
    /// The end of the client's body comes once the copy is stored.
    fn stream(
        self,
        res_parts: http::response::Parts,
        res_body: ResB,
        storability: Storability,
        resource_tags: Vec<String>,
        delay: Duration,
    ) -> Loaded<Response<CacheBody<ResB>>> {
        // As old as a stored entry read now would be.
        let already = match storability {
            Storability::Shared(lifetime) => lifetime.age,
            _ => Duration::ZERO,
        };
        let (status, origin_headers) = (res_parts.status, res_parts.headers.clone());
        let pending = self.pending.clone();
        // `stored` in Cache-Status only when the whole body is known to fit.
        let fits = res_body
            .size_hint()
            .exact()
            .is_some_and(|len| len <= self.rules.max_body_bytes as u64);
        pending
            .streamed
            .store(fits, std::sync::atomic::Ordering::Relaxed);
        let max = self.rules.max_body_bytes;
        let (client, collect) = tee(res_body, max, move |data, trailers| {
            match self.finish(res_parts, data, trailers, storability, resource_tags) {
                Loaded::Store(fill) => Some(fill),
                _ => None,
            }
        });
        let res = respond_streamed(
            status,
            origin_headers,
            CacheBody::tee(client),
            already.saturating_add(delay).as_secs(),
            &pending.parts.headers,
        );
        Loaded::Streaming(res, PendingFill::new(collect))
    }

    /// Whether the response may be stored, by the rules of the route's
    /// mode; `delay` is how long the origin took to answer.
    fn storability(&self, res: &http::response::Parts, delay: Duration) -> Storability {
        if self.rules.shared && !self.grpc {
            self.rules
                .storability_shared(res, self.per_user, self.authorized, delay)
        } else {
            self.rules.storability(res, self.per_user, self.grpc)
        }
    }

    /// What becomes of a whole response: stored, passed or failed.
    fn finish(
        &self,
        res_parts: http::response::Parts,
        data: Bytes,
        trailers: Option<HeaderMap>,
        storability: Storability,
        resource_tags: Vec<String>,
    ) -> Loaded<Response<CacheBody<ResB>>> {
        let rules = &self.rules;
        let grpc_failed = self.grpc
            && trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .is_none_or(|s| s != "0");
        let shareable = rules.shareable_failure(&res_parts);
        let stored = rules.to_stored(res_parts, data, trailers, &self.pending.parts.headers);
        let tags = || {
            let mut tags = rules.read_tags(&self.pending.parts);
            for tag in resource_tags {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            tags
        };
        outcome(
            stored,
            storability,
            rules,
            tags,
            grpc_failed,
            shareable,
            self.head,
        )
    }
}

/// What becomes of a whole response a read's load got: stored (with
/// `tags`), handed to this caller only (a gRPC call whose trailers tell a
/// failure), or a failure, shared with the callers that waited for it
/// when `shareable`.
fn outcome<B: Body>(
    stored: StoredResponse,
    storability: Storability,
    rules: &HttpRules,
    tags: impl FnOnce() -> Vec<String>,
    grpc_failed: bool,
    shareable: bool,
    head: bool,
) -> Loaded<Response<CacheBody<B>>> {
    match storability {
        Storability::Store { .. } if grpc_failed => {
            Loaded::Pass(stored.respond(CacheStatus::Miss, 0, false, &HeaderMap::new()))
        }
        Storability::Store { negative, ttl } => {
            let mut fill = Fill::new(stored.encode()).with_tags(tags());
            fill.negative = negative;
            fill.ttl = ttl;
            Loaded::Store(keep_to_revalidate(fill, &stored, rules))
        }
        Storability::Shared(lifetime) => {
            let (revalidate, if_error) = if lifetime.no_stale {
                (Duration::ZERO, Duration::ZERO)
            } else {
                (
                    lifetime.revalidate.unwrap_or(rules.policy_windows.0),
                    lifetime.if_error.unwrap_or(rules.policy_windows.1),
                )
            };
            let fill = Fill::new(stored.encode())
                .with_tags(tags())
                .with_ttl(lifetime.fresh_for)
                .with_age(lifetime.age)
                .without_jitter()
                .with_stale_windows(revalidate, if_error);
            Loaded::Store(keep_to_revalidate(fill, &stored, rules))
        }
        _ => {
            // Waiters get this failure only when it is no one's private
            // answer; otherwise a 502 of their own.
            let payload = shareable.then(|| stored.encode());
            let res = stored.respond(CacheStatus::Miss, 0, head, &HeaderMap::new());
            Loaded::Failed(res, payload)
        }
    }
}

/// `fill`, kept past its stale windows for the route's keep time when the
/// origin gave a validator to revalidate it with.
fn keep_to_revalidate(fill: Fill, stored: &StoredResponse, rules: &HttpRules) -> Fill {
    if stored.validator().is_some() {
        fill.with_keep(rules.keep)
    } else {
        fill
    }
}

/// `res` without its body, for a `HEAD` that was loaded as a `GET`: the
/// headers say what the `GET` would carry, `Content-Length` included.
fn head_only<B: Body<Data = Bytes>>(
    mut res: Response<CacheBody<B>>,
    head: bool,
) -> Response<CacheBody<B>> {
    if !head {
        return res;
    }
    if !res.headers().contains_key(http::header::CONTENT_LENGTH)
        && let Some(len) = res.body().size_hint().exact()
    {
        res.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    res.map(|_| CacheBody::empty())
}
