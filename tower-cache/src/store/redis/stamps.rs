//! The invalidation versions this process last read from Redis, each with the value of the namespace's counter it was read with: what lets an L2 hit decide without reading them again.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::entry::Entry;

/// How many tags' versions are kept at most. Past that, those read at an
/// older counter value are dropped first, then all of them.
pub(super) const MAX_KNOWN_TAGS: usize = 10_000;

/// How long a version read is used, in milliseconds, even while the
/// counter stays where it was: an invalidation always moves the counter,
/// but a tag key overwritten by something other than this crate does not,
/// and is seen after at most this long.
pub(super) const MAX_AGE_MS: u64 = 10_000;

/// An invalidation version as a script reads it: `None` when none is set,
/// [`u64::MAX`] when the key holds anything but a version (which
/// invalidates everything it applies to).
pub(super) type Stamp = Option<u64>;

/// A version read at `counter`, `read_ms` (this process's clock) ago.
#[derive(Debug, Clone, Copy)]
struct Known {
    stamp: Stamp,
    counter: u64,
    read_ms: u64,
}

impl Known {
    /// Whether this is what Redis holds when its counter is `counter`: no
    /// invalidation was made since it was read (each one moves the
    /// counter), and it was read recently.
    fn current(&self, counter: u64, now_ms: u64) -> bool {
        self.counter == counter && now_ms >= self.read_ms && now_ms - self.read_ms < MAX_AGE_MS
    }
}

#[derive(Debug, Default)]
struct Table {
    /// The namespace-wide invalidation version.
    all: Option<Known>,
    /// Hashed with foldhash, seeded at random per process.
    tags: HashMap<Box<str>, Known, foldhash::fast::RandomState>,
}

/// The namespace's invalidation versions as last read here, with the
/// counter value each was read with (in the same script, so at the same
/// instant). Every invalidation moves the counter forward, so a version
/// read at the counter value an entry is read with is the version Redis
/// holds at that instant. Bounded by [`MAX_KNOWN_TAGS`].
#[derive(Debug, Default)]
pub(super) struct KnownStamps {
    table: RwLock<Table>,
}

impl KnownStamps {
    /// Whether `entry`, read from Redis together with the counter value
    /// `counter`, was invalidated (the namespace, or one of its tags, at a
    /// version after the entry's); `None` when one of the versions it
    /// needs is not known at that counter value.
    pub(super) fn invalidated(&self, entry: &Entry, counter: u64, now_ms: u64) -> Option<bool> {
        let version = entry.version().unwrap_or(0);
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let after = |known: Option<&Known>| -> Option<bool> {
            let known = known.filter(|k| k.current(counter, now_ms))?;
            Some(known.stamp.is_some_and(|s| s > version))
        };
        let mut invalidated = after(table.all.as_ref())?;
        for tag in entry.tags() {
            invalidated |= after(table.tags.get(tag.as_str()))?;
        }
        Some(invalidated)
    }

    /// Records versions read at the counter value `counter`, all in one
    /// script: the namespace-wide one and those of `tags`. A version that
    /// is not a number is not kept: it is read again every time, so a
    /// repaired key is seen at once.
    pub(super) fn record<'a>(
        &self,
        counter: u64,
        now_ms: u64,
        all: Stamp,
        tags: impl IntoIterator<Item = (&'a str, Stamp)>,
    ) {
        let known = |stamp: Stamp| {
            (stamp != Some(u64::MAX)).then_some(Known {
                stamp,
                counter,
                read_ms: now_ms,
            })
        };
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        table.all = known(all);
        for (tag, stamp) in tags {
            let Some(known) = known(stamp) else {
                table.tags.remove(tag);
                continue;
            };
            if let Some(slot) = table.tags.get_mut(tag) {
                *slot = known;
                continue;
            }
            if table.tags.len() >= MAX_KNOWN_TAGS {
                table.tags.retain(|_, k| k.current(counter, now_ms));
                if table.tags.len() >= MAX_KNOWN_TAGS {
                    table.tags.clear();
                }
            }
            table.tags.insert(tag.into(), known);
        }
    }

    /// How many tags' versions are known.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .tags
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, tags: &[&str]) -> Entry {
        Entry::new("v")
            .with_tags(tags.iter().copied())
            .with_version(version)
    }

    #[test]
    fn nothing_is_decided_before_the_versions_are_read() {
        let known = KnownStamps::default();
        assert_eq!(known.invalidated(&entry(5, &[]), 7, 0), None);
        known.record(7, 0, None, []);
        assert_eq!(known.invalidated(&entry(5, &[]), 7, 0), Some(false));
        assert_eq!(known.invalidated(&entry(5, &["t"]), 7, 0), None);
    }

    #[test]
    fn versions_read_at_another_counter_decide_nothing() {
        let known = KnownStamps::default();
        known.record(7, 0, None, [("t", Some(3))]);
        assert_eq!(known.invalidated(&entry(5, &["t"]), 7, 0), Some(false));
        assert_eq!(known.invalidated(&entry(5, &["t"]), 8, 0), None);
        // The namespace's version read again at 8, the tag's not yet.
        known.record(8, 0, None, []);
        assert_eq!(known.invalidated(&entry(5, &["t"]), 8, 0), None);
    }

    #[test]
    fn a_later_version_invalidates() {
        let known = KnownStamps::default();
        known.record(9, 0, Some(2), [("a", None), ("b", Some(6))]);
        assert_eq!(known.invalidated(&entry(5, &["a"]), 9, 0), Some(false));
        assert_eq!(known.invalidated(&entry(5, &["a", "b"]), 9, 0), Some(true));
        assert_eq!(known.invalidated(&entry(1, &[]), 9, 0), Some(true));
        assert_eq!(known.invalidated(&entry(6, &["b"]), 9, 0), Some(false));
    }

    #[test]
    fn versions_are_read_again_after_max_age() {
        let known = KnownStamps::default();
        known.record(7, 1_000, None, [("t", None)]);
        let e = entry(5, &["t"]);
        assert_eq!(
            known.invalidated(&e, 7, 1_000 + MAX_AGE_MS - 1),
            Some(false)
        );
        assert_eq!(known.invalidated(&e, 7, 1_000 + MAX_AGE_MS), None);
        // A clock that went back trusts nothing either.
        assert_eq!(known.invalidated(&e, 7, 999), None);
    }

    #[test]
    fn garbage_is_never_kept() {
        let known = KnownStamps::default();
        known.record(7, 0, None, [("t", None)]);
        known.record(7, 0, None, [("t", Some(u64::MAX))]);
        assert_eq!(known.invalidated(&entry(5, &["t"]), 7, 0), None);
        known.record(7, 0, Some(u64::MAX), []);
        assert_eq!(known.invalidated(&entry(5, &[]), 7, 0), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let known = KnownStamps::default();
        for i in 0..MAX_KNOWN_TAGS {
            known.record(1, 0, None, [(format!("old{i}").as_str(), None)]);
        }
        assert_eq!(known.len(), MAX_KNOWN_TAGS);
        // Read at a newer counter: the old ones go first.
        known.record(2, 0, None, [("new", None)]);
        assert_eq!(known.len(), 1);
        for i in 0..MAX_KNOWN_TAGS * 2 {
            known.record(2, 0, None, [(format!("t{i}").as_str(), None)]);
            assert!(known.len() <= MAX_KNOWN_TAGS);
        }
    }
}
