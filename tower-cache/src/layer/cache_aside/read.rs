//! A cacheable read: answered from the cache, loaded from the inner service
//! on a miss, with the variant of the request's `Vary` headers.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::CacheAsideLayer;
use super::service::error_response;
use crate::engine::{Checked, Verdict};
use crate::http::{
    CacheBody, CacheStatus, Collected, HttpRules, Storability, StoredResponse, Wants,
    collect_limited, decidable_from_head, mark, respond_streamed, tee,
};
use crate::store::Store;
use crate::{Entry, Fetched, Fill, LoadError, Loaded, Loader, PendingFill, clock};

/// What a read needs besides the request.
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per property of the request, read once each"
)]
pub(super) struct Read {
    pub key: String,
    pub head: bool,
    pub reload: bool,
    pub only_if_cached: bool,
    pub per_user: bool,
    /// `Authorization` a shared cache answers only with what the origin
    /// marked shareable.
    pub authorized: bool,
    pub wants: Option<Box<Wants>>,
    pub grpc: bool,
}

/// The request head, shared between the read and its loader, and the
/// service and body, which the loader takes when it runs. Whatever the
/// loader did not take stays here for the read to use.
struct Pending<S, B> {
    parts: Parts,
    unsent: Mutex<Option<(S, B)>>,
}

