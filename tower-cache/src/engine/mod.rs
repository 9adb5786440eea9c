//! The engine: a cheap-to-clone [`Cache`] handle over any [`Store`], with
//! get-or-load, single-flight, freshness policy and background refresh.
//!
//! Every layer calls [`Cache::fetch`] with a key, a [`Profile`] (a named
//! [`Policy`]) and a loader; the engine decides whether the loader runs.
//! Layers therefore get stampede protection, stale serving and refresh
//! without implementing them.
//!
//! ```
//! use std::time::Duration;
//! use tower_cache::{Cache, Fill, Fetched, Loaded, Policy, Profile};
//! use tower_cache::store::{MemoryStore, SharedStore};
//!
//! /// Reads a user's name from the database.
//! async fn user_name(id: u64) -> Result<Loaded<()>, std::io::Error> {
//!     Ok(Loaded::Store(Fill::new(format!("user {id}"))))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = Cache::new(SharedStore::new(MemoryStore::default()));
//! let profile = Profile::new("users", Policy::ttl(Duration::from_secs(30)));
//! let got = cache.fetch("user:1", &profile, || user_name(1)).await.unwrap();
//! assert!(matches!(got, Fetched::Miss(_)));
//! let again = cache.fetch("user:1", &profile, || user_name(1)).await.unwrap();
//! assert!(matches!(again, Fetched::Hit(_)));
//! assert_eq!(&again.entry().unwrap().value()[..], b"user 1");
//! # }
//! ```

mod absent;
mod builder;
mod error;
mod flight;
mod hit;
mod invalidation;
mod lease;
mod load;
mod loader;
mod policy;
mod profile;
mod value;
mod warm;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::entry::Entry;
use crate::store::{SharedStore, Store};
pub use builder::{CacheBuilder, DEFAULT_MAX_REFRESHES};
pub use error::{JoinedError, LoadError};
use flight::FlightMap;
use invalidation::Invalidations;
pub(crate) use load::{Checked, Verdict};
pub use loader::Loader;
pub use policy::{DEFAULT_JITTER, DEFAULT_LOAD_TIMEOUT, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL, Policy};
pub use profile::{Profile, ProfileStats};
pub use value::{Fetched, Fill, Loaded, PendingFill};
pub(crate) use warm::Warmed;
pub use warm::{DEFAULT_WARM_CONCURRENCY, WARM_LOG_EVERY, WarmReport};

pub(crate) struct Inner<St> {
    pub(crate) store: St,
    flights: Arc<FlightMap>,
    refresh_permits: Arc<Semaphore>,
    invalidations: Invalidations,
    tasks: TaskTracker,
    cancel: CancellationToken,
    warm_concurrency: usize,
}

/// The cache handle every layer uses: a [`Store`] plus the engine's shared
/// state (in-flight loads, background refreshes). Cloning is cheap; clones
/// share everything, so give one `Cache` to the layers that must agree (a
/// read layer and the write layer that invalidates it).
///
/// - **Single-flight**: concurrent misses on one key make one loader call;
///   every waiter gets its result. A failed load is not stored and every
///   waiter gets the error. A waiter that goes away does not cancel the
///   load for the others. A load that panics or exceeds
///   [`Policy::load_timeout`] frees its key. The caller that loaded counts
///   as a miss, each waiter as coalesced ([`ProfileStats::coalesced`],
///   `tower_cache_requests_total{result="coalesced"}`).
/// - **One load per key across instances** over a store they share (an
///   L2), unless the policy turns it off
///   ([`Policy::cross_instance_lease`]): the leader of a miss takes the
///   key's [lease](crate::store::Store::lease) for its load timeout and
///   loads, or waits for the value of the instance holding it and serves
///   that (counted coalesced). It never waits for another instance longer
///   than the load timeout, loads at once when the store fails, and loads
///   anew when a remove of the key ends the lease. A lease holder slower
///   than its lease loses it, and another instance loads too.
/// - **Background refreshes** (stale-while-revalidate, refresh-ahead,
///   `XFetch`) run on tasks owned by the cache, one per key at a time, at
///   most [`CacheBuilder::max_refreshes`] at once (default 64); a refresh
///   that finds no free slot is skipped and tried again on a later read.
/// - **Invalidation wins over loads in flight**: a load that started
///   before [`Cache::remove`], [`Cache::remove_tag`] (of a tag its value
///   carries) or [`Cache::put`] on its key does not leave its result in
///   the store, so a reader that loaded the old value from the database
///   cannot put it back after a write deleted it. Callers that were already
///   waiting for that load still get its result. Over a store shared by
///   instances this holds across them for tag invalidations and for key
///   removes: a [`Cache::remove`] on one instance refuses the write of a
///   value another instance read before it (a tombstone in the store,
///   kept [`RedisStoreBuilder::max_load_time`](crate::store::RedisStoreBuilder::max_load_time);
///   a load longer than that can still store its old value).
/// - **After [`Cache::shutdown`]** loads run on the caller's task, so
///   requests still being served get answers.
/// - **Store trouble is a miss**: a store error never reaches the caller.
///
/// The store parameter defaults to [`SharedStore`], here and in every type
/// that carries one ([`CacheBuilder`], the layers and their services): a
/// cache built over `SharedStore::new(store)` is named without it, as in
/// `ReadThrough<UserRepo>` (see the
/// [read-through docs](crate::layer::read_through#in-an-axum-state)). A
/// cache built over a concrete store is typed after it
/// (`Cache::new(MemoryStore::default())` is a `Cache<MemoryStore>`), and
/// so are its layers: see [`Cache::new`].
pub struct Cache<St = SharedStore> {
    inner: Arc<Inner<St>>,
}

