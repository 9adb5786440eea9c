//! The invalidation versions an instance has seen, which decide what its L1 admits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::entry::Entry;

/// How many tag invalidations L1 remembers to refuse entries loaded before
/// them.
const SEEN_TAGS: u64 = 10_000;

/// What this instance knows of a tag's invalidations.
#[derive(Clone, Copy, Debug, Default)]
struct TagSeen {
    /// The latest version at which the tag was invalidated in L2.
    version: u64,
    /// An invalidation made here has not reached L2 yet: its version is
    /// unknown, so every entry of the tag is refused until it has.
    pending: bool,
}

/// Invalidation versions seen by this instance, its own and those heard on
/// the channel. L1 refuses an entry whose [`Entry::version`] is older than
/// one of them: the entry was loaded before an invalidation that applies
/// to it, even if it is written after. Versions come from L2, never from a
/// clock.
pub(super) struct Seen {
    tags: moka::future::Cache<String, TagSeen>,
    /// The latest namespace-wide invalidation.
    all: AtomicU64,
    /// The latest version read from L2 or heard of: what a load records
    /// when L2 cannot be asked.
    latest: AtomicU64,
}

impl Seen {
    /// Remembers tags for `keep` (L2's `max_ttl`: no entry loaded before
    /// an invalidation outlives it).
    pub(super) fn new(keep: Duration) -> Self {
        Seen {
            tags: moka::future::Cache::builder()
                .max_capacity(SEEN_TAGS)
                .time_to_live(keep.max(Duration::from_millis(1)))
                .build(),
            all: AtomicU64::new(0),
            latest: AtomicU64::new(0),
        }
    }

    /// Notes a version read from L2.
    pub(super) fn observe(&self, version: u64) {
        self.latest.fetch_max(version, Ordering::AcqRel);
    }

    /// The latest version known here.
    pub(super) fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// A tag invalidation made here is under way: refuse the tag's entries
    /// until it is [`settled`](Self::settle).
    pub(super) async fn begin(&self, tag: &str) {
        self.update(tag, |seen| TagSeen {
            pending: true,
            ..seen
        })
        .await;
    }

    /// `tag` was invalidated in L2 at `version` (here, or by another
    /// instance when `settles` is false).
    pub(super) async fn tag(&self, tag: &str, version: u64, settles: bool) {
        self.observe(version);
        self.update(tag, |seen| TagSeen {
            version: seen.version.max(version),
            pending: seen.pending && !settles,
        })
        .await;
    }

    /// The whole namespace was invalidated in L2 at `version`; that covers
    /// every invalidation made here that was waiting for L2.
    pub(super) fn all(&self, version: u64) {
        self.observe(version);
        self.all.fetch_max(version, Ordering::AcqRel);
    }

    /// Drops the pending marks (after a namespace-wide invalidation
    /// covered them).
    pub(super) async fn settle_all(&self) {
        let pending: Vec<_> = self
            .tags
            .iter()
            .filter(|(_, seen)| seen.pending)
            .map(|(tag, _)| tag)
            .collect();
        for tag in pending {
            self.update(&tag, |seen| TagSeen {
                pending: false,
                ..seen
            })
            .await;
        }
    }

    async fn update(&self, tag: &str, f: impl FnOnce(TagSeen) -> TagSeen) {
        self.tags
            .entry(tag.to_owned())
            .and_upsert_with(|current| {
                let next = f(current.map(|e| *e.value()).unwrap_or_default());
                std::future::ready(next)
            })
            .await;
    }

    /// Whether L1 may hold `entry`: not when it was loaded before an
    /// invalidation seen here (an entry with no version is as new as its
    /// write).
    pub(super) async fn admits(&self, entry: &Entry) -> bool {
        let Some(version) = entry.version() else {
            return true;
        };
        if self.all.load(Ordering::Acquire) > version {
            return false;
        }
        for tag in entry.tags() {
            if let Some(seen) = self.tags.get(tag).await
                && (seen.pending || seen.version > version)
            {
                return false;
            }
        }
        true
    }
}
