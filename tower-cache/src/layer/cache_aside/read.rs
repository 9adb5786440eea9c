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
use tower_service::Service;

use super::CacheAsideLayer;
use super::load::HttpLoad;
use super::service::error_response;
use crate::engine::{Checked, Verdict};
use crate::http::{CacheBody, CacheStatus, Fwd, HttpRules, Report, StoredResponse, Wants, mark};
use crate::store::Store;
use crate::{Entry, Fetched, LoadError, clock};

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
    /// `If-None-Match` or `If-Modified-Since`.
    pub conditional: bool,
    pub grpc: bool,
}

/// The request head, shared between the read and its loader, and the
/// service and body, which the loader takes when it runs. Whatever the
/// loader did not take stays here for the read to use.
pub(super) struct Pending<S, B> {
    pub(super) parts: Parts,
    pub(super) unsent: Mutex<Option<(S, B)>>,
    /// Set by this read's own load when it went forward: whether it
    /// revalidated a stored response, and the status the origin answered.
    pub(super) forwarded: Mutex<Option<(bool, u16)>>,
    /// Set by this read's own load when its answer streams to this caller
    /// and will be stored once read whole, its length known within the
    /// limit.
    pub(super) streamed: std::sync::atomic::AtomicBool,
}

impl<S, B> Pending<S, B> {
    pub(super) fn take(&self) -> Option<(S, B)> {
        self.unsent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    pub(super) fn set_forwarded(&self, revalidated: bool, status: StatusCode) {
        *self
            .forwarded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((revalidated, status.as_u16()));
    }

    fn forwarded(&self) -> Option<(bool, u16)> {
        *self
            .forwarded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    /// The directives refused a stored entry.
    refused: bool,
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
                self.refused |= verdict == Verdict::Refresh;
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

/// How a read was answered, for `Cache-Status`.
struct How {
    /// This read's own load went forward: whether it revalidated, and the
    /// origin's status. `None`: it did not (a hit, or it waited for
    /// another's load).
    forwarded: Option<(bool, u16)>,
    /// The client's directives asked for the origin.
    requested: bool,
    /// Entries of the URI were of other variants.
    vary_miss: bool,
}

impl How {
    /// The report of a read that went forward (by its own load, or by
    /// waiting for another's: collapsed), its answer `stored` or not.
    fn forwarded(&self, stored: bool) -> Report {
        match self.forwarded {
            Some((revalidated, status)) => Report {
                fwd: Some(if self.requested {
                    Fwd::Request
                } else if revalidated {
                    Fwd::Stale
                } else if self.vary_miss {
                    Fwd::VaryMiss
                } else {
                    Fwd::UriMiss
                }),
                fwd_status: Some(status),
                stored,
                ..Report::default()
            },
            None => Report {
                collapsed: true,
                ..Report::forwarded(Fwd::UriMiss)
            },
        }
    }

    /// The report of an answer made from an entry `status` with `ttl`
    /// seconds of freshness left.
    fn answered(&self, status: CacheStatus, ttl: i64) -> Report {
        let ttl = Some(ttl);
        match status {
            // Served stale after this read's own reload failed.
            CacheStatus::Stale if self.forwarded.is_some() => Report {
                ttl,
                ..self.forwarded(false)
            },
            CacheStatus::Hit | CacheStatus::Stale => Report {
                hit: true,
                ttl,
                ..Report::default()
            },
            _ => Report {
                ttl,
                ..self.forwarded(true)
            },
        }
    }
}

/// The entry's remaining freshness at `now`, in seconds, negative when
/// stale (RFC 9211's `ttl`).
pub(super) fn ttl_secs(entry: &Entry, now: u64) -> i64 {
    let secs = |ms: u64| i64::try_from(ms / 1_000).unwrap_or(i64::MAX);
    if entry.fresh_until() >= now {
        secs(entry.fresh_until() - now)
    } else {
        -secs(now - entry.fresh_until())
    }
}

/// Whether `a` and `b` are the same bytes of the same buffer.
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

impl Read {
    /// Answers the read. The hit path awaits one future, the store's
    /// read, in place; everything else is a future of its own.
    pub(super) async fn run<S, ReqB, ResB, St, G>(
        self,
        layer: Arc<CacheAsideLayer<St, G>>,
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
            // Boxed, as the rest: the hit's future holds only the read.
            return Ok(Box::pin(from_store_only(
                &layer,
                &self.key,
                &parts.headers,
                self.head,
            ))
            .await);
        }
        // The entry is read before any state for a load is built: a fresh
        // one of the request's variant (an L2 hit, say) is answered at
        // once; any other goes on to the engine, which decides the rest.
        let cached = if self.reload {
            None
        } else {
            let cached = layer.cache.read_entry(&self.key, &layer.profile).await;
            if self.wants.is_none()
                && let Some(entry) = &cached
                && let Some(res) = answer_hit(&layer, &self, entry, &parts.headers)
            {
                return Ok(res);
            }
            cached
        };
        // Boxed: the hit's future, allocated per read, holds only the
        // request and the store's read.
        Box::pin(self.decide_rest(layer, inner, parts, body, cached)).await
    }

    /// The read after its entry was read (`cached`; not read for a
    /// reload) and found no hit: the existence filter, the engine's
    /// verdict, a load.
    async fn decide_rest<S, ReqB, ResB, St, G>(
        mut self,
        layer: Arc<CacheAsideLayer<St, G>>,
        inner: S,
        parts: Parts,
        body: ReqB,
        cached: Option<Entry>,
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
        // No entry: the existence filter may rule the key out.
        if cached.is_none()
            && let Some(res) = layer.absent_answer(&parts, self.head).await
        {
            return Ok(res);
        }
        let pending = Arc::new(Pending {
            parts,
            unsent: Mutex::new(Some((inner, body))),
            forwarded: Mutex::new(None),
            streamed: std::sync::atomic::AtomicBool::new(false),
        });
        let mut found = Found {
            decoded: None,
            other_variant: None,
            wants: self.wants.take(),
            refused: false,
        };
        let mut vary_miss = false;
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
            match cache
                .fetch_found(&self.key, profile, cached, check, load)
                .await
            {
                Checked::Done(fetched) => fetched,
                Checked::Skipped(load) => {
                    // Another variant holds the key: ours has a key of its
                    // own.
                    vary_miss = true;
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
        let rules = &layer.rules;
        let how = How {
            forwarded: pending.forwarded(),
            requested: self.reload || found.refused,
            vary_miss,
        };
        let streamed = pending.streamed.load(std::sync::atomic::Ordering::Relaxed);
        let (entry, status) = match fetched {
            Ok(Fetched::Hit(entry)) => (entry, CacheStatus::Hit),
            Ok(Fetched::Stale(entry)) => (entry, CacheStatus::Stale),
            Ok(Fetched::Miss(entry)) => (entry, CacheStatus::Miss),
            Ok(Fetched::Passed(res)) => {
                let mut res = mark(res, CacheStatus::Miss);
                // A streamed miss is stored before its body ends.
                rules.report(&mut res, &how.forwarded(streamed));
                return Ok(res);
            }
            Err(error) => return self.failed(error, headers, rules),
        };
        // The stored response of the entry, decoded once.
        let Some(stored) = found.stored(&entry) else {
            let mut res = error_response(StatusCode::BAD_GATEWAY);
            rules.report(&mut res, &how.forwarded(false));
            return Ok(res);
        };
        if !stored.vary_matches(headers) {
            // The load this caller waited for answered another variant:
            // ask the origin for ours, unstored.
            return Box::pin(pass_unstored(rules, &pending)).await;
        }
        let now = clock::now_ms();
        let age = now.saturating_sub(entry.stored_at) / 1_000;
        let report = how.answered(status, ttl_secs(&entry, now));
        let mut res = stored.respond(status, age, self.head, headers);
        rules.report(&mut res, &report);
        Ok(res)
    }

    /// The response for a load that failed: this caller's own error, the
    /// shared failure of the load it waited for, a `504` for a timeout or a
    /// `502`.
    fn failed<B: Body, E>(
        &self,
        error: LoadError<E>,
        headers: &HeaderMap,
        rules: &HttpRules,
    ) -> Result<Response<CacheBody<B>>, E> {
        let (mut res, report) = match error {
            LoadError::Origin(error) => return Err(error),
            LoadError::Joined(joined) => {
                let collapsed = Report {
                    collapsed: true,
                    ..Report::forwarded(Fwd::UriMiss)
                };
                match joined
                    .payload
                    .as_ref()
                    .and_then(|p| StoredResponse::decode(p).ok())
                {
                    Some(stored) => (
                        stored.respond(CacheStatus::Miss, 0, self.head, headers),
                        collapsed,
                    ),
                    None => (
                        error_response(StatusCode::BAD_GATEWAY),
                        Report {
                            detail: Some("load-failed"),
                            ..collapsed
                        },
                    ),
                }
            }
            LoadError::Timeout => (
                error_response(StatusCode::GATEWAY_TIMEOUT),
                Report {
                    detail: Some("load-timeout"),
                    ..Report::forwarded(Fwd::UriMiss)
                },
            ),
            LoadError::Aborted => (
                error_response(StatusCode::BAD_GATEWAY),
                Report {
                    detail: Some("load-aborted"),
                    ..Report::forwarded(Fwd::UriMiss)
                },
            ),
        };
        rules.report(&mut res, &report);
        Ok(res)
    }
}

/// The answer from `entry`, just read under `key`, when it is a hit:
/// fresh, due for no refresh, decodable and of the request's variant (the
/// hit is counted). Its decoded form is the one the layer kept for the
/// same bytes, if any: a store that keeps no decoded form in process (Redis
/// alone) then costs one decoding per change of the entry, not per hit.
fn answer_hit<B: Body, St: Store, G>(
    layer: &CacheAsideLayer<St, G>,
    read: &Read,
    entry: &Entry,
    headers: &HeaderMap,
) -> Option<Response<CacheBody<B>>> {
    let now = clock::now_ms();
    if !crate::Cache::<St>::is_hit(entry, &layer.profile, now) {
        return None;
    }
    let decoded = layer.memo.decoded(&read.key, entry)?;
    if !decoded.stored.vary_matches(headers) {
        return None;
    }
    layer.profile.record_hit();
    let age = now.saturating_sub(entry.stored_at) / 1_000;
    let ttl = ttl_secs(entry, now);
    Some(decoded.hit(&layer.rules, age, ttl, read.head, read.conditional, headers))
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
        let mut res = stored.respond(status, age, head, headers);
        let report = Report {
            hit: true,
            ttl: Some(ttl_secs(&entry, now)),
            ..Report::default()
        };
        layer.rules.report(&mut res, &report);
        res
    } else {
        layer.profile.record_miss();
        let mut res = error_response(StatusCode::GATEWAY_TIMEOUT);
        let report = Report {
            detail: Some("only-if-cached"),
            ..Report::default()
        };
        layer.rules.report(&mut res, &report);
        res
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
    let Some((mut inner, body)) = pending.take() else {
        let mut res = error_response(StatusCode::BAD_GATEWAY);
        rules.report(&mut res, &Report::forwarded(Fwd::VaryMiss));
        return Ok(res);
    };
    let mut res = inner
        .call(Request::from_parts(pending.parts.clone(), body))
        .await?;
    rules.take_response_tags(res.headers_mut());
    let status = res.status().as_u16();
    let mut res = mark(res.map(CacheBody::stream), CacheStatus::Miss);
    let report = Report {
        fwd_status: Some(status),
        ..Report::forwarded(Fwd::VaryMiss)
    };
    rules.report(&mut res, &report);
    Ok(res)
}
