//! How long an origin's response is fresh and how old it already is, as a
//! shared cache computes them (RFC 9111 §4.2), with the stale windows the
//! origin allows (RFC 5861).

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, ETAG, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use super::CacheControl;

/// The share of the time since `Last-Modified` a response without explicit
/// freshness is fresh for (RFC 9111 §4.2.2 suggests 10 %).
const HEURISTIC_FRACTION: u32 = 10;

/// What the origin's headers say of a response's freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    /// How long it is fresh from when the origin generated it
    /// (`freshness_lifetime`); zero for a response to revalidate on every
    /// use.
    pub fresh_for: Duration,
    /// How old it was when the request that loaded it was sent: its
    /// corrected initial age (RFC 9111 §4.2.3) less the time the origin
    /// took to answer, which the cache counts itself.
    pub age: Duration,
    /// Served at once while a background reload runs, after it stops being
    /// fresh; `None`: as the route's policy says.
    pub revalidate: Option<Duration>,
    /// Served when the reload fails; `None`: as the route's policy says.
    pub if_error: Option<Duration>,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`,
    /// `s-maxage`, `no-cache`).
    pub no_stale: bool,
}

/// The statuses a cache may give heuristic freshness (RFC 9110 §15.1),
/// less 206 (ranges are never stored) and 501 (5xx never are).
const HEURISTIC_STATUSES: [u16; 10] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414];

/// The statuses whose semantics this cache knows (RFC 9110 §15), for
/// `must-understand` (RFC 9111 §5.2.2.3); 5xx are never stored.
const UNDERSTOOD_STATUSES: [u16; 16] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 451,
];

/// Whether this cache knows what `status` means (`must-understand`).
pub(crate) fn understood_status(status: StatusCode) -> bool {
    UNDERSTOOD_STATUSES.contains(&status.as_u16())
}

/// Whether a response with `status` may be stored by a shared cache: with
/// explicit freshness any final status but 206 and 304 up to 499; with
/// heuristic freshness only those RFC 9110 §15.1 names.
pub(crate) fn storable_status(status: StatusCode, explicit: bool) -> bool {
    let code = status.as_u16();
    if explicit {
        (200..500).contains(&code) && code != 206 && code != 304
    } else {
        HEURISTIC_STATUSES.contains(&code)
    }
}

/// Whether `headers` hold a validator the origin can be asked about.
pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// A date header's value, if it is a valid HTTP-date in any of the three
/// formats RFC 9110 §5.6.7 has recipients accept.
pub(crate) fn date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// The freshness of a response with `headers` and `status`, whose
/// directives are `cc`, received at `now` after the origin took `delay` to
/// answer; `heuristic_cap` bounds heuristic freshness. `None` when the
/// response has neither explicit freshness nor a validator: it is not
/// stored.
pub(crate) fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    now: SystemTime,
    delay: Duration,
    heuristic_cap: Duration,
) -> Option<Lifetime> {
    let generated = date(headers, &DATE);
    let explicit = if cc.invalid_freshness {
        Some(Duration::ZERO)
    } else if let Some(max_age) = cc.shared_max_age() {
        Some(max_age)
    } else if headers.contains_key(EXPIRES) {
        // An invalid `Expires` (such as "0") means already expired.
        Some(match date(headers, &EXPIRES) {
            Some(expires) => expires
                .duration_since(generated.unwrap_or(now))
                .unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        })
    } else {
        None
    };
    let fresh_for = if let Some(lifetime) = explicit {
        lifetime
    } else {
        let heuristic = (cc.public || storable_status(status, false))
            .then(|| date(headers, &LAST_MODIFIED))
            .flatten()
            .and_then(|modified| generated.unwrap_or(now).duration_since(modified).ok())
            .map(|since| (since / HEURISTIC_FRACTION).min(heuristic_cap));
        match heuristic {
            Some(lifetime) => lifetime,
            // No freshness, but a validator: stored to be revalidated.
            None if has_validator(headers) => Duration::ZERO,
            None => return None,
        }
    };
    let fresh_for = if cc.no_cache {
        Duration::ZERO
    } else {
        fresh_for
    };
    let age_value = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = generated
        .and_then(|generated| now.duration_since(generated).ok())
        .unwrap_or(Duration::ZERO);
    let no_stale = cc.shared_no_stale();
    Some(Lifetime {
        fresh_for,
        age: apparent.saturating_sub(delay).max(age_value),
        revalidate: cc.stale_while_revalidate,
        if_error: cc.stale_if_error,
        no_stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const CAP: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn http_date(t: SystemTime) -> HeaderValue {
        HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap()
    }

    fn life(status: u16, headers: &[(&str, HeaderValue)], now: SystemTime) -> Option<Lifetime> {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.clone(),
            );
        }
        let cc = CacheControl::parse(&h);
        lifetime(
            StatusCode::from_u16(status).unwrap(),
            &h,
            &cc,
            now,
            Duration::ZERO,
            CAP,
        )
    }

    fn v(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_expires() {
        let l = life(
            200,
            &[
                ("cache-control", v("max-age=60, s-maxage=30")),
                ("expires", http_date(at(900))),
                ("date", http_date(at(0))),
            ],
            at(0),
        )
        .unwrap();
        assert_eq!(l.fresh_for, Duration::from_secs(30));
        assert!(l.no_stale, "s-maxage implies proxy-revalidate");
    }

    #[test]
    fn expires_counts_from_date_not_from_the_local_clock() {
        let l = life(
            200,
            &[("expires", http_date(at(100))), ("date", http_date(at(40)))],
            at(40),
        )
        .unwrap();
        assert_eq!(l.fresh_for, Duration::from_secs(60));
        let expired = life(200, &[("expires", v("0"))], at(0)).unwrap();
        assert_eq!(expired.fresh_for, Duration::ZERO);
    }

    #[test]
    fn age_is_the_larger_of_age_and_the_apparent_age() {
        let l = life(
            200,
            &[
                ("cache-control", v("max-age=60")),
                ("age", v("20")),
                ("date", http_date(at(0))),
            ],
            at(5),
        )
        .unwrap();
        assert_eq!(l.age, Duration::from_secs(20));
        let l = life(
            200,
            &[
                ("cache-control", v("max-age=60")),
                ("date", http_date(at(0))),
            ],
            at(30),
        )
        .unwrap();
        assert_eq!(l.age, Duration::from_secs(30));
    }

    #[test]
    fn heuristic_freshness_is_a_tenth_of_the_time_since_last_modified_capped() {
        let l = life(
            200,
            &[
                ("last-modified", http_date(at(0))),
                ("date", http_date(at(1_000))),
            ],
            at(1_000),
        )
        .unwrap();
        assert_eq!(l.fresh_for, Duration::from_secs(100));
        let capped = life(
            200,
            &[
                ("last-modified", http_date(at(0))),
                ("date", http_date(at(1_000_000))),
            ],
            at(1_000_000),
        )
        .unwrap();
        assert_eq!(capped.fresh_for, CAP);
        // 302 is not heuristically cacheable: only its validator keeps it.
        let not = life(302, &[("last-modified", http_date(at(0)))], at(1_000)).unwrap();
        assert_eq!(not.fresh_for, Duration::ZERO);
    }

    #[test]
    fn no_freshness_and_no_validator_is_not_stored() {
        assert_eq!(life(200, &[], at(0)), None);
        assert_eq!(life(200, &[("cache-control", v("public"))], at(0)), None);
        let etag_only = life(200, &[("etag", v("\"a\""))], at(0)).unwrap();
        assert_eq!(etag_only.fresh_for, Duration::ZERO);
    }

    #[test]
    fn rfc_5861_windows_come_from_the_origin() {
        let l = life(
            200,
            &[(
                "cache-control",
                v("max-age=1, stale-while-revalidate=9, stale-if-error=99"),
            )],
            at(0),
        )
        .unwrap();
        assert_eq!(l.revalidate, Some(Duration::from_secs(9)));
        assert_eq!(l.if_error, Some(Duration::from_secs(99)));
        assert!(!l.no_stale);
    }

    #[test]
    fn statuses() {
        assert!(storable_status(StatusCode::OK, false));
        assert!(!storable_status(StatusCode::FOUND, false));
        assert!(storable_status(StatusCode::FOUND, true));
        assert!(!storable_status(StatusCode::PARTIAL_CONTENT, true));
        assert!(!storable_status(StatusCode::NOT_MODIFIED, true));
        assert!(!storable_status(StatusCode::INTERNAL_SERVER_ERROR, true));
    }
}
