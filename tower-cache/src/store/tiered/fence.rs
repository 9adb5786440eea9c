//! Fences between L1 copies of L2 reads and the invalidations applied to L1.

use std::hash::{Hash, Hasher};

use tokio::sync::RwLock;

/// Stripes of the per-key invalidation generation.
const STRIPES: usize = 64;

/// Every invalidation applied to L1 (local or received) bumps a generation
/// under a write lock: per key stripe for a key, globally for a tag or a
/// clear. A read takes a [`snapshot`](Fences::snapshot) before it goes to
/// L2 and copies what it found into L1 under the read locks, only if the
/// snapshot is unchanged, so a value read just before an invalidation is
/// never put back into L1 after it.
pub(super) struct Fences {
    pub(super) global: RwLock<u64>,
    stripes: Box<[RwLock<u64>]>,
}

impl Fences {
    pub(super) fn new() -> Self {
        Fences {
            global: RwLock::new(0),
            stripes: (0..STRIPES).map(|_| RwLock::new(0)).collect(),
        }
    }

    /// The generation lock of `key`'s stripe.
    pub(super) fn stripe(&self, key: &str) -> &RwLock<u64> {
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let stripe = h.finish() % self.stripes.len() as u64;
        &self.stripes[usize::try_from(stripe).unwrap_or(0)]
    }

    /// The global and `key`'s stripe generations, now.
    pub(super) async fn snapshot(&self, key: &str) -> (u64, u64) {
        let global = *self.global.read().await;
        (global, *self.stripe(key).read().await)
    }
}
