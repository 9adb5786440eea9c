//! Whether a response may be stored, and whether a failure may be handed
//! to the callers that waited for it.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{CONTENT_TYPE, SET_COOKIE, VARY};
use http::response::Parts as ResponseParts;

use super::freshness::{Lifetime, lifetime, storable_status, understood_status};
use super::{CacheControl, HttpRules};

/// Whether a response may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storability {
    Store {
        negative: bool,
        ttl: Option<Duration>,
    },
    /// Stored as the origin's headers say (the shared-cache mode).
    Shared(Lifetime),
    /// A failure (5xx): not stored; stale-if-error may answer instead.
    Failed,
    Pass,
}

impl HttpRules {
    /// Whether `res` may be stored, for how long, and as a negative entry;
    /// `per_user` when the key is a user's, `grpc` for a gRPC unary call.
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
        if has_vary_star(res) {
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

    /// Whether `res` may be stored by a shared cache (RFC 9111 §3), and as
    /// what: `per_user` when the key is a user's, `authorized` when the
    /// request carried `Authorization` (§3.5: stored only when the origin
    /// marked the response `public`, `s-maxage` or `must-revalidate`),
    /// `delay` the time the origin took to answer.
    pub(crate) fn storability_shared(
        &self,
        res: &ResponseParts,
        per_user: bool,
        authorized: bool,
        delay: Duration,
    ) -> Storability {
        if res.status.is_server_error() {
            return Storability::Failed;
        }
        if res.headers.contains_key(SET_COOKIE) || has_vary_star(res) {
            return Storability::Pass;
        }
        let cc = CacheControl::parse_targeted(&res.headers, &self.targeted)
            .unwrap_or_else(|| CacheControl::parse(&res.headers));
        // With `must-understand`, `no-store` is for caches that do not know
        // the status; this one stores only statuses it knows.
        let no_store = if cc.must_understand {
            !understood_status(res.status)
        } else {
            cc.no_store
        };
        if no_store || (cc.private && !per_user) {
            return Storability::Pass;
        }
        if authorized && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
            return Storability::Pass;
        }
        let explicit = cc.invalid_freshness
            || cc.shared_max_age().is_some()
            || res.headers.contains_key(http::header::EXPIRES);
        if !storable_status(res.status, explicit || cc.public) {
            return Storability::Pass;
        }
        match lifetime(
            res.status,
            &res.headers,
            &cc,
            // The cache's clock, which tests can pause.
            SystemTime::UNIX_EPOCH + Duration::from_millis(crate::clock::now_ms()),
            delay,
            self.heuristic_max,
        ) {
            Some(lifetime) => Storability::Shared(lifetime),
            None => Storability::Pass,
        }
    }

    /// Whether a failed response (not stored) may be handed to the callers
    /// that waited for the load that got it: never when it sets a cookie
    /// or is marked `private` or `no-store`, since it answers another
    /// client's request.
    #[expect(
        clippy::unused_self,
        reason = "a rule like its siblings, called on the configured rules"
    )]
    pub(crate) fn shareable_failure(&self, res: &ResponseParts) -> bool {
        let cc = CacheControl::parse(&res.headers);
        !(res.headers.contains_key(SET_COOKIE) || cc.private || cc.no_store)
    }
}

