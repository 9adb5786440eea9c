//! A route's HTTP caching rules: what a request means for the cache and
//! whether a response may be stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, ETAG, IF_NONE_MATCH, SET_COOKIE, VARY};
use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::key::push_hex;
use super::{CacheBody, CacheControl, CacheStatus, KeyScheme, StoredResponse, X_CACHE, mark};

/// Gives the identity a per-user entry is keyed by, or `None` to bypass.
pub(crate) type UserFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
/// Gives tags from a request.
pub(crate) type TagsFn = Arc<dyn Fn(&Parts) -> Vec<String> + Send + Sync>;
/// Says what a request is to the cache.
pub(crate) type ClassifyFn = Arc<dyn Fn(&Parts) -> RequestClass + Send + Sync>;

/// What a request is to a cache-aside route, as told by a classifier
/// given to [`CacheAsideLayer::classify`](crate::CacheAsideLayer::classify).
///
/// Whatever the class, the privacy rules still apply: a read carrying
/// credentials without a per-user key, or with `Cache-Control: no-store`,
/// bypasses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestClass {
    /// A read: answered from the cache, loaded from the service on a miss.
    /// The key is built from the request head (method, host, path, query,
    /// the headers named with `vary_on`), never from the body: classify as
    /// a read only requests whose head says what they ask for.
    Read,
    /// A write: passed through; when it succeeds (2xx), the entries of its
    /// path and the tags named with
    /// [`invalidates`](crate::CacheAsideLayer::invalidates) are deleted.
    Write,
    /// Not for the cache: passed through, marked `X-Cache: BYPASS`.
    Bypass,
}

impl RequestClass {
    /// The default classification: `GET` and `HEAD` are reads; `POST`,
    /// `PUT`, `PATCH` and `DELETE` are writes; any other method bypasses.
    pub fn of_method(method: &Method) -> RequestClass {
        match *method {
            Method::GET | Method::HEAD => RequestClass::Read,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => RequestClass::Write,
            _ => RequestClass::Bypass,
        }
    }
}

/// The response header a handler names its resource tags in, by default:
/// `Cache-Tag`.
pub static DEFAULT_TAG_HEADER: HeaderName = HeaderName::from_static("cache-tag");
/// At most this many tags are read from one response's tag header.
pub const MAX_RESPONSE_TAGS: usize = 64;
/// A tag in a response's tag header longer than this many bytes is ignored.
pub const MAX_TAG_LEN: usize = 256;

/// Default largest body stored: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The statuses stored by default.
pub(crate) const DEFAULT_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

/// The per-route rules of the HTTP layers.
#[derive(Clone)]
pub(crate) struct HttpRules {
    pub key: KeyScheme,
    pub per_user: Option<UserFn>,
    pub tags: Option<TagsFn>,
    pub invalidates: Option<TagsFn>,
    pub classify: Option<ClassifyFn>,
    pub statuses: Vec<StatusCode>,
    pub max_body_bytes: usize,
    pub respect_origin_ttl: bool,
    pub grpc_methods: Vec<String>,
    /// Where handlers name the tags of their response; `None`: nowhere.
    pub tag_header: Option<HeaderName>,
}

impl Default for HttpRules {
    fn default() -> Self {
        HttpRules {
            key: KeyScheme::default(),
            per_user: None,
            tags: None,
            invalidates: None,
            classify: None,
            statuses: DEFAULT_STATUSES
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            respect_origin_ttl: true,
            grpc_methods: Vec::new(),
            tag_header: Some(DEFAULT_TAG_HEADER.clone()),
        }
    }
}

/// What a request means for the cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A cacheable read under `key`.
    Read {
        key: String,
        head: bool,
        /// `no-cache`: skip the stored entry and load.
        reload: bool,
        /// `only-if-cached`: answer from the store or with 504, never load.
        only_if_cached: bool,
        per_user: bool,
    },
    /// A cacheable gRPC unary call: its key needs the request body.
    GrpcRead { per_user: Option<String> },
    /// A write: when it succeeds, invalidate these tags.
    Write { tags: Vec<String> },
    /// Not for the cache (private request, `no-store`): pass through,
    /// marked `X-Cache: BYPASS`.
    Bypass,
    /// A method the cache does not handle (`OPTIONS`, `CONNECT`...).
    Pass,
}

