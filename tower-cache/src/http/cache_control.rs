//! The `Cache-Control` directives the cache acts on (RFC 9111 §5.2, RFC
//! 5861), and the targeted fields of RFC 9213 (`CDN-Cache-Control`).

use std::time::Duration;

use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName};

/// The largest delta-seconds kept: RFC 9111 §1.2.2 has a cache treat a
/// larger value as 2^31.
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// Directives read from `Cache-Control` (and `Pragma: no-cache`), or from
/// a targeted field. Directive names are case-insensitive; the first
/// occurrence of a directive with an argument counts (RFC 9111 §4.2.1);
/// arguments may be quoted, and a quoted argument may hold commas.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per directive, as RFC 9111 names them"
)]
pub(crate) struct CacheControl {
    pub no_store: bool,
    /// `no-cache`, qualified with field names or not: a qualified one is
    /// taken as unqualified (RFC 9111 §5.2.2.4 allows it).
    pub no_cache: bool,
    /// `private`, qualified or not, likewise.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// `must-understand`: store only a status the cache understands, and
    /// then ignore `no-store` (RFC 9111 §5.2.2.3).
    pub must_understand: bool,
    /// Request directive: answer from the cache or with 504.
    pub only_if_cached: bool,
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
    /// Request directive: `Duration::MAX` for a bare `max-stale` (any
    /// staleness).
    pub max_stale: Option<Duration>,
    /// Request directive.
    pub min_fresh: Option<Duration>,
    /// RFC 5861, from the origin.
    pub stale_while_revalidate: Option<Duration>,
    /// RFC 5861, from the origin or the client.
    pub stale_if_error: Option<Duration>,
    /// A freshness directive (`max-age`, `s-maxage`) had an argument that
    /// is not delta-seconds: RFC 9111 §4.2.1 has the response taken as
    /// stale.
    pub invalid_freshness: bool,
}

impl CacheControl {
    /// The directives of every `Cache-Control` field of `headers`, with
    /// `Pragma: no-cache` read as `no-cache` where there is no
    /// `Cache-Control` (RFC 9111 §5.4).
    pub(crate) fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        let mut any = false;
        for value in headers.get_all(CACHE_CONTROL) {
            any = true;
            if let Ok(value) = value.to_str() {
                cc.read(value);
            }
        }
        if !any
            && headers
                .get_all(PRAGMA)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            cc.no_cache = true;
        }
        cc
    }

    /// The directives of the first of `fields` (targeted fields, RFC 9213,
    /// in order of precedence) that `headers` holds as a valid dictionary;
    /// `None` when none does, so that `Cache-Control` applies.
    pub(crate) fn parse_targeted(headers: &HeaderMap, fields: &[HeaderName]) -> Option<Self> {
        fields.iter().find_map(|name| {
            let mut cc = CacheControl::default();
            let mut any = false;
            for value in headers.get_all(name) {
                let value = value.to_str().ok()?;
                if !is_dictionary(value) {
                    return None;
                }
                cc.read(value);
                any = true;
            }
            any.then_some(cc)
        })
    }

    fn read(&mut self, value: &str) {
        for (name, arg) in directives(value) {
            let seconds = || arg.and_then(delta_seconds);
            let first = |slot: &mut Option<Duration>, invalid: &mut bool| {
                if slot.is_none() {
                    *slot = seconds();
                    *invalid |= slot.is_none();
                }
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => self.no_store = true,
                "no-cache" => self.no_cache = true,
                "private" => self.private = true,
                "public" => self.public = true,
                "must-revalidate" => self.must_revalidate = true,
                "proxy-revalidate" => self.proxy_revalidate = true,
                "must-understand" => self.must_understand = true,
                "only-if-cached" => self.only_if_cached = true,
                "max-age" => first(&mut self.max_age, &mut self.invalid_freshness),
                "s-maxage" => first(&mut self.s_maxage, &mut self.invalid_freshness),
                // A bare `max-stale`, or one whose argument does not parse,
                // accepts any staleness.
                "max-stale" if self.max_stale.is_none() => {
                    self.max_stale = Some(seconds().unwrap_or(Duration::MAX));
                }
                "min-fresh" if self.min_fresh.is_none() => self.min_fresh = seconds(),
                "stale-while-revalidate" if self.stale_while_revalidate.is_none() => {
                    self.stale_while_revalidate = seconds();
                }
                "stale-if-error" if self.stale_if_error.is_none() => {
                    self.stale_if_error = seconds();
                }
                _ => {}
            }
        }
    }

    /// The freshness lifetime a shared cache uses: `s-maxage`, else
    /// `max-age`.
    pub(crate) fn shared_max_age(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age)
    }

    /// Whether a stale response may never be served without revalidation
    /// by a shared cache: `must-revalidate`, `proxy-revalidate`, or
    /// `s-maxage` (which implies `proxy-revalidate`, RFC 9111 §5.2.2.10),
    /// or `no-cache`.
    pub(crate) fn shared_no_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// The directives of one field value: `(name, argument)`, the argument
/// unquoted. Commas inside a quoted argument do not split.
fn directives(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return None;
            }
            let end = rest.find([',', '=']).unwrap_or(rest.len());
            let name = rest[..end].trim();
            rest = &rest[end..];
            let arg = if let Some(after) = rest.strip_prefix('=') {
                let after = after.trim_start();
                if let Some(quoted) = after.strip_prefix('"') {
                    let close = closing_quote(quoted);
                    let arg = &quoted[..close];
                    rest = quoted.get(close + 1..).unwrap_or("");
                    // Skip what follows the closing quote up to the comma.
                    let comma = rest.find(',').unwrap_or(rest.len());
                    rest = &rest[comma..];
                    Some(arg)
                } else {
                    let comma = after.find(',').unwrap_or(after.len());
                    rest = &after[comma..];
                    Some(after[..comma].trim())
                }
            } else {
                None
            };
            if !name.is_empty() {
                return Some((name, arg));
            }
        }
    })
}

