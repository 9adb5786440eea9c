//! The existence filter in front of a route's misses: a read whose key the
//! filter never saw is answered "does not exist" without the origin, and a
//! successful write of a key inserts it.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body::Body;

use crate::Profile;
use crate::filter::ExistenceFilter;
use crate::http::{CacheBody, CacheStatus, HttpRules, Report, mark};

/// What names the key of a request in the filter (`"42"` for
/// `/products/42`); `None` leaves the request to the cache alone.
pub(super) type FilterKeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// A route's filter and how it names a request's key.
pub(super) struct Absent {
    pub(super) filter: ExistenceFilter,
    pub(super) key: Box<FilterKeyFn>,
}

/// The answer for a key that does not exist: by default `404` with an
/// empty body.
#[derive(Clone)]
pub(super) struct AbsentAnswer {
    pub(super) status: StatusCode,
    pub(super) content_type: Option<HeaderValue>,
    pub(super) body: Bytes,
}

impl Default for AbsentAnswer {
    fn default() -> Self {
        AbsentAnswer {
            status: StatusCode::NOT_FOUND,
            content_type: None,
            body: Bytes::new(),
        }
    }
}

impl Absent {
    /// Whether a read of `parts` is answered "does not exist": it names a
    /// key, and the filter says no instance ever inserted it.
    pub(super) async fn rules_out(&self, parts: &Parts) -> bool {
        match (self.key)(parts) {
            Some(key) => !self.filter.may_contain(&key).await,
            None => false,
        }
    }

    /// The key a write of `parts` creates or replaces, to insert once it
    /// succeeds: `PUT`, `POST` and `PATCH` that name one.
    pub(super) fn written(&self, parts: &Parts) -> Option<String> {
        matches!(parts.method, Method::PUT | Method::POST | Method::PATCH)
            .then(|| (self.key)(parts))
            .flatten()
    }

    /// Inserts `key`, written with success; a filter that could not share
    /// it is logged, the write stands.
    pub(super) async fn insert(&self, key: &str) {
        if let Err(error) = self.filter.insert(key).await {
            tracing::warn!(key, %error, "written key not shared with the other instances yet");
        }
    }
}

impl AbsentAnswer {
    /// The answer to a read the filter ruled out, counted, marked
    /// `X-Cache: MISS` and `Cache-Status: …; detail=absent`.
    pub(super) fn respond<B: Body>(
        &self,
        rules: &HttpRules,
        profile: &Profile,
        head: bool,
    ) -> Response<CacheBody<B>> {
        profile.record_filtered();
        let body = if head {
            Bytes::new()
        } else {
            self.body.clone()
        };
        let mut res = Response::new(CacheBody::cached(body, None));
        *res.status_mut() = self.status;
        if let Some(ct) = &self.content_type {
            res.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.clone());
        }
        let mut res = mark(res, CacheStatus::Miss);
        let report = Report {
            detail: Some("absent"),
            ..Report::default()
        };
        rules.report(&mut res, &report);
        res
    }
}

impl<St, G> super::CacheAsideLayer<St, G> {
    /// The answer to a read of `parts` that found no entry, when the
    /// layer's existence filter rules its key out; `None` without a filter
    /// or when the key may exist.
    pub(super) async fn absent_answer<B: Body>(
        &self,
        parts: &Parts,
        head: bool,
    ) -> Option<Response<CacheBody<B>>> {
        let absent = self.absent.as_ref()?;
        if !absent.rules_out(parts).await {
            return None;
        }
        Some(self.absent_answer.respond(&self.rules, &self.profile, head))
    }
}