/// Whether a response may be stored.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Storability {
    Store {
        negative: bool,
        ttl: Option<Duration>,
    },
    /// A failure (5xx): not stored; stale-if-error may answer instead.
    Failed,
    Pass,
}

/// The tag every entry stored for `path` carries, and every successful
/// write to `path` invalidates: `path:{path}`, the path normalized as keys
/// are (percent-encoded unreserved characters decoded), so that
/// `/products/%31%32` and `/products/12` share a tag. Name it in
/// [`CacheAsideLayer::invalidates`](crate::CacheAsideLayer::invalidates) to
/// invalidate another path's entries.
///
/// ```
/// use tower_cache::http::path_tag;
///
/// assert_eq!(path_tag("/products/%31%32"), "path:/products/12");
/// ```
pub fn path_tag(path: &str) -> String {
    let normalized = super::key::normalize_path(path);
    let mut tag = String::with_capacity(5 + normalized.len());
    tag.push_str("path:");
    tag.push_str(&normalized);
    tag
}

impl HttpRules {
    pub(crate) fn decide(&self, parts: &Parts) -> Decision {
        let method = &parts.method;
        let grpc = *method == Method::POST
            && !self.grpc_methods.is_empty()
            && self.grpc_methods.iter().any(|m| m == parts.uri.path());
        let class = match &self.classify {
            _ if grpc => RequestClass::Read,
            Some(classify) => classify(parts),
            None => match RequestClass::of_method(method) {
                // Methods the cache has nothing to do with pass unmarked.
                RequestClass::Bypass => return Decision::Pass,
                class => class,
            },
        };
        match class {
            RequestClass::Read => {}
            RequestClass::Write => {
                let mut tags = vec![path_tag(parts.uri.path())];
                if let Some(f) = &self.invalidates {
                    tags.extend(f(parts));
                }
                return Decision::Write { tags };
            }
            RequestClass::Bypass => return Decision::Bypass,
        }
        let cc = CacheControl::parse(&parts.headers);
        if cc.no_store {
            return Decision::Bypass;
        }
        let credentials =
            parts.headers.contains_key(AUTHORIZATION) || parts.headers.contains_key(COOKIE);
        let user = match &self.per_user {
            Some(f) => match f(parts) {
                Some(user) => Some(user),
                None if credentials => return Decision::Bypass,
                None => None,
            },
            None if credentials => return Decision::Bypass,
            None => None,
        };
        if grpc {
            return Decision::GrpcRead { per_user: user };
        }
        let per_user = user.is_some();
        match self.key.key(parts, user.as_deref(), None) {
            Some(key) => Decision::Read {
                key,
                head: *method == Method::HEAD,
                reload: cc.no_cache || cc.max_age == Some(Duration::ZERO),
                only_if_cached: cc.only_if_cached,
                per_user,
            },
            None => Decision::Bypass,
        }
    }

    /// Removes the tag header from a response (it never leaves the layer)
    /// and returns the tags it named: comma-separated, trimmed, empty ones
    /// dropped, at most [`MAX_RESPONSE_TAGS`], none longer than
    /// [`MAX_TAG_LEN`].
    pub(crate) fn take_response_tags(&self, headers: &mut HeaderMap) -> Vec<String> {
        let Some(name) = &self.tag_header else {
            return Vec::new();
        };
        let http::header::Entry::Occupied(entry) = headers.entry(name) else {
            return Vec::new();
        };
        let mut tags = Vec::new();
        for value in entry.remove_entry_mult().1 {
            let Ok(value) = value.to_str() else { continue };
            for tag in value.split(',').map(str::trim) {
                if !tag.is_empty() && tag.len() <= MAX_TAG_LEN && tags.len() < MAX_RESPONSE_TAGS {
                    tags.push(tag.to_owned());
                }
            }
        }
        tags
    }

