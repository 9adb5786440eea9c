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
//! use tower_cache::store::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = Cache::new(MemoryStore::default());
//! let profile = Profile::new("users", Policy::ttl(Duration::from_secs(30)));
//! let got = cache
//!     .fetch::<(), std::io::Error, _, _>("user:1", &profile, || async {
//!         Ok(Loaded::Store(Fill::new("Ada")))
//!     })
//!     .await
//!     .unwrap();
//! assert!(matches!(got, Fetched::Miss(_)));
//! let again = cache
//!     .fetch::<(), std::io::Error, _, _>("user:1", &profile, || async { unreachable!() })
//!     .await
//!     .unwrap();
//! assert_eq!(&again.entry().unwrap().value[..], b"Ada");
//! # }
//! ```

mod flight;
mod invalidation;
mod policy;
mod profile;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::entry::Entry;
use crate::store::{SharedStore, Store};
use flight::{Flight, FlightGuard, FlightMap, Shared};
use invalidation::Invalidations;
pub(crate) use policy::Freshness;
pub use policy::{DEFAULT_JITTER, DEFAULT_LOAD_TIMEOUT, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL, Policy};
pub use profile::{Profile, ProfileStats};

/// Default limit on background refreshes running at once: 64.
pub const DEFAULT_MAX_REFRESHES: usize = 64;

/// A value a loader wants stored.
#[derive(Debug, Clone)]
pub struct Fill {
    /// The bytes to store.
    pub value: Bytes,
    /// Tags to invalidate it by.
    pub tags: Vec<String>,
    /// A TTL for this value instead of the policy's (for example from an
    /// HTTP `max-age`). Jitter still applies.
    pub ttl: Option<Duration>,
    /// A "not found" result, kept for the policy's negative TTL.
    pub negative: bool,
}

impl Fill {
    /// A positive value with the policy's TTL and no tags.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Fill {
            value: value.into(),
            tags: Vec::new(),
            ttl: None,
            negative: false,
        }
    }

    /// Marks the value as a "not found" result (negative caching).
    pub fn negative(mut self) -> Self {
        self.negative = true;
        self
    }

    /// Sets the tags.
    pub fn with_tags(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }

    /// Overrides the policy's TTL for this value.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// What a loader produced.
#[derive(Debug)]
pub enum Loaded<T> {
    /// Store this value and serve it to every caller waiting on the key.
    Store(Fill),
    /// Not cacheable: hand `T` to the caller whose loader ran. Callers that
    /// waited on the same key run their own loaders (hit-for-pass).
    Pass(T),
    /// The origin answered with a failure (such as an HTTP 5xx): not
    /// stored; a stale entry is served instead where the policy allows.
    /// Waiting callers receive the optional bytes in
    /// [`LoadError::Joined`].
    Failed(T, Option<Bytes>),
}

/// How a fetch was answered.
#[derive(Debug)]
pub enum Fetched<T> {
    /// A fresh entry from the store.
    Hit(Entry),
    /// A stale entry (stale-while-revalidate, or stale-if-error after a
    /// failed reload).
    Stale(Entry),
    /// A freshly loaded and stored entry (by this caller or one it waited
    /// for).
    Miss(Entry),
    /// A loaded value that was not stored.
    Passed(T),
}

impl<T> Fetched<T> {
    /// The entry, unless the value was passed through.
    pub fn entry(&self) -> Option<&Entry> {
        match self {
            Fetched::Hit(e) | Fetched::Stale(e) | Fetched::Miss(e) => Some(e),
            Fetched::Passed(_) => None,
        }
    }
}

/// Why a fetch produced no value.
#[derive(Debug)]
pub enum LoadError<E> {
    /// This caller's loader failed with its own error.
    Origin(E),
    /// The load this caller waited for failed; the message (and, for
    /// [`Loaded::Failed`], the loader's bytes) are shared with every waiter.
    Joined(JoinedError),
    /// The load exceeded [`Policy::load_timeout`].
    Timeout,
    /// The load panicked or was cancelled.
    Aborted,
}

