//! Load orchestration: single flight, background refresh, and storing what a load produced unless an invalidation overtook it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::flight::{Flight, FlightGuard, Shared};
use super::policy::{Freshness, Policy};
use super::{Cache, Fetched, Fill, JoinedError, LoadError, Loaded, Loader, Profile};
use crate::clock;
use crate::entry::Entry;
use crate::store::Store;

/// What a layer's check says of a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serve it (subject to the freshness policy).
    Serve,
    /// It does not decode: remove it and load.
    Drop,
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "only HTTP's `Vary` variants skip an entry")
    )]
    /// Valid, but not for this caller (another HTTP `Vary` variant): leave
    /// it, and hand the loader back to the caller.
    Skip,
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "only HTTP request directives refuse an entry")
    )]
    /// Valid, but this caller wants a newer one (HTTP `max-age`,
    /// `min-fresh`): load, revalidating with it.
    Refresh,
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "only HTTP request directives accept stale")
    )]
    /// This caller takes it even stale (HTTP `max-stale`): serve it, and
    /// reload it in the background when it is not fresh.
    ServeStale,
}

/// The result of [`Cache::fetch_verdict`].
pub(crate) enum Checked<T, E, F> {
    Done(Result<Fetched<T>, LoadError<E>>),
    /// The check skipped the stored entry; the loader was not used.
    Skipped(F),
}

enum Role {
    Leader(FlightGuard),
    Waiter(Arc<Flight>),
}