/// Whether the response varies on `*`: on things no request header says.
fn has_vary_star(res: &ResponseParts) -> bool {
    res.headers.get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|n| n.trim_ascii() == b"*")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::response_parts as res;

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

    mod against_http_cache_semantics {
        use std::time::{Duration, SystemTime};

        use http_cache_semantics::{CacheOptions, CachePolicy};
        use proptest::prelude::*;

        use super::*;

        /// Response headers where both readings of the rules should agree:
        /// explicit freshness always present, no cookies, no validators
        /// (heuristics and revalidation are outside the comparison). Left
        /// out where the other reading departs from RFC 9111:
        /// `proxy-revalidate` (it gives a TTL of zero; RFC 9111 §5.2.2.8
        /// only forbids serving stale).
        /// The headers of a response received at `now`: directives, and
        /// optionally `Date` (at `now`), `Age` and `Expires` (seconds after
        /// `Date`).
        #[derive(Debug, Clone)]
        struct Drawn {
            status: u16,
            directives: Vec<String>,
            date: bool,
            age: Option<u64>,
            expires_in: Option<u64>,
        }

        impl Drawn {
            fn headers(&self, now: SystemTime) -> Vec<(&'static str, String)> {
                let mut headers = Vec::new();
                let mut directives = self.directives.clone();
                if self.expires_in.is_none() && !directives.iter().any(|d| d.contains("max")) {
                    directives.push("max-age=120".to_owned());
                }
                if !directives.is_empty() {
                    headers.push(("cache-control", directives.join(", ")));
                }
                // Whole seconds, as a `Date` is written.
                let secs = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let date = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                if self.date {
                    headers.push(("date", httpdate::fmt_http_date(date)));
                }
                if let Some(age) = self.age {
                    headers.push(("age", age.to_string()));
                }
                if let Some(expires_in) = self.expires_in {
                    headers.push((
                        "expires",
                        httpdate::fmt_http_date(date + Duration::from_secs(expires_in)),
                    ));
                }
                headers
            }
        }

        /// Responses where both readings of the rules should agree:
        /// explicit freshness always present, no cookies, no validators
        /// (heuristics and revalidation are outside the comparison), and
        /// `Date` never in the past. Left out where the other reading
        /// departs from RFC 9111: `proxy-revalidate` (it gives a TTL of
        /// zero; RFC 9111 §5.2.2.8 only forbids serving stale), and a
        /// `Date` in the past (it takes no apparent age from it, §4.2.3).
        fn response() -> impl Strategy<Value = Drawn> {
            let directive = prop_oneof![
                (0u64..600).prop_map(|s| format!("max-age={s}")),
                (0u64..600).prop_map(|s| format!("s-maxage={s}")),
                Just("no-store".to_owned()),
                Just("private".to_owned()),
                Just("public".to_owned()),
                Just("must-revalidate".to_owned()),
            ];
            (
                prop_oneof![Just(200u16), Just(203), Just(301), Just(404), Just(410)],
                proptest::collection::vec(directive, 0..4),
                any::<bool>(),
                proptest::option::of(0u64..300),
                proptest::option::of(0u64..900),
            )
                .prop_map(|(status, directives, date, age, expires_in)| Drawn {
                    status,
                    directives,
                    date,
                    age,
                    expires_in,
                })
        }

        proptest! {
            #[test]
            fn storability_and_freshness_agree(drawn in response()) {
                let now = SystemTime::UNIX_EPOCH + Duration::from_millis(crate::now_ms());
                let headers = drawn.headers(now);
                let pairs: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let res = crate::test_support::response_parts(drawn.status, &pairs);
                let (req, ()) = http::Request::get("http://h/a")
                    .body(())
                    .expect("a request")
                    .into_parts();
                let theirs = CachePolicy::new_options(
                    &req,
                    &res,
                    now,
                    CacheOptions {
                        shared: true,
                        ..CacheOptions::default()
                    },
                );
                let rules = HttpRules::default();
                let ours = rules.storability_shared(&res, false, false, Duration::ZERO);
                match ours {
                    Storability::Shared(lifetime) => {
                        prop_assert!(theirs.is_storable(), "{headers:?}");
                        let ttl = lifetime.fresh_for.saturating_sub(lifetime.age);
                        let other = theirs.time_to_live(now);
                        // `Date` has whole seconds: its apparent age (which
                        // the other reading ignores) is under a second, and
                        // the test itself takes a little time.
                        let gap = ttl.abs_diff(other);
                        prop_assert!(gap <= Duration::from_secs(2), "{headers:?}: {ttl:?} vs {other:?}");
                    }
                    _ => prop_assert!(!theirs.is_storable(), "{headers:?}"),
                }
            }
        }
    }
}
