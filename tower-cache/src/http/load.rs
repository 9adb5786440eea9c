//! A load from the origin: the request it sends, and the response as the
//! cache keeps it.

use bytes::Bytes;
use http::header::{ETAG, IF_NONE_MATCH, VARY};
use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};

use super::key::push_hex;
use super::{HttpRules, StoredResponse, X_CACHE};

impl HttpRules {
    /// The request sent to the origin for a cacheable read: the client's
    /// conditional and range headers are removed, so that the origin
    /// answers with the whole representation, which can be stored; a 304
    /// for the client is then computed from the cache.
    /// A `HEAD` is sent as a `GET`, so that what it loads can be stored
    /// and answer both.
    ///
    /// With `stale`, a stored response to revalidate, the request is made
    /// conditional on its validator (RFC 9111 §4.3.1): `If-None-Match`
    /// with the origin's `ETag`, else `If-Modified-Since` with its
    /// `Last-Modified`.
    pub(crate) fn origin_request(parts: &Parts, stale: Option<&StoredResponse>) -> Parts {
        let mut origin = parts.clone();
        if origin.method == Method::HEAD {
            origin.method = Method::GET;
        }
        for name in CLIENT_CONDITIONALS {
            origin.headers.remove(name);
        }
        if let Some((name, value)) = stale.and_then(StoredResponse::validator) {
            origin.headers.insert(name, value);
        }
        origin
    }

    /// The stored response `stale` updated with the headers of the `304
    /// Not Modified` that revalidated it (RFC 9111 §4.3.4, §3.2): every
    /// field of the 304 replaces the stored one of its name, but for
    /// `Content-Length` and the hop-by-hop fields; the body stays.
    /// `None` when the 304's `ETag` names another representation than the
    /// stored one.
    pub(crate) fn merge_not_modified(
        stale: StoredResponse,
        not_modified: &ResponseParts,
    ) -> Option<(ResponseParts, Bytes, Option<HeaderMap>)> {
        if let Some(etag) = not_modified.headers.get(ETAG)
            && !stale.etag_generated
            && strip_weak(etag.as_bytes()) != strip_weak(stale.etag.as_bytes())
        {
            return None;
        }
        let mut headers = stale.headers;
        if stale.etag_generated {
            // Computed again from the same body.
            headers.remove(ETAG);
        }
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in &not_modified.headers {
            if *name == http::header::CONTENT_LENGTH
                || HOP_BY_HOP.contains(&name.as_str())
                || (stale.etag_generated && *name == ETAG)
            {
                continue;
            }
            if replaced.contains(&name) {
                headers.append(name, value.clone());
            } else {
                headers.insert(name, value.clone());
                replaced.push(name);
            }
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = stale.status;
        parts.headers = headers;
        Some((parts, stale.body, stale.trailers))
    }

    /// The response as the cache keeps it, with the request header values
    /// its `Vary` names (those not already in the key).
    pub(crate) fn to_stored(
        &self,
        res: ResponseParts,
        body: Bytes,
        trailers: Option<HeaderMap>,
        request_headers: &HeaderMap,
    ) -> StoredResponse {
        let mut headers = kept_headers(res.headers);
        let generated = !headers.contains_key(ETAG);
        let etag = if let Some(tag) = headers.get(ETAG) {
            tag.clone()
        } else {
            let mut tag = String::with_capacity(34);
            tag.push('"');
            push_hex(&mut tag, &Sha256::digest(&body)[..16]);
            tag.push('"');
            let tag = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""));
            headers.insert(ETAG, tag.clone());
            tag
        };
        let mut vary = Vec::new();
        for value in headers.get_all(VARY) {
            for name in value.as_bytes().split(|b| *b == b',') {
                let Ok(name) = HeaderName::from_bytes(name.trim_ascii()) else {
                    continue;
                };
                if !self.key.headers.contains(&name) && !vary.iter().any(|(n, _)| *n == name) {
                    let value = request_headers.get(&name).cloned();
                    vary.push((name, value));
                }
            }
        }
        StoredResponse {
            status: res.status,
            etag,
            etag_generated: generated,
            headers,
            vary,
            body,
            trailers,
        }
    }
}

/// The origin's headers as the cache keeps them and answers with them:
/// without the hop-by-hop fields, `Age` (the cache sets its own) and
/// `X-Cache`.
pub(crate) fn kept_headers(mut headers: HeaderMap) -> HeaderMap {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(http::header::AGE);
    headers.remove(&X_CACHE);
    headers
}

/// An entity tag without its weak prefix (`W/`), for the weak comparison
/// of RFC 9110 §8.8.3.2.
pub(crate) fn strip_weak(tag: &[u8]) -> &[u8] {
    let tag = tag.trim_ascii();
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Request headers a cacheable load does not forward.
const CLIENT_CONDITIONALS: [HeaderName; 6] = [
    IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
    http::header::RANGE,
];

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