/// The shared failure of a load that several callers waited on.
#[derive(Debug, Clone)]
pub struct JoinedError {
    /// The loader's error message.
    pub message: Arc<str>,
    /// Bytes a [`Loaded::Failed`] result carried, for the layer to decode.
    pub payload: Option<Bytes>,
}

impl fmt::Display for JoinedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the shared load failed: {}", self.message)
    }
}

impl std::error::Error for JoinedError {}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Origin(e) => write!(f, "load failed: {e}"),
            LoadError::Joined(e) => e.fmt(f),
            LoadError::Timeout => f.write_str("load timed out"),
            LoadError::Aborted => f.write_str("load panicked or was cancelled"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for LoadError<E> {}

impl<E> LoadError<E> {
    /// Converts into a [`tower::BoxError`], keeping the origin's own error
    /// as it was.
    pub fn into_box_error(self) -> tower::BoxError
    where
        E: Into<tower::BoxError>,
    {
        match self {
            LoadError::Origin(e) => e.into(),
            LoadError::Joined(e) => Box::new(e),
            LoadError::Timeout => Box::new(LoadError::<std::convert::Infallible>::Timeout),
            LoadError::Aborted => Box::new(LoadError::<std::convert::Infallible>::Aborted),
        }
    }
}

pub(crate) struct Inner<S> {
    pub(crate) store: S,
    flights: Arc<FlightMap>,
    refresh_permits: Arc<Semaphore>,
    invalidations: Invalidations,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// What a layer's check says of a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serve it (subject to the freshness policy).
    Serve,
    /// It does not decode: remove it and load.
    Drop,
    /// Valid, but not for this caller (another HTTP `Vary` variant): leave
    /// it, and hand the loader back to the caller.
    Skip,
}

/// The result of [`Cache::fetch_verdict`].
pub(crate) enum Checked<T, E, F> {
    Done(Result<Fetched<T>, LoadError<E>>),
    /// The check skipped the stored entry; the loader was not used.
    Skipped(F),
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
///   [`Policy::load_timeout`] frees its key.
/// - **Background refreshes** (stale-while-revalidate, refresh-ahead,
///   XFetch) run on tasks owned by the cache, one per key at a time, at
///   most [`CacheBuilder::max_refreshes`] at once (default 64); a refresh
///   that finds no free slot is skipped and tried again on a later read.
/// - **Invalidation wins over loads in flight**: a load that started
///   before [`Cache::remove`], [`Cache::remove_tag`] (of a tag its value
///   carries) or [`Cache::put`] on its key does not leave its result in
///   the store, so a reader that loaded the old value from the database
///   cannot put it back after a write deleted it. Callers that were already
///   waiting for that load still get its result.
/// - **After [`Cache::shutdown`]** loads run on the caller's task, so
///   requests still being served get answers.
/// - **Store trouble is a miss**: a store error never reaches the caller.
pub struct Cache<S = SharedStore> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("store", &std::any::type_name::<S>())
            .finish()
    }
}

/// Builds a [`Cache`].
#[derive(Debug)]
pub struct CacheBuilder<S> {
    store: S,
    max_refreshes: usize,
}

impl<S: Store> CacheBuilder<S> {
    /// Background refreshes allowed at once. Default:
    /// [`DEFAULT_MAX_REFRESHES`] (64).
    pub fn max_refreshes(mut self, n: usize) -> Self {
        self.max_refreshes = n;
        self
    }

