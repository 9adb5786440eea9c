//! The `Cache-Control` directives the cache acts on.

use std::time::Duration;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA};

/// Directives read from `Cache-Control` (and `Pragma: no-cache`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per directive, as RFC 9111 names them"
)]
pub(crate) struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    /// Request directive: answer from the cache or with 504.
    pub only_if_cached: bool,
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
}

impl CacheControl {
    pub(crate) fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let directive = directive.trim();
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive, None),
                };
                let seconds = || {
                    arg.and_then(|a| a.parse::<u64>().ok())
                        .map(Duration::from_secs)
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    "max-age" => cc.max_age = seconds(),
                    "s-maxage" => cc.s_maxage = seconds(),
                    _ => {}
                }
            }
        }
        if headers
            .get_all(PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            cc.no_cache = true;
        }
        cc
    }

    /// The freshness lifetime a shared cache uses: `s-maxage`, else
    /// `max-age`.
    pub(crate) fn shared_max_age(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(v: &'static str) -> CacheControl {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static(v));
        CacheControl::parse(&h)
    }

    #[test]
    fn parses_the_directives_that_matter() {
        let c = cc("public, max-age=60, s-maxage=\"30\"");
        assert_eq!(c.shared_max_age(), Some(Duration::from_secs(30)));
        assert!(!c.private && !c.no_store && !c.no_cache);
        assert!(cc("Private").private);
        assert!(cc("max-age=5, Only-If-Cached").only_if_cached);
        assert!(cc("no-store").no_store);
        assert!(cc("no-cache, max-age=0").no_cache);
        assert_eq!(cc("max-age=0").max_age, Some(Duration::ZERO));
        assert_eq!(cc("max-age=junk").max_age, None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn directive() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("no-store".to_owned()),
                Just("No-Cache".to_owned()),
                Just("private".to_owned()),
                Just("only-if-cached".to_owned()),
                "max-age=[0-9a-z\"]{0,24}",
                "s-maxage=[0-9]{0,24}",
                "[ -~]{0,12}",
            ]
        }

        proptest! {
            #[test]
            fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                    h.append(CACHE_CONTROL, v.clone());
                    h.append(PRAGMA, v);
                }
                let _ = CacheControl::parse(&h);
            }

            #[test]
            fn a_directive_is_seen_whatever_surrounds_it(
                before in proptest::collection::vec(directive(), 0..4),
                after in proptest::collection::vec(directive(), 0..4),
            ) {
                let mut all = before.clone();
                all.push("no-store".to_owned());
                all.extend(after);
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&all.join(", ")) {
                    h.insert(CACHE_CONTROL, v);
                    prop_assert!(CacheControl::parse(&h).no_store);
                }
            }
        }
    }
}
