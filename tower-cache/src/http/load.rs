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
    pub(crate) fn origin_request(parts: &Parts) -> Parts {
        let mut origin = parts.clone();
        if origin.method == Method::HEAD {
            origin.method = Method::GET;
        }
        for name in CLIENT_CONDITIONALS {
            origin.headers.remove(name);
        }
        origin
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
        let mut headers = res.headers;
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove(http::header::AGE);
        headers.remove(&X_CACHE);
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
            headers,
            vary,
            body,
            trailers,
        }
    }
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