    /// Builds the cache.
    pub fn build(self) -> Cache<S> {
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

enum Role {
    Leader(FlightGuard),
    Waiter(Arc<Flight>),
}

impl<S: Store> Cache<S> {
    /// A cache over `store` with the defaults.
    pub fn new(store: S) -> Self {
        Self::builder(store).build()
    }

    /// A builder over `store`.
    pub fn builder(store: S) -> CacheBuilder<S> {
        CacheBuilder {
            store,
            max_refreshes: DEFAULT_MAX_REFRESHES,
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Reads `key`, loading it with `load` when the policy says so.
    ///
    /// `load` runs at most once per key at a time across all callers of
    /// this `Cache`: on a miss, the first caller's loader runs on a task of
    /// its own and the others wait for it. On a fresh hit `load` does not
    /// run, unless refresh-ahead or early refresh ask for a background
    /// reload; in the stale-while-revalidate window the stale entry is
    /// returned at once and `load` runs in the background.
    pub async fn fetch<T, E, F, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: F,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
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
    pub async fn fetch_checked<T, E, F, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        mut check: impl FnMut(&Entry) -> bool + Send,
        load: F,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
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

    /// [`Cache::fetch_checked`] with a three-way check: an entry the check
    /// skips is left in place and the loader is handed back unused.
    pub(crate) async fn fetch_verdict<T, E, F, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        mut check: impl FnMut(&Entry) -> Verdict + Send,
        load: F,
    ) -> Checked<T, E, F>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let mut cached = match self.inner.store.get(key).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(cache = %profile.name(), key, %error, "store read failed; treating as a miss");
                None
            }
        };
        match cached.as_ref().map(&mut check) {
            Some(Verdict::Drop) => {
                tracing::warn!(cache = %profile.name(), key, "dropping a cached value that does not decode");
                metrics::counter!("tower_cache_undecodable_total", "cache" => profile.name().to_owned())
                    .increment(1);
                if let Err(error) = self.inner.store.remove(key).await {
                    tracing::debug!(key, %error, "store remove failed");
                }
                cached = None;
            }
            Some(Verdict::Skip) => return Checked::Skipped(load),
            Some(Verdict::Serve) | None => {}
        }
        let done = if let Some(entry) = cached {
            match profile.policy().classify(&entry, clock::now_ms()) {
                Freshness::Fresh { refresh } => {
                    if refresh {
                        self.refresh(key, profile, load);
                    }
                    profile.record_hit();
                    tracing::trace!(cache = %profile.name(), key, "hit");
                    Ok(Fetched::Hit(entry))
                }
                Freshness::Revalidate => {
                    self.refresh(key, profile, load);
                    profile.record_stale();
                    tracing::debug!(cache = %profile.name(), key, "stale, revalidating");
                    Ok(Fetched::Stale(entry))
                }
                Freshness::IfError => {
                    Box::pin(self.load(key, profile, load, Some(entry), Some(&mut check))).await
                }
                Freshness::Expired => {
                    Box::pin(self.load(key, profile, load, None, Some(&mut check))).await
                }
            }
        } else {
            Box::pin(self.load(key, profile, load, None, Some(&mut check))).await
        };
        Checked::Done(done)
    }

