//! A cacheable read: answered from the cache, loaded from the inner service
//! on a miss, with the variant of the request's `Vary` headers.

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::CacheAsideLayer;
use super::service::error_response;
use crate::engine::{Checked, Verdict};
use crate::http::{
    CacheBody, CacheStatus, Collected, HttpRules, Storability, StoredResponse, collect_limited,
    mark,
};
use crate::store::Store;
use crate::{Entry, Fetched, Fill, LoadError, Loaded, clock};

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
                self.decoded = Some((entry.value.clone(), stored));
                Verdict::Serve
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

/// Whether `a` and `b` are the same bytes of the same buffer.
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

impl Read {
    /// Answers the read. The hit path awaits one future, the engine's
    /// fetch, in place: no step of its own is a future to build and move.
    pub(super) async fn run<S, ReqB, ResB, St, G>(
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
        };
        let load = {
            let (pending, rules) = (pending.clone(), layer.rules.clone());
            let (head, per_user, grpc) = (self.head, self.per_user, self.grpc);
            // The load's future is made only if the engine calls for it.
            move || load(pending, rules, head, per_user, grpc)
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

/// The load of a read: the request sent to the origin and its answer, to
/// store, to pass to this caller only, or a failure. `head` for a `HEAD`
/// (loaded as a `GET`), `per_user` when the key is a user's, `grpc` for a
/// gRPC unary call.
async fn load<S, ReqB, ResB>(
    pending: Arc<Pending<S, ReqB>>,
    rules: Arc<HttpRules>,
    head: bool,
    per_user: bool,
    grpc: bool,
) -> Result<Loaded<Response<CacheBody<ResB>>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes> + Unpin,
{
    let Some((mut inner, body)) = pending.take() else {
        // Unreachable: a loader runs once and the read only takes
        // the request back after the load is over.
        return Ok(Loaded::Pass(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
        )));
    };
    let res = inner
        // Built here, on a load, not on every read: a hit never
        // pays for the copy.
        .call(Request::from_parts(
            HttpRules::origin_request(&pending.parts),
            body,
        ))
        .await?;
    let (mut res_parts, res_body) = res.into_parts();
    let resource_tags = rules.take_response_tags(&mut res_parts.headers);
    let storability = rules.storability(&res_parts, per_user, grpc);
    if storability == Storability::Pass {
        let res = Response::from_parts(res_parts, CacheBody::stream(res_body));
        return Ok(Loaded::Pass(head_only(res, head)));
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
    let tags = || {
        let mut tags = rules.read_tags(&pending.parts);
        tags.extend(resource_tags);
        tags
    };
    Ok(outcome(
        stored,
        storability,
        tags,
        grpc_failed,
        shareable,
        head,
    ))
}

/// What becomes of a whole response a read's load got: stored (with
/// `tags`), handed to this caller only (a gRPC call whose trailers tell a
/// failure), or a failure, shared with the callers that waited for it
/// when `shareable`.
fn outcome<B: Body>(
    stored: StoredResponse,
    storability: Storability,
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
            Loaded::Store(fill)
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
