//! One load per key across instances: the leader of a key's in-process flight takes the store's lease on the key before it loads, or waits for the value of the instance that holds it.
//!
//! The wait polls the store for the key, every 10 ms at first and at
//! most every 100 ms, and ends:
//! - with a fresh entry, which the flight serves without a load;
//! - when the lease is free again (released, expired, or dropped by a
//!   remove of the key) and this leader takes it: it loads, unless the
//!   store says the key has a value and it is fresh (its holder stored it
//!   and released the lease between this leader's look and its lease),
//!   which it serves;
//! - at the load timeout, or at the first store error: it loads without
//!   the lease (the in-process single flight still holds).

use std::time::Duration;

use super::Profile;
use super::policy::Freshness;
use crate::Cache;
use crate::clock;
use crate::entry::Entry;
use crate::store::{Lease, Store};

/// The first pause between two looks at a key another instance loads.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two looks.
const MAX_PAUSE: Duration = Duration::from_millis(100);
/// How much longer than the holder's load timeout a lease is taken for:
/// the holder's load has ended (done or timed out) before the lease can
/// expire and another instance take it, so two instances never load a
/// key at once under live leases (the model in
/// `store/redis/protocol.pml` assumes it).
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// What a leader does once it has asked for the key's lease.
pub(super) enum Leased {
    /// Load: holding the lease under `token`, or without one. `version`
    /// is the one read with the key before the lease was asked for, if
    /// the load may still record it (none after a wait: the load reads it
    /// again).
    Load {
        version: Option<u64>,
        token: Option<u64>,
    },
    /// Another instance loaded the key: its entry.
    Found(Entry),
}