    /// The tags a stored read of `parts` carries.
    pub(crate) fn read_tags(&self, parts: &Parts) -> Vec<String> {
        let mut tags = vec![path_tag(parts.uri.path())];
        if let Some(f) = &self.tags {
            tags.extend(f(parts));
        }
        tags
    }

    pub(crate) fn storability(
        &self,
        res: &ResponseParts,
        per_user: bool,
        grpc: bool,
    ) -> Storability {
        if res.status.is_server_error() {
            return Storability::Failed;
        }
        if res.headers.contains_key(SET_COOKIE) {
            return Storability::Pass;
        }
        let cc = CacheControl::parse(&res.headers);
        if cc.no_store || cc.no_cache || (cc.private && !per_user) {
            return Storability::Pass;
        }
        if res.headers.get_all(VARY).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|n| n.trim_ascii() == b"*")
        }) {
            return Storability::Pass;
        }
        if grpc {
            let is_grpc = res
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            // A trailers-only response carries its status in the headers.
            let failed = res.headers.get("grpc-status").is_some_and(|s| s != "0");
            if res.status != StatusCode::OK || !is_grpc || failed {
                return Storability::Pass;
            }
        } else if !self.statuses.contains(&res.status) {
            return Storability::Pass;
        }
        let ttl = if self.respect_origin_ttl {
            if per_user {
                cc.max_age
            } else {
                cc.shared_max_age()
            }
        } else {
            None
        };
        if ttl == Some(Duration::ZERO) {
            return Storability::Pass;
        }
        Storability::Store {
            negative: matches!(res.status.as_u16(), 404 | 410),
            ttl,
        }
    }

    /// Whether a failed response (not stored) may be handed to the callers
    /// that waited for the load that got it: never when it sets a cookie
    /// or is marked `private` or `no-store`, since it answers another
    /// client's request.
    pub(crate) fn shareable_failure(&self, res: &ResponseParts) -> bool {
        let cc = CacheControl::parse(&res.headers);
        !(res.headers.contains_key(SET_COOKIE) || cc.private || cc.no_store)
    }

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
        let etag = match headers.get(ETAG) {
            Some(tag) => tag.clone(),
            None => {
                let mut tag = String::with_capacity(34);
                tag.push('"');
                push_hex(&mut tag, &Sha256::digest(&body)[..16]);
                tag.push('"');
                let tag = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""));
                headers.insert(ETAG, tag.clone());
                tag
            }
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

