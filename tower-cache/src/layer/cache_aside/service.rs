use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::{CacheAsideLayer, GrpcMethods, NoGrpc, ResponseFuture};
use http_body_util::BodyExt;

use crate::engine::{Checked, Verdict};
use crate::http::{
    CacheBody, CacheStatus, Collected, Decision, HttpRules, Storability, StoredResponse,
    collect_limited, mark,
};
use crate::store::{SharedStore, Store};
use crate::{Entry, Fetched, Fill, LoadError, Loaded, clock};

/// An HTTP service behind a cache-aside cache. Built by
/// [`CacheAsideLayer`].
pub struct CacheAside<S, St = SharedStore, G = NoGrpc> {
    pub(super) inner: S,
    pub(super) layer: CacheAsideLayer<St, G>,
}

impl<S: Clone, St, G: Clone> Clone for CacheAside<S, St, G> {
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
    ReqB: Body<Data = Bytes> + Send + Unpin + 'static,
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
        // The ready service goes to this call; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let (parts, body) = req.into_parts();
        let decision = layer.rules.decide(&parts);
        // Each decision boxes only its own future: a hit never pays to
        // allocate and move the state of the write or gRPC paths.
        let inner: futures_util::future::BoxFuture<'static, _> = match decision {
            Decision::Pass => Box::pin(async move { pass(&layer.rules, inner, parts, body).await }),
            Decision::Bypass => {
                layer.profile.record_bypass();
                Box::pin(async move {
                    let res = pass(&layer.rules, inner, parts, body).await?;
                    Ok(mark(res, CacheStatus::Bypass))
                })
            }
            Decision::Write { tags } => Box::pin(write(layer, inner, parts, body, tags)),
            Decision::Read {
                key,
                head,
                reload,
                only_if_cached,
                per_user,
            } => {
                let read = Read {
                    key,
                    head,
                    reload,
                    only_if_cached,
                    per_user,
                    grpc: false,
                };
                Box::pin(read.run(layer, inner, parts, body))
            }
            Decision::GrpcRead { per_user } => {
                Box::pin(grpc_read(layer, inner, parts, body, per_user))
            }
        };
        ResponseFuture { inner }
    }
}