impl<St: Store> Cache<St> {
    /// Takes `key`'s lease for the load timeout (and a margin), or waits for the value of
    /// the instance that holds it (see the module docs). Without the
    /// policy's [`cross_instance_lease`](super::Policy::cross_instance_lease),
    /// or over a store not shared between instances, the load goes ahead
    /// at once.
    pub(super) async fn lease_or_wait(
        &self,
        key: &str,
        profile: &Profile,
        version: Option<u64>,
    ) -> Leased {
        let policy = profile.policy();
        if !policy.lease {
            return Leased::Load {
                version,
                token: None,
            };
        }
        let store = &self.inner.store;
        let ttl = policy.load_timeout;
        let lease_ttl = ttl + LEASE_MARGIN;
        let token = rand::random::<u64>();
        match store.lease(key, token, lease_ttl).await {
            Ok(Lease::Granted) => {
                return Leased::Load {
                    version,
                    token: Some(token),
                };
            }
            Ok(Lease::GrantedOverValue) => {
                return self.reread(key, profile, token, version).await;
            }
            Ok(Lease::Taken) => {}
            Ok(_) => {
                return Leased::Load {
                    version,
                    token: None,
                };
            }
            Err(error) => {
                tracing::debug!(cache = %profile.name(), key, %error, "lease unavailable; loading");
                return Leased::Load {
                    version,
                    token: None,
                };
            }
        }
        tracing::trace!(cache = %profile.name(), key, "another instance loads; waiting for its value");
        let deadline = tokio::time::Instant::now() + ttl;
        let mut pause = FIRST_PAUSE;
        let alone = Leased::Load {
            version: None,
            token: None,
        };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::debug!(cache = %profile.name(), key, "waited the load timeout for another instance; loading");
                return alone;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
            match store.get(key).await {
                Ok(Some(entry))
                    if matches!(
                        policy.classify(&entry, clock::now_ms()),
                        Freshness::Fresh { .. }
                    ) =>
                {
                    return Leased::Found(entry);
                }
                Ok(_) => {}
                Err(_) => return alone,
            }
            match store.lease(key, token, lease_ttl).await {
                Ok(Lease::Granted) => {
                    return Leased::Load {
                        version: None,
                        token: Some(token),
                    };
                }
                Ok(Lease::GrantedOverValue) => {
                    return self.reread(key, profile, token, None).await;
                }
                Ok(Lease::Taken) => {}
                Ok(_) | Err(_) => return alone,
            }
        }
    }

    /// Holding `key`'s lease under `token` while the key has a value in
    /// the store: serves it if it is fresh (a holder stored it between
    /// this leader's last read and its lease), giving the lease up; loads
    /// otherwise (a stale value being refreshed, or a read that fails).
    async fn reread(
        &self,
        key: &str,
        profile: &Profile,
        token: u64,
        version: Option<u64>,
    ) -> Leased {
        if let Ok(Some(entry)) = self.inner.store.get(key).await
            && matches!(
                profile.policy().classify(&entry, clock::now_ms()),
                Freshness::Fresh { .. }
            )
        {
            self.release(key, profile, Some(token)).await;
            return Leased::Found(entry);
        }
        Leased::Load {
            version,
            token: Some(token),
        }
    }

    /// Gives up the lease `token` holds on `key`, if any. A failure is
    /// left to the lease's expiry.
    pub(super) async fn release(&self, key: &str, profile: &Profile, token: Option<u64>) {
        if let Some(token) = token
            && let Err(error) = self.inner.store.release(key, token).await
        {
            tracing::debug!(cache = %profile.name(), key, %error, "lease release failed; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;
    use crate::store::{MemoryStore, StoreError};
    use crate::{Fetched, Fill, Loaded, Policy};

    /// A store as an instance sees it while another instance holds every
    /// lease (or while the lease cannot be asked for): a real L1 behind,
    /// the lease answered as told, releases recorded.
    struct Remote {
        inner: MemoryStore,
        lease: Result<Lease, ()>,
        released: Mutex<Vec<u64>>,
        /// What a holder stores (and releases its lease with) just before
        /// the lease is asked for, if anything.
        stored_before_lease: Mutex<Option<Entry>>,
    }

    impl Remote {
        fn new(lease: Result<Lease, ()>) -> Arc<Self> {
            Arc::new(Remote {
                inner: MemoryStore::default(),
                lease,
                released: Mutex::new(Vec::new()),
                stored_before_lease: Mutex::new(None),
            })
        }
    }

    impl Store for Remote {
        async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
            self.inner.put(key, entry).await
        }
        async fn remove(&self, key: &str) -> Result<(), StoreError> {
            self.inner.remove(key).await
        }
        async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
            self.inner.remove_tag(tag).await
        }
        async fn lease(&self, key: &str, _: u64, _: Duration) -> Result<Lease, StoreError> {
            let stored = self.stored_before_lease.lock().unwrap().take();
            if let Some(entry) = stored {
                self.inner.put(key, entry).await?;
            }
            self.lease.map_err(|()| StoreError::Unavailable)
        }
        async fn release(&self, _: &str, token: u64) -> Result<(), StoreError> {
            self.released.lock().unwrap().push(token);
            Ok(())
        }
    }

    const LOAD: Duration = Duration::from_millis(300);

    /// Loads `"v"` in [`LOAD`], counting its calls.
    fn slow(
        calls: &Arc<AtomicUsize>,
    ) -> impl FnOnce()
        -> futures_util::future::BoxFuture<'static, Result<Loaded<()>, std::io::Error>>
    + Send
    + 'static {
        let calls = calls.clone();
        move || {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(LOAD).await;
                Ok(Loaded::Store(Fill::new("v")))
            })
        }
    }

    fn profile(load_timeout: Duration) -> Profile {
        Profile::new(
            "lease",
            Policy::ttl(Duration::from_secs(60))
                .jitter(0.0)
                .load_timeout(load_timeout),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn over_a_store_of_one_process_nothing_waits_and_one_loads() {
        let cache = Cache::new(MemoryStore::default());
        let profile = profile(Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
                tokio::spawn(async move {
                    let got = cache.fetch("k", &profile, slow(&calls)).await.unwrap();
                    (got.entry().unwrap().value().clone(), start.elapsed())
                })
            })
            .collect();
        for task in tasks {
            let (value, took) = task.await.unwrap();
            assert_eq!(&value[..], b"v");
            assert_eq!(took, LOAD, "answered when the one load ended");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(profile.stats().coalesced, 199);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_held_elsewhere_is_waited_for_the_load_timeout_at_most() {
        let store = Remote::new(Ok(Lease::Taken));
        let cache = Cache::new(store.clone());
        let timeout = Duration::from_secs(2);
        let calls = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let got = cache
            .fetch("k", &profile(timeout), slow(&calls))
            .await
            .unwrap();
        assert!(matches!(got, Fetched::Miss(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "loaded by itself");
        assert_eq!(start.elapsed(), timeout + LOAD);
        assert!(store.released.lock().unwrap().is_empty(), "held none");
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_another_instance_stored_is_served_without_a_load() {
        let store = Remote::new(Ok(Lease::Taken));
        let cache = Cache::new(store.clone());
        let profile = profile(Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let waiting = tokio::spawn({
            let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
            async move { cache.fetch("k", &profile, slow(&calls)).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The lease holder's write.
        let entry = Entry::new("theirs").with_ttl(Duration::from_secs(60));
        store.inner.put("k", entry).await.unwrap();
        let got = waiting.await.unwrap();
        assert_eq!(&got.entry().unwrap().value()[..], b"theirs");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(profile.stats().coalesced, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_that_cannot_be_asked_for_loads_at_once() {
        let cache = Cache::new(Remote::new(Err(())));
        let calls = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        cache
            .fetch("k", &profile(Duration::from_secs(10)), slow(&calls))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), LOAD);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_granted_lease_is_released_whatever_the_load_gives() {
        let store = Remote::new(Ok(Lease::Granted));
        let cache = Cache::new(store.clone());
        let profile = profile(Duration::from_secs(10));
        let failed = cache
            .fetch("a", &profile, || async {
                Err::<Loaded<()>, _>(std::io::Error::other("down"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(store.released.lock().unwrap().len(), 1, "a failed load");
        let calls = Arc::new(AtomicUsize::new(0));
        cache.fetch("b", &profile, slow(&calls)).await.unwrap();
        assert_eq!(store.released.lock().unwrap().len(), 2, "a stored value");
        let off = profile.map_policy(|p| p.cross_instance_lease(false));
        cache.fetch("c", &off, slow(&calls)).await.unwrap();
        assert_eq!(store.released.lock().unwrap().len(), 2, "no lease taken");
    }

    /// A holder that stored its value and released its lease between a
    /// leader's read of the key and its lease: the leader gets the lease
    /// over a value.
    fn stored_just_before_the_lease(entry: Entry) -> Arc<Remote> {
        let store = Remote::new(Ok(Lease::GrantedOverValue));
        *store.stored_before_lease.lock().unwrap() = Some(entry);
        store
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_stored_between_a_read_and_the_lease_is_served_not_loaded_again() {
        let entry = Entry::new("theirs").with_ttl(Duration::from_secs(60));
        let store = stored_just_before_the_lease(entry);
        let cache = Cache::new(store.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let profile = profile(Duration::from_secs(10));
        let got = cache.fetch("k", &profile, slow(&calls)).await.unwrap();
        assert_eq!(&got.entry().unwrap().value()[..], b"theirs");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "not loaded twice");
        assert_eq!(store.released.lock().unwrap().len(), 1, "lease given up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_over_a_stale_value_loads() {
        // Fresh for 60 s from 90 s ago, servable stale for 120 s more.
        let stored_at = clock::now_ms() - 90_000;
        let stale = Entry::new("old")
            .with_ttl(Duration::from_secs(60))
            .with_stale(Duration::from_secs(120))
            .with_stored_at(stored_at);
        let store = stored_just_before_the_lease(stale);
        let cache = Cache::new(store.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let profile = profile(Duration::from_secs(10));
        let got = cache.fetch("k", &profile, slow(&calls)).await.unwrap();
        assert_eq!(&got.entry().unwrap().value()[..], b"v");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.released.lock().unwrap().len(),
            1,
            "released with its write"
        );
    }
}
