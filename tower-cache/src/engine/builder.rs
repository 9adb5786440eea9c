//! The [`Cache`] builder: its knobs and their defaults.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::invalidation::Invalidations;
use super::{Cache, Inner};
use crate::store::{SharedStore, Store};

/// Default limit on background refreshes running at once: 64.
pub const DEFAULT_MAX_REFRESHES: usize = 64;

/// Builds a [`Cache`]. Its store parameter defaults to [`SharedStore`],
/// like [`Cache`]'s.
#[derive(Debug)]
pub struct CacheBuilder<St = SharedStore> {
    store: St,
    max_refreshes: usize,
}

impl<St: Store> CacheBuilder<St> {
    /// Background refreshes allowed at once. Default:
    /// [`DEFAULT_MAX_REFRESHES`] (64).
    #[must_use]
    pub fn max_refreshes(mut self, n: usize) -> Self {
        self.max_refreshes = n;
        self
    }

    /// Builds the cache.
    pub fn build(self) -> Cache<St> {
        Cache {
            inner: Arc::new(Inner {
                store: self.store,
                flights: Arc::new(Mutex::new(HashMap::new())),
                refresh_permits: Arc::new(Semaphore::new(self.max_refreshes)),
                invalidations: Invalidations::new(),
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        }
    }
}

impl<St: Store> Cache<St> {
    /// A cache over `store` with the defaults.
    pub fn new(store: St) -> Self {
        Self::builder(store).build()
    }

    /// A builder over `store`.
    pub fn builder(store: St) -> CacheBuilder<St> {
        CacheBuilder {
            store,
            max_refreshes: DEFAULT_MAX_REFRESHES,
        }
    }
}
