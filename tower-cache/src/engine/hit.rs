//! The hit path: a fresh entry the store holds in process, answered
//! without a future, before any state for a miss is built.

use super::Cache;
use super::policy::Freshness;
use super::profile::Profile;
use crate::store::{Resident, Store};

impl<St: Store> Cache<St> {
    /// Answers a read from an entry the store holds in process
    /// ([`Store::resident`]) when it is fresh and wants no refresh under
    /// `profile`'s policy at `now`, and `answer` accepts it; the hit is
    /// counted. `None` in every other case (not held here, stale, due for
    /// a refresh, refused by `answer`): the caller takes the full path,
    /// which decides the rest (stale serving, refresh, loads).
    #[inline]
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "the HTTP layer's hit path")
    )]
    pub(crate) fn hit_in_process<R>(
        &self,
        key: &str,
        profile: &Profile,
        now: u64,
        answer: impl FnOnce(&Resident) -> Option<R>,
    ) -> Option<R> {
        let resident = self.inner.store.resident(key, now)?;
        if !matches!(
            profile.policy().classify(resident.entry(), now),
            Freshness::Fresh { refresh: false }
        ) {
            return None;
        }
        let answered = answer(&resident)?;
        profile.record_hit();
        Some(answered)
    }
}