/// Where the quoted string that `quoted` starts (after its opening quote)
/// ends: the index of its closing quote, or the end.
fn closing_quote(quoted: &str) -> usize {
    let bytes = quoted.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    quoted.len()
}

/// Delta-seconds (RFC 9111 §1.2.2): digits only, a value too large for the
/// cache read as 2^31.
fn delta_seconds(arg: &str) -> Option<Duration> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = arg.parse::<u64>().unwrap_or(MAX_DELTA_SECONDS);
    Some(Duration::from_secs(secs.min(MAX_DELTA_SECONDS)))
}

/// Whether `value` parses as an RFC 8941 dictionary of the shape targeted
/// cache fields use: keys (lowercase token), each bare or with an integer,
/// a token or a string, and no parameters a cache acts on.
fn is_dictionary(value: &str) -> bool {
    let key = |k: &str| {
        let mut bytes = k.bytes();
        bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
            && bytes.all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'.' | b'*')
            })
    };
    let item = |v: &str| {
        let v = v.trim();
        let integer =
            |d: &str| !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit());
        integer(v.strip_prefix('-').unwrap_or(v))
            || (v.len() >= 2 && v.starts_with('"') && v.ends_with('"'))
            || v.starts_with('?')
            || v.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
    };
    let mut members = 0;
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        let (k, v) = match member.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (member, None),
        };
        // Parameters (`;`) are allowed and ignored.
        let k = k.split(';').next().unwrap_or("");
        if !key(k) || v.is_some_and(|v| !item(v.split(';').next().unwrap_or(""))) {
            return false;
        }
        members += 1;
    }
    members > 0
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

    #[test]
    fn reads_every_rfc_9111_and_5861_directive() {
        let c =
            cc("must-revalidate, proxy-revalidate, stale-while-revalidate=30, stale-if-error=600");
        assert!(c.must_revalidate && c.proxy_revalidate);
        assert_eq!(c.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert_eq!(c.stale_if_error, Some(Duration::from_secs(600)));
        assert_eq!(cc("max-stale").max_stale, Some(Duration::MAX));
        assert_eq!(cc("max-stale=5").max_stale, Some(Duration::from_secs(5)));
        assert_eq!(cc("min-fresh=7").min_fresh, Some(Duration::from_secs(7)));
        assert!(cc("max-age=junk").invalid_freshness);
        assert!(!cc("max-age=1").invalid_freshness);
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(CacheControl::parse(&h).no_cache);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!CacheControl::parse(&h).no_cache);
    }

    #[test]
    fn quoted_arguments_keep_their_commas() {
        let c = cc("no-cache=\"set-cookie, x-a\", max-age=60, private=\"a,b\"");
        assert!(c.no_cache && c.private);
        assert_eq!(c.max_age, Some(Duration::from_secs(60)));
    }

    #[test]
    fn the_first_occurrence_counts_and_huge_values_saturate() {
        assert_eq!(
            cc("max-age=10, max-age=99").max_age,
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            cc("max-age=99999999999999999999999").max_age,
            Some(Duration::from_secs(MAX_DELTA_SECONDS))
        );
        assert_eq!(cc("max-age=-1").max_age, None);
    }

    #[test]
    fn s_maxage_and_no_cache_forbid_stale_in_a_shared_cache() {
        assert!(cc("s-maxage=5").shared_no_stale());
        assert!(cc("no-cache").shared_no_stale());
        assert!(cc("must-revalidate").shared_no_stale());
        assert!(cc("proxy-revalidate").shared_no_stale());
        assert!(!cc("max-age=5, stale-while-revalidate=5").shared_no_stale());
    }

    #[test]
    fn a_targeted_field_replaces_cache_control_when_valid() {
        let cdn = HeaderName::from_static("cdn-cache-control");
        let own = HeaderName::from_static("edge-cache-control");
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(
            CacheControl::parse_targeted(&h, std::slice::from_ref(&cdn)),
            None
        );
        h.insert(&cdn, HeaderValue::from_static("max-age=600"));
        let t = CacheControl::parse_targeted(&h, &[own.clone(), cdn.clone()]).unwrap();
        assert_eq!(t.max_age, Some(Duration::from_secs(600)));
        assert!(!t.no_store);
        h.insert(&own, HeaderValue::from_static("no-store"));
        assert!(
            CacheControl::parse_targeted(&h, &[own.clone(), cdn.clone()])
                .unwrap()
                .no_store
        );
        // Not a dictionary: ignored, the next field applies.
        h.insert(&own, HeaderValue::from_static("Max-Age=5; =="));
        let t = CacheControl::parse_targeted(&h, &[own, cdn]).unwrap();
        assert_eq!(t.max_age, Some(Duration::from_secs(600)));
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
                "max-age=[0-9a-z]{0,24}",
                "max-age=\"[0-9a-z, ]{0,12}\"",
                "s-maxage=[0-9]{0,24}",
                "[ -!#-+\\--~]{0,12}",
            ]
        }

        proptest! {
            #[test]
            fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                    h.append(CACHE_CONTROL, v.clone());
                    h.append(PRAGMA, v.clone());
                    h.append("cdn-cache-control", v);
                }
                let _ = CacheControl::parse(&h);
                let _ = CacheControl::parse_targeted(&h, &[HeaderName::from_static("cdn-cache-control")]);
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
