//! Reads guarded by an existence filter: a key the store holds no entry
//! for, and which the filter says exists nowhere, is answered "absent"
//! by the layer without the loader.

use std::fmt;
use std::future::Future;

use super::load::{Checked, Verdict};
use super::{Cache, Fetched, LoadError, Loaded, Loader, Profile};
use crate::entry::Entry;
use crate::filter::ExistenceFilter;
use crate::store::Store;

impl<St: Store> Cache<St> {
    /// Whether `filter` rules out `item`, read for a key the store holds
    /// no entry for: it says the item exists nowhere. Counted as filtered
    /// under `profile`.
    pub(crate) async fn rules_out(
        &self,
        profile: &Profile,
        filter: &ExistenceFilter,
        item: &str,
    ) -> bool {
        let absent = !filter.may_contain(item).await;
        if absent {
            profile.record_filtered();
        }
        absent
    }

    /// [`Cache::fetch_checked`] for an entry the caller has read already
    /// ([`Cache::read_entry`]), so that the store is read once.
    pub(crate) async fn fetch_checked_found<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        cached: Option<Entry>,
        mut check: impl FnMut(&Entry) -> bool + Send,
        load: L,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let check = move |entry: &Entry| {
            if check(entry) {
                Verdict::Serve
            } else {
                Verdict::Drop
            }
        };
        match self.fetch_found(key, profile, cached, check, load).await {
            Checked::Done(result) => result,
            Checked::Skipped(load) => Box::pin(self.load(key, profile, load, None, None)).await,
        }
    }
}
