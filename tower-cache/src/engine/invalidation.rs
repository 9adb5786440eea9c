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

use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::sync::atomic::{AtomicU64, Ordering};

/// Slots of the striped generation table.
const STRIPES: usize = 1024;

pub(crate) struct Invalidations {
    seq: AtomicU64,
    stripes: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

/// What [`Invalidations::store_unless_invalidated`] did with a value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Guarded<E> {
    Stored,
    /// Its key or a tag was invalidated after the load began: not written.
    Overtaken,
    /// The write failed.
    Failed(E),
    /// An invalidation raced with the write: removed again (with the
    /// remove's error, if it failed).
    Removed(Option<E>),
}

#[derive(Clone, Copy)]
enum Name<'a> {
    Key(&'a str),
    Tag(&'a str),
}

impl Invalidations {
    pub(crate) fn new() -> Self {
        Self::with_stripes(STRIPES)
    }

    /// A table of `stripes` slots (at least one).
    pub(crate) fn with_stripes(stripes: usize) -> Self {
        Invalidations {
            seq: AtomicU64::new(0),
            stripes: (0..stripes.max(1)).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn slot(&self, name: Name<'_>) -> &AtomicU64 {
        let mut h = self.hasher.build_hasher();
        match name {
            Name::Key(k) => (0u8, k).hash(&mut h),
            Name::Tag(t) => (1u8, t).hash(&mut h),
        }
        &self.stripes[usize::try_from(h.finish() % self.stripes.len() as u64).unwrap_or(0)]
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

    /// Writes what a load that started at `generation` produced, unless
    /// `key` or one of `tags` was invalidated since. The check runs again
    /// after the write: an invalidation that raced with it (recorded
    /// before its own remove, as [`key`](Self::key) asks) has either been
    /// seen before the write, or is seen after it and the value removed
    /// again, or its remove comes after the write. In every order, the
    /// store does not keep the value.
    pub(crate) async fn store_unless_invalidated<E, P, PF, R, RF>(
        &self,
        generation: u64,
        key: &str,
        tags: &[String],
        put: P,
        remove: R,
    ) -> Guarded<E>
    where
        P: FnOnce() -> PF,
        PF: Future<Output = Result<(), E>>,
        R: FnOnce() -> RF,
        RF: Future<Output = Result<(), E>>,
    {
        if self.since(generation, key, tags) {
            return Guarded::Overtaken;
        }
        if let Err(error) = put().await {
            return Guarded::Failed(error);
        }
        if self.since(generation, key, tags) {
            return Guarded::Removed(remove().await.err());
        }
        Guarded::Stored
    }
}
