//! Entries L1 holds but may not have heard invalidations of: marked when the invalidation channel comes back or has been down too long, and answered, while L2 cannot vouch for them, as entries to revalidate.

use std::time::Duration;

use crate::entry::Entry;

/// Default for [`TieredStoreBuilder::max_unsynced`](super::TieredStoreBuilder::max_unsynced): 5 s.
pub const DEFAULT_MAX_UNSYNCED: Duration = Duration::from_secs(5);

/// The shortest window [`max_unsynced`](super::TieredStoreBuilder::max_unsynced) takes.
pub(super) const MIN_UNSYNCED: Duration = Duration::from_millis(10);

/// How often the subscriber pings the channel, and how long it waits for
/// the answer: a fifth of `max_unsynced`, at most 1 s, so that a channel
/// that stopped answering is found lost well within the window.
pub(super) fn heartbeat(max_unsynced: Duration) -> Duration {
    (max_unsynced / 5).min(Duration::from_secs(1))
}

/// `entry`, held out of sync, as a read answers it while L2 cannot be
/// asked: no longer fresh from `now_ms` on, its stale windows unchanged.
/// The engine serves it as any entry past its freshness (stale while one
/// background reload runs, where the reading route allows it; else a
/// miss) and reloads it.
pub(super) fn to_revalidate(mut entry: Entry, now_ms: u64) -> Entry {
    entry.fresh_until = entry.fresh_until.min(now_ms);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_to_revalidate_keeps_its_stale_window() {
        let entry = Entry::new("v")
            .with_stored_at(1_000)
            .with_ttl(Duration::from_secs(60))
            .with_stale(Duration::from_secs(30));
        let marked = to_revalidate(entry.clone(), 2_000);
        assert_eq!(marked.fresh_until(), 2_000);
        assert_eq!(marked.stale_until(), entry.stale_until());
        assert_eq!(marked.value(), entry.value());
        // An entry already past its freshness keeps it.
        assert_eq!(
            to_revalidate(entry.clone(), 90_000).fresh_until(),
            entry.fresh_until()
        );
    }

    #[test]
    fn the_heartbeat_stays_well_within_the_window() {
        assert_eq!(heartbeat(DEFAULT_MAX_UNSYNCED), Duration::from_secs(1));
        assert_eq!(
            heartbeat(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        assert_eq!(heartbeat(Duration::from_secs(60)), Duration::from_secs(1));
    }
}
