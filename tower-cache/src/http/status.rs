//! How the cache answered a request: [`CacheStatus`], sent in the
//! `X-Cache` response header.

use http::{HeaderName, HeaderValue, Response};

use crate::Fetched;

/// The response header telling how the cache answered.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

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
    fn mark_sets_x_cache() {
        let res = mark(Response::new(()), CacheStatus::Bypass);
        assert_eq!(res.headers()[&X_CACHE], "BYPASS");
    }
}