/// Sends the request to the inner service as it is; only the tag header
/// is taken out of the response.
async fn pass<S, ReqB, ResB>(
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

async fn write<S, ReqB, ResB, St, G>(
    layer: CacheAsideLayer<St, G>,
    inner: S,
    parts: Parts,
    body: ReqB,
    tags: Vec<String>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes> + Unpin,
    St: Store,
{
    // Where a successful PUT/PATCH's answer is stored, with write-through.
    let read_key = (layer.write_through && matches!(parts.method, Method::PUT | Method::PATCH))
        .then(|| {
            let mut read = parts.clone();
            read.method = Method::GET;
            match layer.rules.decide(&read) {
                Decision::Read { key, per_user, .. } => Some((key, per_user, read)),
                _ => None,
            }
        })
        .flatten();
    let mut inner = inner;
    let mut res = inner.call(Request::from_parts(parts, body)).await?;
    layer.rules.take_response_tags(res.headers_mut());
    if !res.status().is_success() {
        return Ok(res.map(CacheBody::stream));
    }
    let invalidated_at = clock::now_ms();
    for tag in &tags {
        layer.cache.remove_tag(tag).await;
    }
    tracing::debug!(cache = %layer.profile.name(), ?tags, "write succeeded; invalidated");
    let res = match read_key {
        Some((key, per_user, read)) => {
            store_written(&layer, res, key, per_user, read, invalidated_at).await
        }
        None => res.map(CacheBody::stream),
    };
    if let Some(delay) = layer.double_delete {
        let cache = layer.cache.clone();
        layer.cache.spawn("double_delete", async move {
            tokio::time::sleep(delay).await;
            for tag in &tags {
                cache.remove_tag(tag).await;
            }
        });
    }
    Ok(res)
}

/// Write-through for HTTP: stores the representation a successful write
/// answered with as the entry its `GET` reads.
async fn store_written<ResB, St, G>(
    layer: &CacheAsideLayer<St, G>,
    res: Response<ResB>,
    key: String,
    per_user: bool,
    read: Parts,
    invalidated_at: u64,
) -> Response<CacheBody<ResB>>
where
    ResB: Body<Data = Bytes> + Unpin,
    St: Store,
{
    let (res_parts, body) = res.into_parts();
    let Storability::Store { ttl, .. } = layer.rules.storability(&res_parts, per_user, false)
    else {
        return Response::from_parts(res_parts, CacheBody::stream(body));
    };
    let (data, trailers) = match collect_limited(body, layer.rules.max_body_bytes).await {
        Collected::Complete { data, trailers } => (data, trailers),
        Collected::TooLarge(body) | Collected::Failed(body) => {
            return Response::from_parts(res_parts, body);
        }
    };
    let stored = layer
        .rules
        .to_stored(res_parts, data, trailers, &read.headers);
    // The entry must be newer than the tag invalidation just issued.
    if clock::now_ms() <= invalidated_at {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let mut fill = Fill::new(stored.encode()).with_tags(layer.rules.read_tags(&read));
    fill.ttl = ttl;
    layer.cache.put(&key, &layer.profile, fill).await;
    stored.respond(CacheStatus::Miss, 0, false, &http::HeaderMap::new())
}

/// A gRPC unary call: the request message is part of the key, so the body
/// is read first and rebuilt for the inner service.
async fn grpc_read<S, ReqB, ResB, St, G>(
    layer: CacheAsideLayer<St, G>,
    inner: S,
    parts: Parts,
    body: ReqB,
    per_user: Option<String>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Send,
    St: Store,
    G: GrpcMethods<ReqB>,
{
    let Some(make_body) = layer.grpc.make_body().cloned() else {
        // Unreachable: a layer without a way to rebuild bodies names no
        // gRPC method.
        layer.profile.record_bypass();
        return Ok(mark(
            pass(&layer.rules, inner, parts, body).await?,
            CacheStatus::Bypass,
        ));
    };
    let Ok(message) = body.collect().await.map(|whole| whole.to_bytes()) else {
        layer.profile.record_bypass();
        return Ok(unreadable_request());
    };
    if message.len() > layer.rules.max_body_bytes {
        // Too large to key and store: the service gets the whole message,
        // uncached. A unary message is read whole by the service anyway,
        // which enforces its own size limit.
        layer.profile.record_bypass();
        return Ok(mark(
            pass(&layer.rules, inner, parts, make_body.body(message)).await?,
            CacheStatus::Bypass,
        ));
    }
    let Some(key) = layer
        .rules
        .key
        .key(&parts, per_user.as_deref(), Some(&message))
    else {
        layer.profile.record_bypass();
        return Ok(mark(
            pass(&layer.rules, inner, parts, make_body.body(message)).await?,
            CacheStatus::Bypass,
        ));
    };
    let read = Read {
        key,
        head: false,
        reload: false,
        only_if_cached: false,
        per_user: per_user.is_some(),
        grpc: true,
    };
    read.run(layer, inner, parts, make_body.body(message)).await
}

/// What a read needs besides the request.
struct Read {
    key: String,
    head: bool,
    reload: bool,
    only_if_cached: bool,
    per_user: bool,
    grpc: bool,
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
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The answer to a request whose body failed while being read: it cannot
/// be handed to the service.
fn unreadable_request<B: Body>() -> Response<CacheBody<B>> {
    let mut res = Response::new(CacheBody::empty());
    *res.status_mut() = StatusCode::BAD_REQUEST;
    mark(res, CacheStatus::Bypass)
}

/// Whether `a` and `b` are the same bytes of the same buffer.
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

fn error_response<B: Body>(status: StatusCode) -> Response<CacheBody<B>> {
    let mut res = Response::new(CacheBody::empty());
    *res.status_mut() = status;
    mark(res, CacheStatus::Miss)
}

impl Read {
    async fn run<S, ReqB, ResB, St, G>(
        self,
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
        let pending = Arc::new(Pending {
            parts,
            unsent: Mutex::new(Some((inner, body))),
        });
        let load = {
            let pending = pending.clone();
            let rules = layer.rules.clone();
            let (head, per_user, grpc) = (self.head, self.per_user, self.grpc);
            move || async move {
                let Some((mut inner, body)) = pending.take() else {
                    // Unreachable: a loader runs once and the read only
                    // takes the request back after the load is over.
                    return Ok(Loaded::Pass(error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                    )));
                };
                let res = inner
                    // Built here, on a load, not on every read: a hit
                    // never pays for the copy.
                    .call(Request::from_parts(
                        HttpRules::origin_request(&pending.parts),
                        body,
                    ))
                    .await?;
                let (mut res_parts, res_body) = res.into_parts();
                let resource_tags = rules.take_response_tags(&mut res_parts.headers);
                let storability = rules.storability(&res_parts, per_user, grpc);
                if storability == Storability::Pass {
                    return Ok(Loaded::Pass(head_only(
                        Response::from_parts(res_parts, CacheBody::stream(res_body)),
                        head,
                    )));
                }
                let shareable = rules.shareable_failure(&res_parts);
                let (data, trailers) = match collect_limited(res_body, rules.max_body_bytes).await {
                    Collected::Complete { data, trailers } => (data, trailers),
                    Collected::TooLarge(body) | Collected::Failed(body) => {
                        let res = head_only(Response::from_parts(res_parts, body), head);
                        return Ok(match storability {
                            Storability::Failed => Loaded::Failed(res, None),
                            _ => Loaded::Pass(res),
                        });
                    }
                };
                let grpc_failed = grpc
                    && trailers
                        .as_ref()
                        .and_then(|t| t.get("grpc-status"))
                        .is_none_or(|s| s != "0");
                let stored = rules.to_stored(res_parts, data, trailers, &pending.parts.headers);
                Ok(match storability {
                    Storability::Store { .. } if grpc_failed => Loaded::Pass(stored.respond(
                        CacheStatus::Miss,
                        0,
                        false,
                        &http::HeaderMap::new(),
                    )),
                    Storability::Store { negative, ttl } => {
                        let mut tags = rules.read_tags(&pending.parts);
                        tags.extend(resource_tags);
                        let mut fill = Fill::new(stored.encode()).with_tags(tags);
                        fill.negative = negative;
                        fill.ttl = ttl;
                        Loaded::Store(fill)
                    }
                    _ => {
                        // Waiters get this failure only when it is no one's
                        // private answer; otherwise a 502 of their own.
                        let payload = shareable.then(|| stored.encode());
                        Loaded::Failed(
                            stored.respond(CacheStatus::Miss, 0, head, &http::HeaderMap::new()),
                            payload,
                        )
                    }
                })
            }
        };

        let headers = &pending.parts.headers;
        if self.only_if_cached {
            return Ok(from_store_only(&layer, &self.key, headers, self.head).await);
        }
        // What the check decoded, with the buffer it decoded, so that a
        // hit is decoded once and an older entry is never mistaken for the
        // one returned.
        let mut decoded: Option<(Bytes, StoredResponse)> = None;
        // The `Vary` names of an entry of another variant.
        let mut other_variant: Option<Vec<http::HeaderName>> = None;
        let cache = &layer.cache;
        let profile = &layer.profile;
        let fetched = if self.reload {
            Box::pin(cache.reload(&self.key, profile, load)).await
        } else {
            match cache
                .fetch_verdict(
                    &self.key,
                    profile,
                    |entry: &Entry| check(entry, headers, &mut decoded, &mut other_variant),
                    load,
                )
                .await
            {
                Checked::Done(fetched) => fetched,
                Checked::Skipped(load) => {
                    // Another variant holds the key: ours has a key of its own.
                    let names = other_variant.take().unwrap_or_default();
                    let key = layer.rules.key.variant(&self.key, &names, headers);
                    let check =
                        |entry: &Entry| check(entry, headers, &mut decoded, &mut other_variant);
                    match cache.fetch_verdict(&key, profile, check, load).await {
                        Checked::Done(fetched) => fetched,
                        // The origin changed what it varies on: ask it
                        // for ours, unstored.
                        Checked::Skipped(_) => return pass_unstored(&layer.rules, &pending).await,
                    }
                }
            }
        };
        let (entry, status) = match fetched {
            Ok(Fetched::Hit(entry)) => (entry, CacheStatus::Hit),
            Ok(Fetched::Stale(entry)) => (entry, CacheStatus::Stale),
            Ok(Fetched::Miss(entry)) => (entry, CacheStatus::Miss),
            Ok(Fetched::Passed(res)) => return Ok(mark(res, CacheStatus::Miss)),
            Err(LoadError::Origin(error)) => return Err(error),
            Err(LoadError::Joined(joined)) => {
                return Ok(
                    match joined
                        .payload
                        .as_ref()
                        .and_then(|p| StoredResponse::decode(p).ok())
                    {
                        Some(stored) => stored.respond(CacheStatus::Miss, 0, self.head, headers),
                        None => error_response(StatusCode::BAD_GATEWAY),
                    },
                );
            }
            Err(LoadError::Timeout) => return Ok(error_response(StatusCode::GATEWAY_TIMEOUT)),
            Err(LoadError::Aborted) => return Ok(error_response(StatusCode::BAD_GATEWAY)),
        };
        let stored = match decoded {
            Some((bytes, stored)) if same_buffer(&bytes, &entry.value) => stored,
            _ => match StoredResponse::decode(&entry.value) {
                Ok(stored) => stored,
                Err(_) => return Ok(error_response(StatusCode::BAD_GATEWAY)),
            },
        };
        if !stored.vary_matches(headers) {
            // The load this caller waited for answered another variant:
            // ask the origin for ours, unstored.
            return pass_unstored(&layer.rules, &pending).await;
        }
        let age = clock::now_ms().saturating_sub(entry.stored_at) / 1_000;
        Ok(stored.respond(status, age, self.head, headers))
    }
}

/// The answer to `Cache-Control: only-if-cached`: the stored response
/// (fresh, or stale within its window), or 504 without asking the origin
/// (RFC 9111 §5.2.1.7).
async fn from_store_only<B: Body, St: Store, G>(
    layer: &CacheAsideLayer<St, G>,
    key: &str,
    headers: &http::HeaderMap,
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
    match stored {
        Some((entry, stored)) => {
            let status = if entry.is_fresh_at(now) {
                layer.profile.record_hit();
                CacheStatus::Hit
            } else {
                layer.profile.record_stale();
                CacheStatus::Stale
            };
            let age = now.saturating_sub(entry.stored_at) / 1_000;
            stored.respond(status, age, head, headers)
        }
        None => {
            layer.profile.record_miss();
            error_response(StatusCode::GATEWAY_TIMEOUT)
        }
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

/// Whether a stored entry answers a request with `headers`: served when
/// it decodes and is the request's `Vary` variant (kept in `decoded` with
/// its buffer), skipped when it is another variant (its `Vary` names kept
/// in `other_variant`), dropped when it does not decode.
fn check(
    entry: &Entry,
    headers: &http::HeaderMap,
    decoded: &mut Option<(Bytes, StoredResponse)>,
    other_variant: &mut Option<Vec<http::HeaderName>>,
) -> Verdict {
    match StoredResponse::decode(&entry.value) {
        Ok(stored) if stored.vary_matches(headers) => {
            *decoded = Some((entry.value.clone(), stored));
            Verdict::Serve
        }
        Ok(stored) => {
            *other_variant = Some(stored.vary.into_iter().map(|(name, _)| name).collect());
            Verdict::Skip
        }
        Err(_) => Verdict::Drop,
    }
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
