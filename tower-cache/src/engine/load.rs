//! Load orchestration: single flight, background refresh, and storing what a load produced unless an invalidation overtook it.

use std::fmt;
use std::future::Future;
use std::time::Instant;

use bytes::Bytes;

use super::flight::{FlightGuard, FlightMap, Role, Shared};
use super::invalidation::Guarded;
use super::lease::Leased;
use super::policy::{Freshness, Policy};
use super::{Cache, Fetched, Fill, JoinedError, LoadError, Loaded, Loader, PendingFill, Profile};
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
        check: impl FnMut(&Entry) -> Verdict + Send,
        load: L,
    ) -> Checked<T, E, L>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let cached = self.read_entry(key, profile).await;
        self.fetch_found(key, profile, cached, check, load).await
    }

    /// The entry under `key`; a store error reads as a miss.
    pub(crate) async fn read_entry(&self, key: &str, profile: &Profile) -> Option<Entry> {
        match self.inner.store.get(key).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(cache = %profile.name(), key, %error, "store read failed; treating as a miss");
                None
            }
        }
    }

    /// Whether `entry`, just read, is a hit under `profile` at `now`:
    /// fresh and due for no refresh. The caller that answers with it counts
    /// the hit; any other entry goes to [`Cache::fetch_found`], which
    /// decides the rest.
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "the HTTP layer's read")
    )]
    pub(crate) fn is_hit(entry: &Entry, profile: &Profile, now: u64) -> bool {
        matches!(
            profile.policy().classify(entry, now),
            Freshness::Fresh { refresh: false }
        )
    }

    /// [`Cache::fetch_verdict`] for an entry the caller has read already
    /// ([`Cache::read_entry`]), so that the store is read once.
    pub(crate) async fn fetch_found<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        mut cached: Option<Entry>,
        mut check: impl FnMut(&Entry) -> Verdict + Send,
        mut load: L,
    ) -> Checked<T, E, L>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let verdict = cached.as_ref().map(&mut check);
        match verdict {
            Some(Verdict::Drop) => {
                tracing::warn!(cache = %profile.name(), key, "dropping a cached value that does not decode");
                profile.record_undecodable();
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
        FlightMap::join_or_lead(&self.inner.flights, key)
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
            let mut guard = guard;
            // A reload that ended between this caller's read and its
            // flight left a fresh entry: nothing to reload.
            if let Ok(Some(entry)) = cache.inner.store.get(guard.key()).await
                && matches!(
                    profile.policy().classify(&entry, clock::now_ms()),
                    Freshness::Fresh { refresh: false }
                )
            {
                guard.finish(Shared::Stored(entry));
                return;
            }
            let (value, streamed) = cache.run_load(guard, &profile, load, None, true).await;
            // No caller reads a streamed value: it is read to its end for
            // the store alone.
            drop(value);
            if let Some(streamed) = streamed {
                cache.store_streamed(&profile, streamed).await;
            }
        });
    }

    /// Runs `load` for the flight `guard` leads: stores a cacheable result,
    /// publishes the outcome to waiters, and returns what the leader gets.
    /// With `across`, the load is first leased across instances: a value
    /// another instance loaded meanwhile is served without loading (see
    /// [`Cache::lease_or_wait`]).
    /// A streamed value ([`Loaded::Streaming`]) is returned at once, with
    /// its store still to come and the flight it is to finish: the caller
    /// awaits it with [`Cache::store_streamed`], or
    /// [`abandons`](Streamed::abandon) it.
    async fn run_load<L, T, E, Fut>(
        &self,
        mut guard: FlightGuard,
        profile: &Profile,
        load: L,
        version: Option<u64>,
        across: bool,
    ) -> (Result<Outcome<T>, LoadError<E>>, Option<Streamed>)
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let (version, token) = if across {
            match self.lease_or_wait(guard.key(), profile, version).await {
                Leased::Found(entry) => {
                    guard.finish(Shared::Stored(entry.clone()));
                    return (Ok(Outcome::Joined(entry)), None);
                }
                Leased::Load { version, token } => (version, token),
            }
        } else {
            (version, None)
        };
        let loaded = self
            .load_once(guard.key(), profile, load, version, token)
            .await;
        let (result, shared) = match loaded {
            Ok(Produced::Streaming(value, filling)) => {
                let streamed = Streamed {
                    guard: Some(guard),
                    filling,
                };
                return (Ok(Outcome::Pass(value)), Some(streamed));
            }
            Ok(Produced::Stored(entry)) => {
                (Ok(Outcome::Stored(entry.clone())), Shared::Stored(entry))
            }
            Ok(Produced::Pass(value)) => (Ok(Outcome::Pass(value)), Shared::Pass),
            Ok(Produced::Failed(value, payload)) => (
                Ok(Outcome::Failed(value)),
                Shared::Failed(JoinedError {
                    message: "the origin answered with a failure".into(),
                    payload,
                }),
            ),
            Err(LoadError::Origin(error)) => {
                let shared = Shared::Failed(JoinedError {
                    message: error.to_string().into(),
                    payload: None,
                });
                (Err(LoadError::Origin(error)), shared)
            }
            Err(error) => (Err(error), Shared::Timeout),
        };
        guard.finish(shared);
        (result, None)
    }

    /// Runs `load` once under the load timeout, records it, and stores a
    /// cacheable result unless its key or tags were invalidated meanwhile.
    /// `version` is the store's invalidation version if the caller read it
    /// just before (with its last read of the key); else it is read here.
    /// A streamed value comes back with what storing it later needs. The
    /// key's lease `token` holds, if any, is released once the load is
    /// done (with the write of its value when there is one).
    async fn load_once<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: L,
        version: Option<u64>,
        token: Option<u64>,
    ) -> Result<Produced<T>, LoadError<E>>
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
        let timer = tokio::time::Instant::now();
        let result = tokio::time::timeout(profile.policy().load_timeout, load.load()).await;
        let took = started.elapsed();
        if !matches!(result, Ok(Ok(Loaded::Store(_) | Loaded::Streaming(..)))) {
            self.release(key, profile, token).await;
        }
        match result {
            Err(_) => {
                profile.record_load(took);
                profile.record_load_error();
                tracing::warn!(cache = %profile.name(), key, "load timed out");
                Err(LoadError::Timeout)
            }
            Ok(Err(error)) => {
                profile.record_load(took);
                profile.record_load_error();
                tracing::debug!(cache = %profile.name(), key, %error, "load failed");
                Err(LoadError::Origin(error))
            }
            Ok(Ok(Loaded::Store(fill))) => {
                profile.record_load(took);
                let load_ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
                let entry =
                    make_entry(profile.policy(), fill, started_ms, load_ms).with_version(version);
                self.store_loaded(key, profile, &entry, generation, token)
                    .await;
                Ok(Produced::Stored(entry))
            }
            Ok(Ok(Loaded::Pass(value))) => {
                profile.record_load(took);
                Ok(Produced::Pass(value))
            }
            Ok(Ok(Loaded::Failed(value, payload))) => {
                profile.record_load(took);
                profile.record_load_error();
                Ok(Produced::Failed(value, payload))
            }
            // Recorded once the value is read whole.
            Ok(Ok(Loaded::Streaming(value, fill))) => Ok(Produced::Streaming(
                value,
                Filling {
                    fill,
                    key: key.into(),
                    generation,
                    version,
                    token,
                    started_ms,
                    started,
                    timer,
                },
            )),
        }
    }

    /// Runs `load` outside any flight, for a caller whose shared load was
    /// not cacheable. A streamed value is stored on a task of its own.
    async fn load_alone<L, T, E, Fut>(
        &self,
        key: &str,
        profile: &Profile,
        load: L,
    ) -> Result<Outcome<T>, LoadError<E>>
    where
        L: Loader<Value = T, Error = E, Future = Fut>,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let produced = self.load_once(key, profile, load, None, None).await?;
        Ok(match produced {
            Produced::Stored(entry) => Outcome::Stored(entry),
            Produced::Pass(value) => Outcome::Pass(value),
            Produced::Failed(value, _) => Outcome::Failed(value),
            Produced::Streaming(value, filling) => {
                let streamed = Streamed {
                    guard: None,
                    filling,
                };
                if self.inner.cancel.is_cancelled() {
                    streamed.abandon();
                } else {
                    let cache = self.clone();
                    let profile = profile.clone();
                    self.spawn("fill", async move {
                        cache.store_streamed(&profile, streamed).await;
                    });
                }
                Outcome::Pass(value)
            }
        })
    }

    /// Awaits the fill of a streamed load, within what is left of the load
    /// timeout, stores it as [`Cache::load_once`] stores a loaded value
    /// (the version read and the invalidations counted from before the
    /// load started), and finishes its flight: the entry for the waiters,
    /// `Pass` when there is nothing to store, `Timeout` past the deadline.
    async fn store_streamed(&self, profile: &Profile, streamed: Streamed) {
        let Streamed { guard, filling } = streamed;
        let Filling {
            fill: mut pending,
            key,
            generation,
            version,
            token,
            started_ms,
            started,
            timer,
        } = filling;
        let key = &*key;
        let left = profile
            .policy()
            .load_timeout
            .saturating_sub(timer.elapsed());
        let result = tokio::time::timeout(left, &mut pending).await;
        let took = started.elapsed();
        profile.record_load(took);
        let shared = match result {
            Err(_) => {
                profile.record_load_error();
                tracing::warn!(cache = %profile.name(), key, "load timed out while its value streamed");
                Shared::Timeout
            }
            Ok(None) => {
                tracing::debug!(cache = %profile.name(), key, "streamed value not stored");
                Shared::Pass
            }
            Ok(Some(fill)) => {
                let load_ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
                let entry =
                    make_entry(profile.policy(), fill, started_ms, load_ms).with_version(version);
                self.store_loaded(key, profile, &entry, generation, token)
                    .await;
                Shared::Stored(entry)
            }
        };
        if !matches!(shared, Shared::Stored(_)) {
            self.release(key, profile, token).await;
        }
        if let Some(mut guard) = guard {
            guard.finish(shared);
        }
        // Last: what it holds back for its caller (the end of a body) is
        // released once the value is stored and the waiters have it.
        drop(pending);
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
        // Whether this caller's answer is another caller's load, waited for.
        let mut coalesced = false;
        // A reload (no recheck: the caller wants the origin's answer, not
        // the stored one) takes no lease: waiting would serve the stored
        // entry.
        let across = recheck.is_some();
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
                    // Nor would one await a streamed value's store.
                    let (result, streamed) =
                        self.run_load(guard, profile, load, version, across).await;
                    if let Some(streamed) = streamed {
                        streamed.abandon();
                    }
                    result
                } else {
                    // The load runs on its own task so that this caller
                    // going away does not cancel it for the others; the
                    // store of a streamed value follows on the same task,
                    // once this caller has its value.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let cache = self.clone();
                    let task_profile = profile.clone();
                    self.spawn("load", async move {
                        let (result, streamed) = cache
                            .run_load(guard, &task_profile, load, version, across)
                            .await;
                        let _ = tx.send(result);
                        if let Some(streamed) = streamed {
                            cache.store_streamed(&task_profile, streamed).await;
                        }
                    });
                    rx.await.unwrap_or(Err(LoadError::Aborted))
                }
            }
            Role::Waiter(flight) => {
                profile.record_joined();
                tracing::trace!(cache = %profile.name(), key, "miss, waiting for the load in flight");
                let shared = flight.wait().await;
                coalesced = !matches!(shared, Shared::Pass);
                match shared {
                    Shared::Stored(entry) => Ok(Outcome::Stored(entry)),
                    // The shared load was not cacheable: load alone.
                    Shared::Pass => self.load_alone(key, profile, load).await,
                    Shared::Failed(e) => Err(LoadError::Joined(e)),
                    Shared::Timeout => Err(LoadError::Timeout),
                    Shared::Aborted => Err(LoadError::Aborted),
                }
            }
        };
        if matches!(outcome, Ok(Outcome::Joined(_))) {
            coalesced = true;
        }
        let result = match (outcome, stale) {
            (Ok(Outcome::Stored(entry) | Outcome::Joined(entry)), _) => Ok(Fetched::Miss(entry)),
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
            _ if coalesced => profile.record_coalesced(),
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
    /// its key or one of its tags was invalidated since, and releases the
    /// key's lease `token` holds. The check runs again after the write: an
    /// invalidation that raced with it removes the entry.
    async fn store_loaded(
        &self,
        key: &str,
        profile: &Profile,
        entry: &Entry,
        generation: u64,
        token: Option<u64>,
    ) {
        let store = &self.inner.store;
        let guarded = self
            .inner
            .invalidations
            .store_unless_invalidated(
                generation,
                key,
                entry.tags(),
                || async move {
                    match token {
                        Some(token) => store.put_released(key, entry.clone(), token).await,
                        None => store.put(key, entry.clone()).await,
                    }
                },
                || store.remove(key),
            )
            .await;
        let name = profile.name();
        match guarded {
            Guarded::Stored => {}
            Guarded::Overtaken => {
                tracing::debug!(cache = %name, key, "invalidated while loading; not stored");
                self.release(key, profile, token).await;
            }
            Guarded::Failed(error) => {
                tracing::debug!(cache = %name, key, %error, "store write failed");
            }
            Guarded::Removed(error) => {
                tracing::debug!(cache = %name, key, "invalidated while storing; removed");
                if let Some(error) = error {
                    tracing::debug!(key, %error, "store remove failed");
                }
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
    /// Another instance's load, waited for: no loader ran here.
    Joined(Entry),
    Pass(T),
    Failed(T),
}

/// What one run of a loader produced.
enum Produced<T> {
    Stored(Entry),
    Pass(T),
    /// With the loader's bytes for the waiters.
    Failed(T, Option<Bytes>),
    /// The caller's value now, the store later.
    Streaming(T, Filling),
}

/// The store a streamed load is still to make: its pending fill, and what
/// was read before the load started to store it with.
struct Filling {
    fill: PendingFill,
    key: Box<str>,
    generation: u64,
    version: u64,
    /// The key's lease, released once the value is stored.
    token: Option<u64>,
    started_ms: u64,
    /// When the load started, for its duration.
    started: Instant,
    /// When the load started, on tokio's clock, for its timeout.
    timer: tokio::time::Instant,
}

/// A streamed load's store still to come, and the flight it finishes
/// (none for a caller that loaded alone).
struct Streamed {
    guard: Option<FlightGuard>,
    filling: Filling,
}

impl Streamed {
    /// Gives up the store: the pending fill is dropped and the flight's
    /// waiters load for themselves.
    fn abandon(self) {
        if let Some(mut guard) = self.guard {
            guard.finish(Shared::Pass);
        }
    }
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
