//! Invalidation generations: whether a key or a tag was invalidated after
//! a load started, so that the load does not store an older value over
//! the invalidation.
//!
//! A global sequence numbers invalidations; each key and tag hashes to one
//! of [`STRIPES`] slots holding the number of its latest invalidation. A
//! load remembers the sequence when it starts, and stores only while every
//! slot of its key and tags is still at or below it. Two names sharing a
//! slot can make a load skip storing (a miss later), never store a value
//! that should have been invalidated.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of the striped generation table.
const STRIPES: usize = 1024;

pub(crate) struct Invalidations {
    seq: AtomicU64,
    stripes: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

#[derive(Clone, Copy)]
enum Name<'a> {
    Key(&'a str),
    Tag(&'a str),
}

impl Invalidations {
    pub(crate) fn new() -> Self {
        Invalidations {
            seq: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn slot(&self, name: Name<'_>) -> &AtomicU64 {
        let mut h = self.hasher.build_hasher();
        match name {
            Name::Key(k) => (0u8, k).hash(&mut h),
            Name::Tag(t) => (1u8, t).hash(&mut h),
        }
        &self.stripes[usize::try_from(h.finish() % STRIPES as u64).unwrap_or(0)]
    }

    fn bump(&self, name: Name<'_>) {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.slot(name).fetch_max(n, Ordering::SeqCst);
    }

    /// Records an invalidation of `key`. Call before removing it from the
    /// store.
    pub(crate) fn key(&self, key: &str) {
        self.bump(Name::Key(key));
    }

    /// Records an invalidation of `tag`. Call before invalidating it in
    /// the store.
    pub(crate) fn tag(&self, tag: &str) {
        self.bump(Name::Tag(tag));
    }

    /// The generation a load starts at.
    pub(crate) fn snapshot(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Whether `key` or one of `tags` was invalidated after `generation`.
    pub(crate) fn since(&self, generation: u64, key: &str, tags: &[String]) -> bool {
        self.slot(Name::Key(key)).load(Ordering::SeqCst) > generation
            || tags
                .iter()
                .any(|t| self.slot(Name::Tag(t)).load(Ordering::SeqCst) > generation)
    }
}