    /// Loads `key` without reading the stored entry (an HTTP request's
    /// `Cache-Control: no-cache`), still sharing a load already in flight.
    pub async fn reload<T, E, F, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: F,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        self.load(key, profile, load, None, None).await
    }

    /// Stores `fill` under `key` as a fresh entry loaded now, under
    /// `profile`'s policy (write-through). A load of `key` already running
    /// does not overwrite it.
    pub async fn put(&self, key: &str, profile: &Profile, fill: Fill) {
        let entry = make_entry(profile.policy(), fill, clock::now_ms(), 0);
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
        {
            let mut flights = self
                .inner
                .flights
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            flights.remove(key);
        }
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
                    _ = cancel.cancelled() => {}
                    _ = fut => {}
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

    fn join_or_lead(&self, key: &str) -> Role {
        let mut flights = self
            .inner
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(flight) = flights.get(key) {
            return Role::Waiter(flight.clone());
        }
        let flight = Arc::new(Flight::new());
        flights.insert(key.into(), flight.clone());
        Role::Leader(FlightGuard::new(self.inner.flights.clone(), key, flight))
    }

    /// Starts a background reload of `key` unless one is running or the
    /// refresh limit is reached.
    fn refresh<T, E, F, Fut>(&self, key: &str, profile: &Profile, load: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let Ok(permit) = self.inner.refresh_permits.clone().try_acquire_owned() else {
            profile.record_refresh_skipped();
            return;
        };
        let Role::Leader(guard) = self.join_or_lead(key) else {
            return; // a load for this key is already running
        };
        profile.record_refresh();
        tracing::debug!(cache = %profile.name(), key, "background refresh");
        let cache = self.clone();
        let profile = profile.clone();
        self.spawn("refresh", async move {
            let _permit = permit;
            let _ = cache.run_load(guard, &profile, load).await;
        });
    }

    /// Runs `load` for the flight `guard` leads: stores a cacheable result,
    /// publishes the outcome to waiters, and returns what the leader gets.
    async fn run_load<T, E, F, Fut>(
        &self,
        mut guard: FlightGuard,
        profile: &Profile,
        load: F,
    ) -> Result<Outcome<T>, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: fmt::Display,
    {
        let (result, payload) = self.load_once(guard.key(), profile, load).await;
        guard.finish(match &result {
            Ok(Outcome::Stored(entry)) => Shared::Stored(entry.clone()),
            Ok(Outcome::Pass(_)) => Shared::Pass,
            Ok(Outcome::Failed(_)) => Shared::Failed(JoinedError {
                message: "the origin answered with a failure".into(),
                payload,
            }),
            Err(LoadError::Origin(error)) => Shared::Failed(JoinedError {
                message: error.to_string().into(),
                payload: None,
            }),
            Err(_) => Shared::Timeout,
        });
        result
    }

    /// Runs `load` once under the load timeout, records it, and stores a
    /// cacheable result unless its key or tags were invalidated meanwhile.
    /// Returns the outcome and, for [`Loaded::Failed`], the loader's bytes.
    async fn load_once<T, E, F, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: F,
    ) -> (Result<Outcome<T>, LoadError<E>>, Option<Bytes>)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: fmt::Display,
    {
        let started_ms = clock::now_ms();
        let started = Instant::now();
        let generation = self.inner.invalidations.snapshot();
        let result = tokio::time::timeout(profile.policy().load_timeout, load()).await;
        let took = started.elapsed();
        profile.record_load(took);
        match result {
            Err(_) => {
                profile.record_load_error();
                tracing::warn!(cache = %profile.name(), key, "load timed out");
                (Err(LoadError::Timeout), None)
            }
            Ok(Err(error)) => {
                profile.record_load_error();
                tracing::debug!(cache = %profile.name(), key, %error, "load failed");
                (Err(LoadError::Origin(error)), None)
            }
            Ok(Ok(Loaded::Store(fill))) => {
                let load_ms = took.as_millis().min(u32::MAX as u128) as u32;
                let entry = make_entry(profile.policy(), fill, started_ms, load_ms);
                self.store_loaded(key, profile, &entry, generation).await;
                (Ok(Outcome::Stored(entry)), None)
            }
            Ok(Ok(Loaded::Pass(value))) => (Ok(Outcome::Pass(value)), None),
            Ok(Ok(Loaded::Failed(value, payload))) => {
                profile.record_load_error();
                (Ok(Outcome::Failed(value)), payload)
            }
        }
    }

    async fn load<T, E, F, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: F,
        stale: Option<Entry>,
        recheck: Option<&mut (dyn FnMut(&Entry) -> Verdict + Send)>,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let outcome: Result<Outcome<T>, LoadError<E>> = match self.join_or_lead(key) {
            Role::Leader(mut guard) => {
                // A load may have finished between this caller's read and
                // its taking the lead: read again before loading.
                let rechecked = match recheck {
                    Some(check) => self.recheck(key, profile, check).await,
                    None => None,
                };
                if let Some(entry) = rechecked {
                    guard.finish(Shared::Stored(entry.clone()));
                    profile.record_hit();
                    tracing::trace!(cache = %profile.name(), key, "hit after a finished load");
                    return Ok(Fetched::Hit(entry));
                }
                tracing::trace!(cache = %profile.name(), key, "miss, loading");
                if self.inner.cancel.is_cancelled() {
                    // Shut down: no task would run the load; run it here.
                    self.run_load(guard, profile, load).await
                } else {
                    // The load runs on its own task so that this caller
                    // going away does not cancel it for the others.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let cache = self.clone();
                    let task_profile = profile.clone();
                    self.spawn("load", async move {
                        let result = cache.run_load(guard, &task_profile, load).await;
                        let _ = tx.send(result);
                    });
                    rx.await.unwrap_or(Err(LoadError::Aborted))
                }
            }
            Role::Waiter(flight) => {
                profile.record_joined();
                tracing::trace!(cache = %profile.name(), key, "miss, waiting for the load in flight");
                match flight.wait().await {
                    Shared::Stored(entry) => Ok(Outcome::Stored(entry)),
                    Shared::Pass => self.load_alone(key, profile, load).await,
                    Shared::Failed(e) => Err(LoadError::Joined(e)),
                    Shared::Timeout => Err(LoadError::Timeout),
                    Shared::Aborted => Err(LoadError::Aborted),
                }
            }
        };
        let result = match (outcome, stale) {
            (Ok(Outcome::Stored(entry)), _) => Ok(Fetched::Miss(entry)),
            (Ok(Outcome::Pass(value)), _) => Ok(Fetched::Passed(value)),
            (Ok(Outcome::Failed(_)) | Err(_), Some(entry)) => {
                tracing::debug!(cache = %profile.name(), key, "reload failed; serving stale");
                Ok(Fetched::Stale(entry))
            }
            (Ok(Outcome::Failed(value)), None) => Ok(Fetched::Passed(value)),
            (Err(error), None) => Err(error),
        };
        match &result {
            Ok(Fetched::Stale(_)) => profile.record_stale(),
            _ => profile.record_miss(),
        }
        result
    }

    /// Loads without single-flight, for a caller whose shared load turned
    /// out not cacheable.
    async fn load_alone<T, E, F, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: F,
    ) -> Result<Outcome<T>, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: fmt::Display,
    {
        self.load_once(key, profile, load).await.0
    }

    /// Reads `key` again for a caller that just took the lead: a fresh
    /// entry `check` serves, or `None`.
    async fn recheck(
        &self,
        key: &str,
        profile: &Profile,
        check: &mut (dyn FnMut(&Entry) -> Verdict + Send),
    ) -> Option<Entry> {
        let entry = self.inner.store.get(key).await.ok().flatten()?;
        let fresh = matches!(
            profile.policy().classify(&entry, clock::now_ms()),
            Freshness::Fresh { .. }
        );
        (fresh && check(&entry) == Verdict::Serve).then_some(entry)
    }

    /// Stores what a load that started at `generation` produced, unless
    /// its key or one of its tags was invalidated since. The check runs
    /// again after the write: an invalidation that raced with it removes
    /// the entry.
    async fn store_loaded(&self, key: &str, profile: &Profile, entry: &Entry, generation: u64) {
        let invalidations = &self.inner.invalidations;
        if invalidations.since(generation, key, &entry.tags) {
            tracing::debug!(cache = %profile.name(), key, "invalidated while loading; not stored");
            return;
        }
        if let Err(error) = self.inner.store.put(key, entry.clone()).await {
            tracing::debug!(cache = %profile.name(), key, %error, "store write failed");
            return;
        }
        if invalidations.since(generation, key, &entry.tags) {
            tracing::debug!(cache = %profile.name(), key, "invalidated while storing; removed");
            if let Err(error) = self.inner.store.remove(key).await {
                tracing::debug!(key, %error, "store remove failed");
            }
        }
    }
}

/// What the caller that ran a load gets back.
enum Outcome<T> {
    Stored(Entry),
    Pass(T),
    Failed(T),
}

fn make_entry(policy: &Policy, fill: Fill, stored_at: u64, load_ms: u32) -> Entry {
    let ttl = if fill.negative {
        policy.negative_ttl
    } else {
        fill.ttl.unwrap_or(policy.ttl)
    };
    Entry::new(fill.value)
        .with_stored_at(stored_at)
        .with_ttl(policy.jittered(ttl))
        .with_stale(policy.stale_window())
        .with_tags(fill.tags)
        .with_load_ms(load_ms)
}

#[cfg(test)]
mod tests;
