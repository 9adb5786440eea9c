//! The [`Cache`] builder: its knobs and their defaults.

use std::sync::Arc;

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
    warm_concurrency: usize,
}

impl<St: Store> CacheBuilder<St> {
    /// Background refreshes allowed at once. Default:
    /// [`DEFAULT_MAX_REFRESHES`] (64).
    #[must_use]
    pub fn max_refreshes(mut self, n: usize) -> Self {
        self.max_refreshes = n;
        self
    }

    /// Keys loaded at once by [`Cache::warm`] and the layers' `warm`.
    /// Default: [`DEFAULT_WARM_CONCURRENCY`](super::DEFAULT_WARM_CONCURRENCY) (16).
    #[must_use]
    pub fn warm_concurrency(mut self, n: usize) -> Self {
        self.warm_concurrency = n.max(1);
        self
    }

    /// Builds the cache.
    pub fn build(self) -> Cache<St> {
        Cache {
            inner: Arc::new(Inner {
                store: self.store,
                flights: Arc::default(),
                refresh_permits: Arc::new(Semaphore::new(self.max_refreshes)),
                invalidations: Invalidations::new(),
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                warm_concurrency: self.warm_concurrency,
            }),
        }
    }
}

impl<St: Store> Cache<St> {
    /// A cache over `store` with the defaults: a `Cache<St>`, typed after
    /// `store`.
    ///
    /// Over a [`SharedStore`] it is the default [`Cache`], and the layers
    /// built from it are named without a store parameter, as an axum state
    /// names them: `ReadThrough<UserRepo>`, `WriteThrough<PriceRepo>`,
    /// `WriteBehind<u64, i64>`, `CacheAside<S>`. Over a concrete store the
    /// store is part of every type (static dispatch, no allocation per
    /// store call): `Cache::new(MemoryStore::default())` is a
    /// `Cache<MemoryStore>`, and its layers are `ReadThrough<UserRepo,
    /// MemoryStore>` and so on. Wrap the store in [`SharedStore::new`]
    /// unless you want that:
    ///
    /// ```
    /// use tower_cache::Cache;
    /// use tower_cache::store::{MemoryStore, SharedStore};
    ///
    /// // The default: `Cache`, the type every layer names by default.
    /// let cache: Cache = Cache::new(SharedStore::new(MemoryStore::default()));
    /// // Static dispatch, for types you never write down.
    /// let direct: Cache<MemoryStore> = Cache::new(MemoryStore::default());
    /// # let _ = (cache, direct);
    /// ```
    ///
    /// A layer over a `Cache<MemoryStore>` does not fit a field of the
    /// default type; the compiler says ``expected `ReadThrough<UserRepo>`,
    /// found `ReadThrough<UserRepo, MemoryStore>` ``, and the fix is
    /// `Cache::new(SharedStore::new(MemoryStore::default()))`:
    ///
    /// ```compile_fail,E0308
    /// # use tower::Layer;
    /// # use tower_cache::{Cache, Policy, ReadThrough, ReadThroughLayer};
    /// # use tower_cache::store::MemoryStore;
    /// # #[derive(Clone)] struct UserRepo;
    /// # impl tower::Service<u64> for UserRepo {
    /// #     type Response = Option<String>;
    /// #     type Error = std::io::Error;
    /// #     type Future = std::future::Ready<Result<Option<String>, std::io::Error>>;
    /// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
    /// #         std::task::Poll::Ready(Ok(()))
    /// #     }
    /// #     fn call(&mut self, _: u64) -> Self::Future { std::future::ready(Ok(None)) }
    /// # }
    /// struct AppState {
    ///     users: ReadThrough<UserRepo>,
    /// }
    ///
    /// let cache = Cache::new(MemoryStore::default()); // a `Cache<MemoryStore>`
    /// let users = ReadThroughLayer::new(cache, "users", Policy::default()).layer(UserRepo);
    /// let state = AppState { users }; // error[E0308]: mismatched types
    /// ```
    pub fn new(store: St) -> Self {
        Self::builder(store).build()
    }

    /// A builder over `store`, for the knobs [`Cache::new`] leaves at
    /// their defaults. It builds a `Cache<St>`, typed after `store` as
    /// [`Cache::new`] says: give it a [`SharedStore`] for the default
    /// [`Cache`].
    ///
    /// ```
    /// use tower_cache::Cache;
    /// use tower_cache::store::{MemoryStore, SharedStore};
    ///
    /// let cache: Cache = Cache::builder(SharedStore::new(MemoryStore::default()))
    ///     .max_refreshes(16)
    ///     .build();
    /// # let _ = cache;
    /// ```
    pub fn builder(store: St) -> CacheBuilder<St> {
        CacheBuilder {
            store,
            max_refreshes: DEFAULT_MAX_REFRESHES,
            warm_concurrency: super::DEFAULT_WARM_CONCURRENCY,
        }
    }
}
