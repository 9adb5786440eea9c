//! Cache warming: a list of keys loaded before traffic, with bounded
//! concurrency, progress in the logs, and no start-up failed for one bad
//! key.

use std::fmt;
use std::future::Future;

use futures_util::StreamExt;

use super::{Cache, Fetched, Fill, Loaded, Profile};
use crate::clock;
use crate::store::Store;

/// Default number of keys loaded at once while warming: 16.
pub const DEFAULT_WARM_CONCURRENCY: usize = 16;
/// Progress is logged every this many keys (and at the end): 100.
pub const WARM_LOG_EVERY: u64 = 100;

/// What warming did, from [`Cache::warm`] and the layers' `warm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Keys loaded from the origin and stored.
    pub loaded: u64,
    /// Keys skipped: the store already held a fresh entry.
    pub cached: u64,
    /// Keys whose load failed (each logged); warming went on.
    pub failed: u64,
}

/// How one key went.
pub(crate) enum Warmed {
    Loaded,
    Cached,
    Failed,
}

impl<St: Store> Cache<St> {
    /// Loads each of `keys` with `load` under `profile`'s policy, at most
    /// [`CacheBuilder::warm_concurrency`](super::CacheBuilder::warm_concurrency)
    /// at a time (default [`DEFAULT_WARM_CONCURRENCY`], 16), through the
    /// usual single flight (a request for a key being warmed waits for its
    /// load). A key whose fresh entry is already stored is skipped. A load
    /// that fails is logged and counted, and warming goes on: a bad key
    /// never fails the start-up. Progress is logged at `info` every
    /// [`WARM_LOG_EVERY`] keys and at the end.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cache::{Cache, Fill, Policy, Profile};
    /// use tower_cache::store::{MemoryStore, SharedStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    /// let users = Profile::new("users", Policy::ttl(Duration::from_secs(60)));
    /// let keys = (1..=100).map(|id| format!("user:{id}"));
    /// let report = cache
    ///     .warm(&users, keys, |key| async move {
    ///         Ok::<_, std::io::Error>(Fill::new(format!("{key} from the database")))
    ///     })
    ///     .await;
    /// assert_eq!(report.loaded, 100);
    /// # }
    /// ```
    pub async fn warm<K, F, Fut, E>(
        &self,
        profile: &Profile,
        keys: impl IntoIterator<Item = K>,
        load: F,
    ) -> WarmReport
    where
        K: AsRef<str>,
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<Fill, E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let load = &load;
        self.warm_each(profile.name(), keys, |key: K| async move {
            let key = key.as_ref();
            if self.holds_fresh(key).await {
                return Warmed::Cached;
            }
            let fut = load(key.to_owned());
            let fetched = self
                .fetch(key, profile, move || async move {
                    fut.await.map(Loaded::<()>::Store)
                })
                .await;
            match fetched {
                Ok(Fetched::Hit(_) | Fetched::Stale(_)) => Warmed::Cached,
                Ok(_) => Warmed::Loaded,
                Err(error) => {
                    tracing::warn!(cache = %profile.name(), key, %error, "warming: load failed");
                    Warmed::Failed
                }
            }
        })
        .await
    }

    /// Whether the store holds a fresh entry under `key`.
    pub(crate) async fn holds_fresh(&self, key: &str) -> bool {
        matches!(self.inner.store.get(key).await, Ok(Some(e)) if e.is_fresh_at(clock::now_ms()))
    }

    /// Runs `warm` on each item, at most the cache's warming concurrency
    /// at once, logging progress under `name`.
    pub(crate) async fn warm_each<T, F, Fut>(
        &self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        warm: F,
    ) -> WarmReport
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Warmed>,
    {
        let started = std::time::Instant::now();
        let mut report = WarmReport::default();
        let mut done = futures_util::stream::iter(items)
            .map(warm)
            .buffer_unordered(self.inner.warm_concurrency.max(1));
        while let Some(warmed) = done.next().await {
            match warmed {
                Warmed::Loaded => report.loaded += 1,
                Warmed::Cached => report.cached += 1,
                Warmed::Failed => report.failed += 1,
            }
            let n = report.loaded + report.cached + report.failed;
            if n % WARM_LOG_EVERY == 0 {
                tracing::info!(cache = %name, keys = n, loaded = report.loaded, cached = report.cached, failed = report.failed, "warming");
            }
        }
        tracing::info!(
            cache = %name,
            loaded = report.loaded,
            cached = report.cached,
            failed = report.failed,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "warming done"
        );
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::Policy;
    use crate::store::MemoryStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn warming_loads_every_key_once_a_few_at_a_time_and_skips_what_is_cached() {
        let cache = Cache::builder(MemoryStore::default())
            .warm_concurrency(8)
            .build();
        let profile = Profile::new("w", Policy::ttl(Duration::from_secs(60)));
        let (now, peak, calls) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let load = |key: String| {
            let (now, peak, calls) = (now.clone(), peak.clone(), calls.clone());
            async move {
                let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(inside, Ordering::SeqCst);
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Fill::new(format!("v {key}")))
            }
        };
        let keys: Vec<String> = (0..200).map(|n| format!("k{n}")).collect();
        let report = cache.warm(&profile, &keys, load).await;
        assert_eq!(
            report,
            WarmReport {
                loaded: 200,
                cached: 0,
                failed: 0
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 200);
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (2..=8).contains(&peak),
            "at most 8 at once, and more than one: {peak}"
        );
        for key in &keys {
            assert!(cache.holds_fresh(key).await, "{key} stored");
        }
        let again = cache.warm(&profile, &keys, load).await;
        assert_eq!(
            again,
            WarmReport {
                loaded: 0,
                cached: 200,
                failed: 0
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 200, "nothing loaded twice");
    }

    #[tokio::test]
    async fn a_key_that_fails_is_counted_and_the_others_are_loaded() {
        let cache = Cache::new(MemoryStore::default());
        let profile = Profile::new("w", Policy::ttl(Duration::from_secs(60)));
        let report = cache
            .warm(&profile, ["a", "bad", "b"], |key| async move {
                if key == "bad" {
                    Err(std::io::Error::other("no such row"))
                } else {
                    Ok(Fill::new(key))
                }
            })
            .await;
        assert_eq!(
            report,
            WarmReport {
                loaded: 2,
                cached: 0,
                failed: 1
            }
        );
        assert!(cache.holds_fresh("a").await && cache.holds_fresh("b").await);
        assert!(!cache.holds_fresh("bad").await);
    }
}
