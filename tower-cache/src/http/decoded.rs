//! A stored response as an entry held in process keeps it: decoded once,
//! with the headers of its plain answer built once per second.

use std::sync::Mutex;

use http::{HeaderMap, Response};

use super::{CacheBody, CacheStatus, HttpRules, Report, StoredResponse};
use crate::Entry;
use crate::store::Footprint;

/// The stored response of an entry held in process, decoded once by its
/// first hit, and the headers of the last plain answer made from it: every
/// hit within the same second of age and of freshness left gets the very
/// same headers, so it copies them instead of building them.
pub(crate) struct Decoded {
    pub(crate) stored: StoredResponse,
    last: Mutex<Option<Answer>>,
}

/// The headers of a plain answer (`X-Cache: HIT` and `Cache-Status`
/// included) for one age and one freshness left, in seconds, by one set
/// of rules.
struct Answer {
    age: u64,
    ttl: i64,
    /// The address of the rules, compared only.
    rules: usize,
    headers: HeaderMap,
}

/// Estimated bytes of a header map with room for `slots` fields: its
/// index and entry tables, and a name and a value each (values decoded
/// from an entry share its buffer).
fn map_bytes(slots: usize) -> usize {
    64 + slots * 160
}

impl Footprint for Decoded {
    /// The stored headers, vary values and trailers, and the headers of the
    /// plain answer built from them (its own fields added).
    fn footprint(&self) -> usize {
        let stored = &self.stored;
        map_bytes(stored.headers.capacity())
            + map_bytes(stored.headers.len() + 4)
            + stored.vary.capacity() * 96
            + stored
                .trailers
                .as_ref()
                .map_or(0, |t| map_bytes(t.capacity()))
    }
}

impl Decoded {
    /// The entry's stored response, decoded; `None` when it does not
    /// decode.
    pub(crate) fn of(entry: &Entry) -> Option<Decoded> {
        Some(Decoded {
            stored: StoredResponse::decode(&entry.value).ok()?,
            last: Mutex::new(None),
        })
    }

    /// The answer to a request with `headers` (a `HEAD` when `head`;
    /// carrying `If-None-Match` or `If-Modified-Since` when `conditional`)
    /// from this fresh entry, `age` seconds old with `ttl` seconds of freshness
    /// left: what the full read path answers for a hit.
    pub(crate) fn hit<B: http_body::Body>(
        &self,
        rules: &HttpRules,
        age: u64,
        ttl: i64,
        head: bool,
        conditional: bool,
        headers: &HeaderMap,
    ) -> Response<CacheBody<B>> {
        if head || conditional {
            return self.full(rules, age, ttl, head, headers);
        }
        let mut res = Response::new(CacheBody::cached(
            self.stored.body.clone(),
            self.stored.trailers.clone(),
        ));
        *res.status_mut() = self.stored.status;
        let rules_at = std::ptr::from_ref(rules).addr();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*last {
            Some(answer) if answer.age == age && answer.ttl == ttl && answer.rules == rules_at => {
                *res.headers_mut() = answer.headers.clone();
            }
            _ => {
                let built = self.full::<B>(rules, age, ttl, false, headers);
                *res.headers_mut() = built.headers().clone();
                *last = Some(Answer {
                    age,
                    ttl,
                    rules: rules_at,
                    headers: built.into_parts().0.headers,
                });
            }
        }
        res
    }

    /// The answer built the way the full read path builds it.
    fn full<B: http_body::Body>(
        &self,
        rules: &HttpRules,
        age: u64,
        ttl: i64,
        head: bool,
        headers: &HeaderMap,
    ) -> Response<CacheBody<B>> {
        let mut res = self
            .stored
            .clone()
            .respond(CacheStatus::Hit, age, head, headers);
        let report = Report {
            hit: true,
            ttl: Some(ttl),
            ..Report::default()
        };
        rules.report(&mut res, &report);
        res
    }
}
