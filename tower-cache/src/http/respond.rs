//! Answers from the cache: a stored response turned back into the response
//! a client gets, a 304 when its `If-None-Match` matches, with `Age` and
//! `X-Cache`.

use http::header::{ETAG, IF_NONE_MATCH, VARY};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::freshness::date;
use super::load::{kept_headers, strip_weak};
use super::{CacheBody, CacheStatus, StoredResponse, mark};

impl StoredResponse {
    /// The response to send for this entry: the stored one, its headers
    /// only for `HEAD`, or 304 when the request's `If-None-Match` matches.
    pub(crate) fn respond<B: http_body::Body>(
        self,
        status: CacheStatus,
        age_secs: u64,
        head: bool,
        request_headers: &HeaderMap,
    ) -> Response<CacheBody<B>> {
        // RFC 9110 §13.2.2: If-Modified-Since only without If-None-Match.
        let not_modified = match request_headers.get(IF_NONE_MATCH) {
            Some(inm) => etag_matches(inm, &self.etag),
            None => self.not_modified_since(request_headers),
        };
        let body_len = self.body.len();
        let has_trailers = self.trailers.is_some();
        let (code, body) = if not_modified {
            (StatusCode::NOT_MODIFIED, CacheBody::empty())
        } else if head {
            (self.status, CacheBody::empty())
        } else {
            (self.status, CacheBody::cached(self.body, self.trailers))
        };
        let mut res = Response::new(body);
        *res.status_mut() = code;
        let headers = res.headers_mut();
        if not_modified {
            for name in [
                ETAG,
                http::header::CACHE_CONTROL,
                VARY,
                http::header::EXPIRES,
            ] {
                for v in self.headers.get_all(&name) {
                    headers.append(name.clone(), v.clone());
                }
            }
        } else {
            *headers = self.headers;
            // A HEAD carries what a GET would, not the empty body's
            // length. A body with trailers goes chunked, without one.
            if code != StatusCode::NO_CONTENT && !code.is_informational() && (head || !has_trailers)
            {
                headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body_len));
            }
        }
        headers.insert(http::header::AGE, HeaderValue::from(age_secs));
        mark(res, status)
    }
}

impl StoredResponse {
    /// Whether the request's `If-Modified-Since` is no earlier than this
    /// response's `Last-Modified` (a 200 only, RFC 9110 §13.1.3).
    fn not_modified_since(&self, request_headers: &HeaderMap) -> bool {
        if self.status != StatusCode::OK {
            return false;
        }
        let Some(since) = date(request_headers, &http::header::IF_MODIFIED_SINCE) else {
            return false;
        };
        date(&self.headers, &http::header::LAST_MODIFIED).is_some_and(|modified| modified <= since)
    }
}

/// Whether the answer to a miss whose body streams to its client can be
/// decided from the origin's head: always, but when the request carries
/// `If-None-Match` and the origin sent no `ETag` (the one the cache
/// computes from the body, which the request may name, is not known until
/// the body is read).
pub(crate) fn decidable_from_head(origin_headers: &HeaderMap, request_headers: &HeaderMap) -> bool {
    !request_headers.contains_key(IF_NONE_MATCH) || origin_headers.contains_key(ETAG)
}

/// The response for a miss whose body streams to the client as it is
/// loaded (`body`), from the origin's status and headers: those the cache keeps
/// (no `ETag` is computed: the body is not known yet), `Age` and
/// `X-Cache: MISS`; or a 304 when the request's `If-None-Match` (else
/// `If-Modified-Since`) matches, without the body, which goes on being
/// read for the cache all the same. For a request that
/// [`decidable_from_head`] accepts.
pub(crate) fn respond_streamed<B: http_body::Body>(
    status: StatusCode,
    origin_headers: HeaderMap,
    body: CacheBody<B>,
    age_secs: u64,
    request_headers: &HeaderMap,
) -> Response<CacheBody<B>> {
    let headers = kept_headers(origin_headers);
    let not_modified = match request_headers.get(IF_NONE_MATCH) {
        Some(inm) => headers
            .get(ETAG)
            .is_some_and(|etag| etag_matches(inm, etag)),
        None => {
            status == StatusCode::OK
                && date(request_headers, &http::header::IF_MODIFIED_SINCE).is_some_and(|since| {
                    date(&headers, &http::header::LAST_MODIFIED)
                        .is_some_and(|modified| modified <= since)
                })
        }
    };
    let mut out = if not_modified {
        let mut out = Response::new(CacheBody::empty());
        *out.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            ETAG,
            http::header::CACHE_CONTROL,
            VARY,
            http::header::EXPIRES,
        ] {
            for v in headers.get_all(&name) {
                out.headers_mut().append(name.clone(), v.clone());
            }
        }
        out
    } else {
        let mut out = Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        out
    };
    out.headers_mut()
        .insert(http::header::AGE, HeaderValue::from(age_secs));
    mark(out, CacheStatus::Miss)
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison).
fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let etag = strip_weak(etag.as_bytes());
    if_none_match
        .as_bytes()
        .split(|b| *b == b',')
        .any(|candidate| candidate.trim_ascii() == b"*" || strip_weak(candidate) == etag)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::http::HttpRules;
    use crate::test_support::response_parts as res;

    #[test]
    fn if_none_match_gets_304() {
        let r = HttpRules::default();
        let stored = r.to_stored(
            res(200, &[]),
            Bytes::from_static(b"body"),
            None,
            &HeaderMap::new(),
        );
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, stored.etag.clone());
        let out: Response<CacheBody<http_body_util::Empty<Bytes>>> =
            stored.clone().respond(CacheStatus::Hit, 3, false, &h);
        assert_eq!(out.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(out.headers()[ETAG], stored.etag);
        assert_eq!(out.headers()["age"], "3");
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        let out: Response<CacheBody<http_body_util::Empty<Bytes>>> =
            stored.respond(CacheStatus::Hit, 3, false, &h);
        assert_eq!(out.status(), StatusCode::OK);
        assert_eq!(out.headers()["x-cache"], "HIT");
    }
}
