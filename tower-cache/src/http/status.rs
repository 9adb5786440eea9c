//! How the cache answered a request: [`CacheStatus`], sent in the
//! `X-Cache` response header, and the `Cache-Status` field of RFC 9211.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Response};

use super::HttpRules;
use crate::Fetched;

/// The response header telling how the cache answered.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The RFC 9211 response field telling how the cache answered.
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The name the cache gives itself in `Cache-Status` by default.
pub const DEFAULT_CACHE_STATUS_NAME: &str = "tower-cache";

/// Why a request went forward to the origin (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// The cache was configured not to handle the request.
    Bypass,
    /// The method is not one the cache answers.
    Method,
    /// No entry for the request's URI.
    UriMiss,
    /// Entries for the URI, none for the request's `Vary` headers.
    VaryMiss,
    /// The request's directives asked for a response from the origin.
    Request,
    /// The entry was stale (or refused), and was revalidated or replaced.
    Stale,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }
}

/// What `Cache-Status` says of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// Answered from the cache, without going forward.
    pub hit: bool,
    pub fwd: Option<Fwd>,
    /// The status the origin answered the forwarded request with.
    pub fwd_status: Option<u16>,
    /// The answer was stored.
    pub stored: bool,
    /// The request waited for another request's load.
    pub collapsed: bool,
    /// Remaining freshness in seconds, negative when stale.
    pub ttl: Option<i64>,
    pub detail: Option<&'static str>,
}

impl Report {
    /// A request that went forward for `fwd`.
    pub(crate) fn forwarded(fwd: Fwd) -> Report {
        Report {
            fwd: Some(fwd),
            ..Report::default()
        }
    }

    /// The field value for a cache named `name` (already an sf-token or
    /// sf-string).
    fn value(&self, name: &[u8]) -> Option<HeaderValue> {
        let mut out = BytesMut::with_capacity(name.len() + 48);
        out.put_slice(name);
        if self.hit {
            out.put_slice(b"; hit");
        }
        if let Some(fwd) = self.fwd {
            out.put_slice(b"; fwd=");
            out.put_slice(fwd.as_str().as_bytes());
        }
        if let Some(status) = self.fwd_status {
            out.put_slice(b"; fwd-status=");
            out.put_slice(itoa::Buffer::new().format(status).as_bytes());
        }
        if self.stored {
            out.put_slice(b"; stored");
        }
        if self.collapsed {
            out.put_slice(b"; collapsed");
        }
        if let Some(ttl) = self.ttl {
            out.put_slice(b"; ttl=");
            out.put_slice(itoa::Buffer::new().format(ttl).as_bytes());
        }
        if let Some(detail) = self.detail {
            out.put_slice(b"; detail=");
            out.put_slice(detail.as_bytes());
        }
        HeaderValue::from_maybe_shared(out.freeze()).ok()
    }
}

/// `name` as the cache's name in `Cache-Status`: as it is when it is an
/// sf-token, else as an sf-string (quoted, `"` and `\` escaped, other
/// characters outside visible ASCII replaced by `?`).
pub(crate) fn cache_status_name(name: &str) -> Bytes {
    let token = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
    if token {
        return Bytes::copy_from_slice(name.as_bytes());
    }
    let mut out = BytesMut::with_capacity(name.len() + 2);
    out.put_u8(b'"');
    for b in name.bytes() {
        match b {
            b'"' | b'\\' => {
                out.put_u8(b'\\');
                out.put_u8(b);
            }
            0x20..=0x7e => out.put_u8(b),
            _ => out.put_u8(b'?'),
        }
    }
    out.put_u8(b'"');
    out.freeze()
}

impl HttpRules {
    /// Writes how the cache answered into `res`: `Cache-Status` when the
    /// route sends it, and `X-Cache` (already set by [`mark`]) removed
    /// when the route does not send it.
    pub(crate) fn report<B>(&self, res: &mut Response<B>, report: &Report) {
        if !self.x_cache {
            res.headers_mut().remove(&X_CACHE);
        }
        if let Some(name) = &self.cache_status
            && let Some(value) = report.value(name)
        {
            res.headers_mut().insert(CACHE_STATUS.clone(), value);
        }
    }
}

/// How the cache answered a read: sent as `X-Cache` by the HTTP layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh entry.
    Hit,
    /// Loaded from the origin.
    Miss,
    /// A stale entry (stale-while-revalidate or stale-if-error).
    Stale,
    /// The cache was not used (private request, `no-store`).
    Bypass,
}

impl CacheStatus {
    /// `HIT`, `MISS`, `STALE` or `BYPASS`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl<T> From<&Fetched<T>> for CacheStatus {
    /// How a fetch was answered: a value loaded and not stored is a miss.
    fn from(fetched: &Fetched<T>) -> Self {
        match fetched {
            Fetched::Hit(_) => CacheStatus::Hit,
            Fetched::Stale(_) => CacheStatus::Stale,
            Fetched::Miss(_) | Fetched::Passed(_) => CacheStatus::Miss,
        }
    }
}

/// Sets `X-Cache` on a response.
pub(crate) fn mark<B>(mut res: Response<B>, status: CacheStatus) -> Response<B> {
    res.headers_mut()
        .insert(X_CACHE.clone(), status.header_value());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_tells_its_status() {
        let entry = || crate::Entry::new("v");
        assert_eq!(
            CacheStatus::from(&Fetched::<()>::Hit(entry())),
            CacheStatus::Hit
        );
        assert_eq!(
            CacheStatus::from(&Fetched::<()>::Stale(entry())),
            CacheStatus::Stale
        );
        assert_eq!(
            CacheStatus::from(&Fetched::<()>::Miss(entry())),
            CacheStatus::Miss
        );
        assert_eq!(CacheStatus::from(&Fetched::Passed(())), CacheStatus::Miss);
    }

    #[test]
    fn cache_status_reads_as_rfc_9211_writes_it() {
        let name = cache_status_name("tower-cache");
        let hit = Report {
            hit: true,
            ttl: Some(42),
            ..Report::default()
        };
        assert_eq!(hit.value(&name).unwrap(), "tower-cache; hit; ttl=42");
        let revalidated = Report {
            fwd: Some(Fwd::Stale),
            fwd_status: Some(304),
            stored: true,
            ttl: Some(-3),
            ..Report::default()
        };
        assert_eq!(
            revalidated.value(&name).unwrap(),
            "tower-cache; fwd=stale; fwd-status=304; stored; ttl=-3"
        );
        let collapsed = Report {
            collapsed: true,
            ..Report::forwarded(Fwd::UriMiss)
        };
        assert_eq!(
            collapsed.value(&name).unwrap(),
            "tower-cache; fwd=uri-miss; collapsed"
        );
        assert_eq!(
            &cache_status_name("edge 1 \"a\"")[..],
            b"\"edge 1 \\\"a\\\"\""
        );
        assert_eq!(&cache_status_name("Edge-1")[..], b"Edge-1");
    }

    #[test]
    fn mark_sets_x_cache() {
        let res = mark(Response::new(()), CacheStatus::Bypass);
        assert_eq!(res.headers()[&X_CACHE], "BYPASS");
    }
}