impl<St> Clone for Cache<St> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<St> fmt::Debug for Cache<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("store", &std::any::type_name::<St>())
            .finish()
    }
}

impl<St: Store> Cache<St> {
    /// The underlying store.
    pub fn store(&self) -> &St {
        &self.inner.store
    }

    /// Reads `key`, loading it with `load` when the policy says so.
    ///
    /// `T`, `E` and `Fut` are `load`'s [`Loader`] types, always inferred
    /// from it (they are spelled out so that the compiler can see the
    /// returned future is `Send`).
    ///
    /// `load` runs at most once per key at a time across all callers of
    /// this `Cache`: on a miss, the first caller's loader runs on a task of
    /// its own and the others wait for it. On a fresh hit `load` does not
    /// run, unless refresh-ahead or early refresh ask for a background
    /// reload; in the stale-while-revalidate window the stale entry is
    /// returned at once and `load` runs in the background.
    ///
    /// # Errors
    ///
    /// Only when there is no value to answer with (a stale one is served
    /// where the policy allows): [`LoadError::Origin`] with this caller's
    /// loader error, [`LoadError::Joined`] when the load it waited for
    /// failed, [`LoadError::Timeout`] past [`Policy::load_timeout`],
    /// [`LoadError::Aborted`] when the load panicked or the cache shut
    /// down. A store error never reaches the caller.
    pub async fn fetch<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: L,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        self.fetch_checked(key, profile, |_| true, load).await
    }

    /// [`Cache::fetch`], with `check` run on a stored entry before it is
    /// served. An entry `check` rejects (a payload the layer cannot decode)
    /// is removed and treated as a miss. `check` may keep what it decoded,
    /// so that a hit is decoded once.
    ///
    /// # Errors
    ///
    /// As [`Cache::fetch`].
    pub async fn fetch_checked<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
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
        match self.fetch_verdict(key, profile, check, load).await {
            Checked::Done(result) => result,
            Checked::Skipped(load) => Box::pin(self.load(key, profile, load, None, None)).await,
        }
    }

    /// Loads `key` without serving the stored entry (an HTTP request's
    /// `Cache-Control: no-cache`), still sharing a load already in flight.
    /// A loader that [can revalidate](Loader::can_revalidate) is handed
    /// the stored entry ([`Loader::revalidate`]).
    ///
    /// # Errors
    ///
    /// As [`Cache::fetch`].
    pub async fn reload<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        mut load: L,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        if load.can_revalidate()
            && let Ok(Some(stored)) = self.inner.store.get(key).await
        {
            load.revalidate(&stored);
        }
        self.load(key, profile, load, None, None).await
    }

    /// Stores `fill` under `key` as a fresh entry loaded now, under
    /// `profile`'s policy (write-through): as new as the write, so an
    /// invalidation made before this call never refuses it. A load of `key`
    /// already running does not overwrite it.
    pub async fn put(&self, key: &str, profile: &Profile, fill: Fill) {
        let entry = load::make_entry(profile.policy(), fill, clock::now_ms(), 0);
        self.inner.invalidations.key(key);
        if let Err(error) = self.inner.store.put(key, entry).await {
            tracing::debug!(cache = %profile.name(), key, %error, "store write failed");
        }
    }

    /// Removes `key`. A load of `key` already running does not store its
    /// result, and callers arriving after this call start a new load
    /// instead of waiting for that one. Store errors are logged, not
    /// returned.
    pub async fn remove(&self, key: &str) {
        self.inner.invalidations.key(key);
        self.inner.flights.forget(key);
        if let Err(error) = self.inner.store.remove(key).await {
            tracing::warn!(key, %error, "store remove failed");
        }
    }

    /// Invalidates every entry tagged `tag`. A load already running whose
    /// value carries `tag` does not store it. Store errors are logged, not
    /// returned.
    pub async fn remove_tag(&self, tag: &str) {
        self.inner.invalidations.tag(tag);
        if let Err(error) = self.inner.store.remove_tag(tag).await {
            tracing::warn!(tag, %error, "store tag invalidation failed");
        }
    }

    /// Runs `fut` on a task owned by this cache, stopped by
    /// [`Cache::shutdown`].
    pub(crate) fn spawn<Fut>(&self, name: &'static str, fut: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(tracing::Instrument::instrument(
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = fut => {}
                }
            },
            tracing::debug_span!("tower_cache.task", name),
        ));
    }

    /// Stops background refreshes and loads, and waits for their tasks to
    /// end. Callers waiting on a stopped load get [`LoadError::Aborted`].
    /// Afterwards no background work starts, and a miss runs its loader on
    /// the caller's own task, so requests still being served get answers.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests;