// Every method here names the loader's types (`T`, `E`, `Fut`) with their
// bounds, rather than projecting `L::Value`, `L::Error`, `L::Future` from
// `L: Loader`: with projections, the future of a layer awaiting a fetch is
// no longer provably `Send` (rustc: "implementation of `Send` is not
// general enough").
impl<St: Store> Cache<St> {
    /// [`Cache::fetch_checked`] with a three-way check: an entry the check
    /// skips is left in place and the loader is handed back unused.
    pub(crate) async fn fetch_verdict<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        mut check: impl FnMut(&Entry) -> Verdict + Send,
        mut load: L,
    ) -> Checked<T, E, L>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
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
        let verdict = cached.as_ref().map(&mut check);
        match verdict {
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
            Some(Verdict::Serve | Verdict::Refresh | Verdict::ServeStale) | None => {}
        }
        let done = if let Some(entry) = cached {
            let freshness = profile.policy().classify(&entry, clock::now_ms());
            match (verdict, freshness) {
                (Some(Verdict::Refresh), freshness) => {
                    load.revalidate(&entry);
                    let stale = matches!(freshness, Freshness::Revalidate | Freshness::IfError)
                        .then_some(entry);
                    Box::pin(self.load(key, profile, load, stale, Some(&mut check))).await
                }
                (_, Freshness::Fresh { refresh }) => {
                    if refresh {
                        load.revalidate(&entry);
                        self.refresh(key, profile, load);
                    }
                    profile.record_hit();
                    tracing::trace!(cache = %profile.name(), key, "hit");
                    Ok(Fetched::Hit(entry))
                }
                (Some(Verdict::ServeStale), _) | (_, Freshness::Revalidate) => {
                    load.revalidate(&entry);
                    self.refresh(key, profile, load);
                    profile.record_stale();
                    tracing::debug!(cache = %profile.name(), key, "stale, revalidating");
                    Ok(Fetched::Stale(entry))
                }
                (_, Freshness::IfError) => {
                    load.revalidate(&entry);
                    Box::pin(self.load(key, profile, load, Some(entry), Some(&mut check))).await
                }
                (_, Freshness::Expired) => {
                    // Kept to be revalidated, though no longer served.
                    load.revalidate(&entry);
                    Box::pin(self.load(key, profile, load, None, Some(&mut check))).await
                }
            }
        } else {
            Box::pin(self.load(key, profile, load, None, Some(&mut check))).await
        };
        Checked::Done(done)
    }

    fn join_or_lead(&self, key: &str) -> Role {
        let mut flights = self
            .inner
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(flight) = flights.get(key) {
            return Role::Waiter(flight.clone());
        }
        let flight = Arc::new(Flight::new());
        flights.insert(key.into(), flight.clone());
        Role::Leader(FlightGuard::new(self.inner.flights.clone(), key, flight))
    }

    /// Starts a background reload of `key` unless one is running or the
    /// refresh limit is reached.
    fn refresh<L, T, E, Fut>(&self, key: &str, profile: &Profile, load: L)
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
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
            let _ = cache.run_load(guard, &profile, load, None).await;
        });
    }

    /// Runs `load` for the flight `guard` leads: stores a cacheable result,
    /// publishes the outcome to waiters, and returns what the leader gets.
    async fn run_load<L, T, E, Fut>(
        &self,
        mut guard: FlightGuard,
        profile: &Profile,
        load: L,
        version: Option<u64>,
    ) -> Result<Outcome<T>, LoadError<E>>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let (result, payload) = self.load_once(guard.key(), profile, load, version).await;
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
    /// `version` is the store's invalidation version if the caller read it
    /// just before (with its last read of the key); else it is read here.
    /// Returns the outcome and, for [`Loaded::Failed`], the loader's bytes.
    async fn load_once<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: L,
        version: Option<u64>,
    ) -> (Result<Outcome<T>, LoadError<E>>, Option<Bytes>)
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let generation = self.inner.invalidations.snapshot();
        // Read before the origin is: an invalidation made while the value
        // is read moves the store's version past it (across instances too).
        let version = match version {
            Some(version) => version,
            None => match self.inner.store.version().await {
                Ok(version) => version,
                Err(error) => {
                    tracing::debug!(cache = %profile.name(), key, %error, "store version read failed");
                    0
                }
            },
        };
        let started_ms = clock::now_ms();
        let started = Instant::now();
        let result = tokio::time::timeout(profile.policy().load_timeout, load.load()).await;
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
                let load_ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
                let entry =
                    make_entry(profile.policy(), fill, started_ms, load_ms).with_version(version);
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

    pub(super) async fn load<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: L,
        stale: Option<Entry>,
        recheck: Option<&mut (dyn FnMut(&Entry) -> Verdict + Send)>,
    ) -> Result<Fetched<T>, LoadError<E>>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let outcome: Result<Outcome<T>, LoadError<E>> = match self.join_or_lead(key) {
            Role::Leader(mut guard) => {
                // A load may have finished between this caller's read and
                // its taking the lead: read again before loading.
                let version = match recheck {
                    Some(check) => match self.recheck(key, profile, check).await {
                        Recheck::Hit(entry) => {
                            guard.finish(Shared::Stored(entry.clone()));
                            profile.record_hit();
                            tracing::trace!(cache = %profile.name(), key, "hit after a finished load");
                            return Ok(Fetched::Hit(entry));
                        }
                        Recheck::Miss(version) => version,
                    },
                    None => None,
                };
                tracing::trace!(cache = %profile.name(), key, "miss, loading");
                if self.inner.cancel.is_cancelled() {
                    // Shut down: no task would run the load; run it here.
                    self.run_load(guard, profile, load, version).await
                } else {
                    // The load runs on its own task so that this caller
                    // going away does not cancel it for the others.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let cache = self.clone();
                    let task_profile = profile.clone();
                    self.spawn("load", async move {
                        let result = cache.run_load(guard, &task_profile, load, version).await;
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
                    // The shared load was not cacheable: load alone.
                    Shared::Pass => self.load_once(key, profile, load, None).await.0,
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
            // Not merged with `Pass` above: the stale arm between decides
            // a failure first.
            #[expect(clippy::match_same_arms, reason = "the arm between them comes first")]
            (Ok(Outcome::Failed(value)), None) => Ok(Fetched::Passed(value)),
            (Err(error), None) => Err(error),
        };
        match &result {
            Ok(Fetched::Stale(_)) => profile.record_stale(),
            _ => profile.record_miss(),
        }
        result
    }

    /// Reads `key` again for a caller that just took the lead, with the
    /// store's invalidation version in the same call: a fresh entry
    /// `check` serves, or the version the load is to record.
    async fn recheck(
        &self,
        key: &str,
        profile: &Profile,
        check: &mut (dyn FnMut(&Entry) -> Verdict + Send),
    ) -> Recheck {
        let Ok((entry, version)) = self.inner.store.get_versioned(key).await else {
            return Recheck::Miss(None);
        };
        let served = entry.filter(|entry| {
            let fresh = matches!(
                profile.policy().classify(entry, clock::now_ms()),
                Freshness::Fresh { .. }
            );
            fresh && check(entry) == Verdict::Serve
        });
        match served {
            Some(entry) => Recheck::Hit(entry),
            None => Recheck::Miss(Some(version)),
        }
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

/// What a leader's second read found.
enum Recheck {
    /// A fresh entry to serve.
    Hit(Entry),
    /// Nothing to serve; the store's invalidation version, if it answered.
    Miss(Option<u64>),
}

/// What the caller that ran a load gets back.
enum Outcome<T> {
    Stored(Entry),
    Pass(T),
    Failed(T),
}

pub(super) fn make_entry(policy: &Policy, fill: Fill, loaded_at: u64, load_ms: u32) -> Entry {
    let ttl = if fill.negative {
        policy.negative_ttl
    } else {
        fill.ttl.unwrap_or(policy.ttl)
    };
    let ttl = if fill.jitter {
        policy.jittered(ttl)
    } else {
        ttl
    };
    let entry = Entry::new(fill.value)
        .with_stored_at(loaded_at.saturating_sub(clock::ms(fill.age)))
        .with_ttl(ttl);
    let entry = match fill.windows {
        Some((revalidate, if_error)) => entry.with_stale_windows(revalidate, if_error),
        // Kept past the policy's windows: pinned to them, so that
        // keeping it longer serves it no longer.
        None if !fill.keep.is_zero() => entry.with_stale_windows(policy.swr, policy.sie),
        None => entry.with_stale(policy.stale_window()),
    };
    entry
        .with_keep(fill.keep)
        .with_tags(fill.tags)
        .with_load_ms(load_ms)
}
