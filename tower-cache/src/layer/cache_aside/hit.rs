//! The hit path of a cacheable read: a fresh entry held in process answers
//! at once, before the request's miss state (the loader, the request kept
//! for the origin, the read's future) is built.

use http::{HeaderMap, Response};
use http_body::Body;

use super::CacheAsideLayer;
use super::read::ttl_secs;
use crate::clock;
use crate::http::{CacheBody, Decoded};
use crate::store::Store;

impl<St: Store, G> CacheAsideLayer<St, G> {
    /// The answer to a read of `key` by a request with `headers` (with
    /// `If-None-Match` or `If-Modified-Since` when `conditional`) from a
    /// fresh entry of its variant held in process, decoded once for all
    /// its hits; `None` when there is none (the full read path decides).
    #[inline]
    pub(super) fn hit<B: Body>(
        &self,
        key: &str,
        head: bool,
        conditional: bool,
        headers: &HeaderMap,
    ) -> Option<Response<CacheBody<B>>> {
        let now = clock::now_ms();
        self.cache
            .hit_in_process(key, &self.profile, now, |resident| {
                let decoded = resident.decoded(Decoded::of)?;
                if !decoded.stored.vary_matches(headers) {
                    return None;
                }
                let entry = resident.entry();
                let age = now.saturating_sub(entry.stored_at()) / 1_000;
                let ttl = ttl_secs(entry, now);
                Some(decoded.hit(&self.rules, age, ttl, head, conditional, headers))
            })
    }
}