/// Whether an `If-None-Match` value matches `etag` (weak comparison).
fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let strip = |t: &[u8]| -> Vec<u8> {
        t.trim_ascii()
            .strip_prefix(b"W/")
            .unwrap_or(t.trim_ascii())
            .to_vec()
    };
    let etag = strip(etag.as_bytes());
    if_none_match
        .as_bytes()
        .split(|b| *b == b',')
        .any(|candidate| candidate.trim_ascii() == b"*" || strip(candidate) == etag)
}

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
        let not_modified = request_headers
            .get(IF_NONE_MATCH)
            .is_some_and(|inm| etag_matches(inm, &self.etag));
        let body_len = self.body.len();
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
            if head && code != StatusCode::NO_CONTENT {
                // What a GET would carry, not the empty body's length.
                headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body_len));
            }
        }
        headers.insert(http::header::AGE, HeaderValue::from(age_secs));
        mark(res, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn res(status: u16, headers: &[(&str, &str)]) -> ResponseParts {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn private_requests_bypass_unless_keyed_per_user() {
        let rules = HttpRules::default();
        let auth = req(Method::GET, "/me", &[("authorization", "Bearer user-1")]);
        let cookie = req(Method::GET, "/me", &[("cookie", "s=1")]);
        assert_eq!(rules.decide(&auth), Decision::Bypass);
        assert_eq!(rules.decide(&cookie), Decision::Bypass);

        let per_user = HttpRules {
            per_user: Some(Arc::new(|p: &Parts| {
                p.headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned)
            })),
            ..HttpRules::default()
        };
        let Decision::Read {
            key,
            per_user: true,
            ..
        } = per_user.decide(&auth)
        else {
            panic!("per-user read expected");
        };
        assert!(key.contains(" u") && !key.contains("user-1"), "{key}");
        assert_eq!(
            per_user.decide(&cookie),
            Decision::Bypass,
            "credentials without identity"
        );
    }

    #[test]
    fn request_directives() {
        let rules = HttpRules::default();
        let no_store = req(Method::GET, "/p", &[("cache-control", "no-store")]);
        assert_eq!(rules.decide(&no_store), Decision::Bypass);
        let no_cache = req(Method::GET, "/p", &[("cache-control", "no-cache")]);
        assert!(matches!(
            rules.decide(&no_cache),
            Decision::Read { reload: true, .. }
        ));
        let write = req(Method::PUT, "/products/1", &[]);
        assert_eq!(
            rules.decide(&write),
            Decision::Write {
                tags: vec!["path:/products/1".to_owned()]
            }
        );
        assert_eq!(
            rules.decide(&req(Method::OPTIONS, "/p", &[])),
            Decision::Pass
        );
    }

    #[test]
    fn what_is_stored() {
        let r = HttpRules::default();
        let store = |s| Storability::Store {
            negative: false,
            ttl: s,
        };
        assert_eq!(r.storability(&res(200, &[]), false, false), store(None));
        assert_eq!(
            r.storability(&res(404, &[]), false, false),
            Storability::Store {
                negative: true,
                ttl: None
            }
        );
        assert_eq!(
            r.storability(&res(500, &[]), false, false),
            Storability::Failed
        );
        assert_eq!(
            r.storability(&res(503, &[]), false, false),
            Storability::Failed
        );
        assert_eq!(
            r.storability(&res(302, &[]), false, false),
            Storability::Pass
        );
        assert_eq!(
            r.storability(&res(200, &[("set-cookie", "a=b")]), false, false),
            Storability::Pass
        );
        assert_eq!(
            r.storability(&res(200, &[("cache-control", "private")]), false, false),
            Storability::Pass
        );
        assert_eq!(
            r.storability(&res(200, &[("cache-control", "private")]), true, false),
            store(None)
        );
        assert_eq!(
            r.storability(&res(200, &[("cache-control", "no-store")]), true, false),
            Storability::Pass
        );
        assert_eq!(
            r.storability(&res(200, &[("vary", "*")]), false, false),
            Storability::Pass
        );
        assert_eq!(
            r.storability(&res(200, &[("cache-control", "max-age=30")]), false, false),
            store(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            r.storability(&res(200, &[("cache-control", "max-age=0")]), false, false),
            Storability::Pass
        );
    }

    #[test]
    fn response_tags_are_taken_out_of_the_response() {
        let r = HttpRules::default();
        let mut headers = HeaderMap::new();
        headers.append("cache-tag", HeaderValue::from_static("product:12, catalog"));
        headers.append("cache-tag", HeaderValue::from_static(" ,x"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            r.take_response_tags(&mut headers),
            ["product:12", "catalog", "x"]
        );
        assert!(!headers.contains_key("cache-tag"), "never leaves the layer");
        assert!(headers.contains_key("content-type"));
        let mut many = HeaderMap::new();
        let value = (0..100)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(",");
        many.insert("cache-tag", HeaderValue::from_str(&value).unwrap());
        assert_eq!(r.take_response_tags(&mut many).len(), MAX_RESPONSE_TAGS);
        let off = HttpRules {
            tag_header: None,
            ..HttpRules::default()
        };
        let mut kept = HeaderMap::new();
        kept.insert("cache-tag", HeaderValue::from_static("a"));
        assert!(off.take_response_tags(&mut kept).is_empty());
        assert!(kept.contains_key("cache-tag"));
    }

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