impl<S, B> Pending<S, B> {
    fn take(&self) -> Option<(S, B)> {
        self.unsent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// What checking stored entries found, besides the verdict.
struct Found {
    /// The entry served, decoded, with the buffer it was decoded from, so
    /// that a hit is decoded once and an older entry is never mistaken for
    /// the one returned.
    decoded: Option<(Bytes, StoredResponse)>,
    /// The `Vary` names of an entry of another variant.
    other_variant: Option<Vec<HeaderName>>,
    /// What the request's directives ask of the entry, if anything.
    wants: Option<Box<Wants>>,
}

impl Found {
    /// Whether a stored entry answers a request with `headers`: served
    /// when it decodes and is the request's `Vary` variant (kept with its
    /// buffer), skipped when it is another variant (its `Vary` names
    /// kept), dropped when it does not decode.
    #[inline]
    fn check(&mut self, entry: &Entry, headers: &HeaderMap) -> Verdict {
        match StoredResponse::decode(&entry.value) {
            Ok(stored) if stored.vary_matches(headers) => {
                let verdict = match &self.wants {
                    Some(wants) => wanted(wants, entry, &stored),
                    None => Verdict::Serve,
                };
                self.decoded = Some((entry.value.clone(), stored));
                verdict
            }
            Ok(stored) => {
                self.other_variant = Some(stored.vary.into_iter().map(|(name, _)| name).collect());
                Verdict::Skip
            }
            Err(_) => Verdict::Drop,
        }
    }

    /// The stored response of `entry`: the one the check decoded when it
    /// is that very buffer, else decoded now.
    #[inline]
    fn stored(&mut self, entry: &Entry) -> Option<StoredResponse> {
        match self.decoded.take() {
            Some((bytes, stored)) if same_buffer(&bytes, &entry.value) => Some(stored),
            _ => StoredResponse::decode(&entry.value).ok(),
        }
    }
}

/// What a request's directives make of an entry (RFC 9111 §5.2.1):
/// refreshed when older than `max-age` or fresh for less than `min-fresh`,
/// served stale within `max-stale` unless its origin forbade serving it
/// stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache`).
fn wanted(wants: &Wants, entry: &Entry, stored: &StoredResponse) -> Verdict {
    let now = clock::now_ms();
    let age = now.saturating_sub(entry.stored_at());
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if wants.max_age.is_some_and(|max| age > ms(max))
        || wants
            .min_fresh
            .is_some_and(|min| entry.fresh_until() < now.saturating_add(ms(min)))
    {
        return Verdict::Refresh;
    }
    if let Some(max_stale) = wants.max_stale
        && !entry.is_fresh_at(now)
        && !crate::http::CacheControl::parse(&stored.headers).shared_no_stale()
        && now - entry.fresh_until() <= ms(max_stale)
    {
        return Verdict::ServeStale;
    }
    Verdict::Serve
}

/// Whether `a` and `b` are the same bytes of the same buffer.
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

impl Read {
    /// Answers the read. The hit path awaits one future, the engine's
    /// fetch, in place: no step of its own is a future to build and move.
    pub(super) async fn run<S, ReqB, ResB, St, G>(
        mut self,
        layer: CacheAsideLayer<St, G>,
        inner: S,
        parts: Parts,
        body: ReqB,
    ) -> Result<Response<CacheBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: fmt::Display + Send + 'static,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + Unpin + 'static,
        ResB::Error: Send,
        St: Store,
    {
        if self.only_if_cached {
            return Ok(from_store_only(&layer, &self.key, &parts.headers, self.head).await);
        }
        let pending = Arc::new(Pending {
            parts,
            unsent: Mutex::new(Some((inner, body))),
        });
        let mut found = Found {
            decoded: None,
            other_variant: None,
            wants: self.wants.take(),
        };
        // The load's future is made only if the engine calls for it.
        let load = HttpLoad {
            pending: pending.clone(),
            rules: layer.rules.clone(),
            head: self.head,
            per_user: self.per_user,
            authorized: self.authorized,
            grpc: self.grpc,
            stale: None,
            body: PhantomData,
        };
        let (cache, profile) = (&layer.cache, &layer.profile);
        let headers = &pending.parts.headers;
        let fetched = if self.reload {
            Box::pin(cache.reload(&self.key, profile, load)).await
        } else {
            let check = |entry: &Entry| found.check(entry, headers);
            match cache.fetch_verdict(&self.key, profile, check, load).await {
                Checked::Done(fetched) => fetched,
                Checked::Skipped(load) => {
                    // Another variant holds the key: ours has a key of its
                    // own.
                    let names = found.other_variant.take().unwrap_or_default();
                    let key = layer.rules.key.variant(&self.key, &names, headers);
                    let check = |entry: &Entry| found.check(entry, headers);
                    match Box::pin(cache.fetch_verdict(&key, profile, check, load)).await {
                        Checked::Done(fetched) => fetched,
                        // The origin changed what it varies on: ask it for
                        // ours, unstored.
                        Checked::Skipped(_) => {
                            return Box::pin(pass_unstored(&layer.rules, &pending)).await;
                        }
                    }
                }
            }
        };
        let (entry, status) = match fetched {
            Ok(Fetched::Hit(entry)) => (entry, CacheStatus::Hit),
            Ok(Fetched::Stale(entry)) => (entry, CacheStatus::Stale),
            Ok(Fetched::Miss(entry)) => (entry, CacheStatus::Miss),
            Ok(Fetched::Passed(res)) => return Ok(mark(res, CacheStatus::Miss)),
            Err(error) => return self.failed(error, headers),
        };
        // The stored response of the entry, decoded once.
        let Some(stored) = found.stored(&entry) else {
            return Ok(error_response(StatusCode::BAD_GATEWAY));
        };
        if !stored.vary_matches(headers) {
            // The load this caller waited for answered another variant:
            // ask the origin for ours, unstored.
            return Box::pin(pass_unstored(&layer.rules, &pending)).await;
        }
        let age = clock::now_ms().saturating_sub(entry.stored_at) / 1_000;
        Ok(stored.respond(status, age, self.head, headers))
    }

    /// The response for a load that failed: this caller's own error, the
    /// shared failure of the load it waited for, a `504` for a timeout or a
    /// `502`.
    fn failed<B: Body, E>(
        &self,
        error: LoadError<E>,
        headers: &HeaderMap,
    ) -> Result<Response<CacheBody<B>>, E> {
        Ok(match error {
            LoadError::Origin(error) => return Err(error),
            LoadError::Joined(joined) => match joined
                .payload
                .as_ref()
                .and_then(|p| StoredResponse::decode(p).ok())
            {
                Some(stored) => stored.respond(CacheStatus::Miss, 0, self.head, headers),
                None => error_response(StatusCode::BAD_GATEWAY),
            },
            LoadError::Timeout => error_response(StatusCode::GATEWAY_TIMEOUT),
            LoadError::Aborted => error_response(StatusCode::BAD_GATEWAY),
        })
    }
}

/// The load of a read: the request sent to the origin (conditional when
/// a stored response is to be revalidated) and its answer, to store, to
/// pass to this caller only, or a failure.
#[expect(
    clippy::struct_excessive_bools,
    reason = "the read's flags, one per property of the request"
)]
struct HttpLoad<S, ReqB, ResB> {
    pending: Arc<Pending<S, ReqB>>,
    rules: Arc<HttpRules>,
    /// A `HEAD`, loaded as a `GET`.
    head: bool,
    /// The key is a user's.
    per_user: bool,
    /// The request carries `Authorization` (shared-cache mode).
    authorized: bool,
    /// A gRPC unary call.
    grpc: bool,
    /// The stored entry to revalidate, if the engine gave one (boxed: a
    /// hit moves this loader, and never fills it).
    stale: Option<Box<Entry>>,
    body: PhantomData<fn() -> ResB>,
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

/// The answer to `Cache-Control: only-if-cached`: the stored response
/// (fresh, or stale within its window), or 504 without asking the origin
/// (RFC 9111 §5.2.1.7).
async fn from_store_only<B: Body, St: Store, G>(
    layer: &CacheAsideLayer<St, G>,
    key: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<CacheBody<B>> {
    let now = clock::now_ms();
    let found = layer.cache.store().get(key).await.ok().flatten();
    let stored = found
        .filter(|entry| entry.is_servable_at(now))
        .and_then(|entry| {
            let stored = StoredResponse::decode(&entry.value).ok()?;
            stored.vary_matches(headers).then_some((entry, stored))
        });
    if let Some((entry, stored)) = stored {
        let status = if entry.is_fresh_at(now) {
            layer.profile.record_hit();
            CacheStatus::Hit
        } else {
            layer.profile.record_stale();
            CacheStatus::Stale
        };
        let age = now.saturating_sub(entry.stored_at) / 1_000;
        stored.respond(status, age, head, headers)
    } else {
        layer.profile.record_miss();
        error_response(StatusCode::GATEWAY_TIMEOUT)
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

/// Sends the request, as the client sent it, to the origin without
/// storing the answer; a `502` if the request was already used.
async fn pass_unstored<S, ReqB, ResB>(
    rules: &HttpRules,
    pending: &Pending<S, ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    match pending.take() {
        Some((mut inner, body)) => {
            let mut res = inner
                .call(Request::from_parts(pending.parts.clone(), body))
                .await?;
            rules.take_response_tags(res.headers_mut());
            Ok(mark(res.map(CacheBody::stream), CacheStatus::Miss))
        }
        None => Ok(error_response(StatusCode::BAD_GATEWAY)),
    }
}
