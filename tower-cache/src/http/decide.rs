//! What a request is to the cache: a read under a key, a write that
//! invalidates, or a request that bypasses it.

use std::time::Duration;

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, COOKIE, IF_MODIFIED_SINCE, IF_NONE_MATCH, PRAGMA,
};
use http::request::Parts;
use http::{HeaderMap, Method};

use super::{CacheControl, HttpRules, path_tag};

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
    #[must_use]
    pub fn of_method(method: &Method) -> RequestClass {
        match *method {
            Method::GET | Method::HEAD => RequestClass::Read,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => RequestClass::Write,
            _ => RequestClass::Bypass,
        }
    }
}

/// What a read's request directives ask of a stored response (RFC 9111
/// §5.2.1): a caller that sends none takes what the cache's freshness
/// rules serve.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wants {
    /// `max-age`: no older than this.
    pub max_age: Option<Duration>,
    /// `min-fresh`: fresh for at least this much longer.
    pub min_fresh: Option<Duration>,
    /// `max-stale`: stale for at most this (`Duration::MAX`: any
    /// staleness).
    pub max_stale: Option<Duration>,
}

impl Wants {
    /// Whether the request asked anything of the stored response.
    pub(crate) fn any(&self) -> bool {
        self.max_age.is_some() || self.min_fresh.is_some() || self.max_stale.is_some()
    }
}

/// Which of the request headers that every request is asked about it
/// carries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per header, each read once"
)]
struct Present {
    /// `Cache-Control` or `Pragma`.
    directives: bool,
    cookie: bool,
    authorization: bool,
    /// `If-None-Match` or `If-Modified-Since`.
    conditional: bool,
}

/// Up to this many distinct names, one pass over them finds what
/// [`Present`] holds; past it, one lookup per header does.
const SCAN_NAMES: usize = 8;

impl Present {
    fn of(headers: &HeaderMap) -> Present {
        if headers.keys_len() > SCAN_NAMES {
            return Present {
                directives: headers.contains_key(CACHE_CONTROL) || headers.contains_key(PRAGMA),
                cookie: headers.contains_key(COOKIE),
                authorization: headers.contains_key(AUTHORIZATION),
                conditional: headers.contains_key(IF_NONE_MATCH)
                    || headers.contains_key(IF_MODIFIED_SINCE),
            };
        }
        let mut present = Present::default();
        for name in headers.keys() {
            if *name == CACHE_CONTROL || *name == PRAGMA {
                present.directives = true;
            } else if *name == COOKIE {
                present.cookie = true;
            } else if *name == AUTHORIZATION {
                present.authorization = true;
            } else if *name == IF_NONE_MATCH || *name == IF_MODIFIED_SINCE {
                present.conditional = true;
            }
        }
        present
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
        /// The request carries `Authorization` that a shared cache may
        /// answer only with what the origin marked shareable.
        authorized: bool,
        /// What the request's directives ask of a stored response, if
        /// anything (boxed: rare, and a hit moves the decision).
        wants: Option<Box<Wants>>,
        /// `If-None-Match` or `If-Modified-Since`: a hit is checked
        /// against them.
        conditional: bool,
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

impl HttpRules {
    /// What `parts` is to the cache: the classifier's (or the method's)
    /// class, then the request's directives, credentials and key.
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
        let present = Present::of(&parts.headers);
        let cc = if present.directives {
            CacheControl::parse(&parts.headers)
        } else {
            CacheControl::default()
        };
        if cc.no_store {
            return Decision::Bypass;
        }
        let (cookie, authorization) = (present.cookie, present.authorization);
        let credentials = authorization || cookie;
        // A shared cache may answer `Authorization` with what its origin
        // marked shareable (RFC 9111 §3.5); a `Cookie` always bypasses.
        let shared_authorized = self.shared && authorization && !cookie;
        let mut authorized = false;
        let user = match &self.per_user {
            Some(f) => match f(parts) {
                Some(user) => Some(user),
                None if shared_authorized && !grpc => {
                    authorized = true;
                    None
                }
                None if credentials => return Decision::Bypass,
                None => None,
            },
            None if shared_authorized && !grpc => {
                authorized = true;
                None
            }
            None if credentials => return Decision::Bypass,
            None => None,
        };
        if grpc {
            return Decision::GrpcRead { per_user: user };
        }
        let per_user = user.is_some();
        match self
            .key
            .key_for_audience(parts, user.as_deref(), authorized, None)
        {
            Some(key) => Decision::Read {
                key,
                head: *method == Method::HEAD,
                reload: cc.no_cache || cc.max_age == Some(Duration::ZERO),
                only_if_cached: cc.only_if_cached,
                per_user,
                authorized,
                wants: {
                    let wants = Wants {
                        max_age: cc.max_age,
                        min_fresh: cc.min_fresh,
                        max_stale: cc.max_stale,
                    };
                    wants.any().then(|| Box::new(wants))
                },
                conditional: present.conditional,
            },
            None => Decision::Bypass,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::test_support::request_parts as req;

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
}
