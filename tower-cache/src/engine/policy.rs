//! Freshness policy: how long entries are fresh, how long stale ones may be
//! served, and when they are reloaded.

use std::time::Duration;

use crate::entry::Entry;

/// Default time an entry is fresh: 60 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default TTL jitter: ±10 %.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Default time a "not found" result is cached: 5 s.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Default limit on one load: 10 s.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How a read layer treats freshness. Configured per layer instance, so
/// each route carries its own.
///
/// | option | default | effect |
/// |---|---|---|
/// | [`ttl`](Policy::ttl) | 60 s | how long an entry is fresh |
/// | [`jitter`](Policy::jitter) | ±10 % | spreads expiries of entries written together |
/// | [`stale_while_revalidate`](Policy::stale_while_revalidate) | off | serve stale at once, reload in the background |
/// | [`stale_if_error`](Policy::stale_if_error) | off | serve stale when the reload fails |
/// | [`negative_ttl`](Policy::negative_ttl) | 5 s | how long "not found" is cached |
/// | [`early_refresh`](Policy::early_refresh) | off | probabilistic early refresh (XFetch) with factor β |
/// | [`refresh_ahead_at`](Policy::refresh_ahead_at) | off | reload in the background past this fraction of the TTL |
/// | [`load_timeout`](Policy::load_timeout) | 10 s | a load taking longer fails, freeing its key |
/// | [`cross_instance_lease`](Policy::cross_instance_lease) | on | one load per key across the instances sharing an L2 |
///
/// ```
/// use std::time::Duration;
/// use tower_cache::Policy;
///
/// let policy = Policy::ttl(Duration::from_secs(30))
///     .stale_while_revalidate(Duration::from_secs(60))
///     .stale_if_error(Duration::from_secs(600))
///     .negative_ttl(Duration::from_secs(2));
/// assert_eq!(policy.ttl_value(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub(crate) ttl: Duration,
    pub(crate) jitter: f64,
    pub(crate) swr: Duration,
    pub(crate) sie: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) beta: f64,
    pub(crate) refresh_at: Option<f64>,
    pub(crate) load_timeout: Duration,
    pub(crate) lease: bool,
}

impl Default for Policy {
    /// TTL 60 s, jitter ±10 %, no stale serving, negative TTL 5 s, no early
    /// refresh, load timeout 10 s, one load per key across instances.
    fn default() -> Self {
        Policy {
            ttl: DEFAULT_TTL,
            jitter: DEFAULT_JITTER,
            swr: Duration::ZERO,
            sie: Duration::ZERO,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            beta: 0.0,
            refresh_at: None,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
            lease: true,
        }
    }
}

/// Where an entry stands under a policy at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Fresh; `refresh` says whether to reload it in the background
    /// (refresh-ahead or `XFetch`).
    Fresh { refresh: bool },
    /// In the stale-while-revalidate window: serve and reload in background.
    Revalidate,
    /// In the stale-if-error window only: reload now, serve it if that fails.
    IfError,
    /// Not servable (though the store may keep it to be revalidated).
    Expired,
}

impl Policy {
    /// The default policy with a TTL of `ttl`.
    pub fn ttl(ttl: Duration) -> Self {
        Policy {
            ttl,
            ..Policy::default()
        }
    }

    /// Sets the TTL. Default: 60 s.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The configured TTL.
    pub fn ttl_value(&self) -> Duration {
        self.ttl
    }

    /// Spreads each TTL uniformly over `ttl × (1 ± fraction)` so entries
    /// written together do not expire together. Default: 0.1 (±10 %).
    /// Clamped to `0.0..=0.5`.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 0.5);
        self
    }

    /// After an entry stops being fresh, serve it for `window` more while
    /// one background reload per key replaces it. Default: off.
    ///
    /// It also decides how a route serves an entry that a
    /// [`TieredStore`](crate::store::TieredStore) holds in L1 but could not
    /// keep in sync (its invalidation channel was lost) while Redis cannot
    /// vouch for it: with a window, the entry is served stale at once while
    /// one background reload replaces it; without one, it is a miss, and
    /// the callers of the key wait for one load.
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.swr = window;
        self
    }

    /// After an entry stops being fresh, keep it for `window` more and serve
    /// it when the reload fails (an error, or a response the layer treats as
    /// failed, such as a 5xx). Default: off.
    #[must_use]
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.sie = window;
        self
    }

    /// How long a "not found" result (HTTP 404/410, `None` from a typed
    /// loader) is cached. Default: 5 s.
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Probabilistic early refresh (XFetch): a read at `now` reloads the
    /// entry in the background when `now − Δ·β·ln(rand) ≥ expiry`, `Δ` being
    /// how long the last load took. Larger `beta` refreshes earlier; 1.0 is
    /// the usual choice. Default: 0 (off).
    #[must_use]
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.beta = beta.max(0.0);
        self
    }

    /// Reload in the background when a read finds an entry past `fraction`
    /// of its TTL (for example 0.8), so that a key read regularly never
    /// expires into a miss. Default: off. Clamped to `0.0..=1.0`.
    #[must_use]
    pub fn refresh_ahead_at(mut self, fraction: f64) -> Self {
        self.refresh_at = Some(fraction.clamp(0.0, 1.0));
        self
    }

    /// The configured refresh-ahead fraction, if any.
    pub fn refresh_ahead_value(&self) -> Option<f64> {
        self.refresh_at
    }

    /// A load taking longer than `timeout` fails with
    /// [`LoadError::Timeout`](crate::LoadError::Timeout) and frees its key.
    /// Default: 10 s.
    #[must_use]
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// One load per key across instances: with a store shared between
    /// instances (an L2: [`RedisStore`](crate::store::RedisStore),
    /// [`TieredStore`](crate::store::TieredStore)), the instance whose miss
    /// comes first takes the key's [lease](crate::store::Store::lease) in
    /// the store, for the [load timeout](Policy::load_timeout), and loads;
    /// the others wait for its value (they look for it every 10 ms at
    /// first, at most every 100 ms) and serve it without a load. Default:
    /// on; it does nothing over a store of one process
    /// ([`MemoryStore`](crate::store::MemoryStore)), where the in-process
    /// single flight is one load per key already.
    ///
    /// A waiting instance loads by itself when the lease ends without a
    /// value (its holder's load failed, or a remove of the key dropped the
    /// lease: the value it was loading is older than the remove), when the
    /// load timeout passes (a holder that died leaves its lease that long
    /// at most), and at once when the store fails or its circuit breaker
    /// is open: it never waits longer than the load timeout for another
    /// instance, and Redis trouble falls back to the in-process single
    /// flight. The limit: a lease holder slower than the load timeout
    /// loses its lease, and another instance loads too.
    ///
    /// `false` loads on every instance's miss (one load per key per
    /// instance).
    ///
    /// ```
    /// use tower_cache::Policy;
    ///
    /// let per_instance = Policy::default().cross_instance_lease(false);
    /// # let _ = per_instance;
    /// ```
    #[must_use]
    pub fn cross_instance_lease(mut self, enabled: bool) -> Self {
        self.lease = enabled;
        self
    }

    /// How long entries stay servable after they stop being fresh.
    pub(crate) fn stale_window(&self) -> Duration {
        self.swr.max(self.sie)
    }

    /// The TTL for one new entry, with jitter applied.
    pub(crate) fn jittered(&self, ttl: Duration) -> Duration {
        if self.jitter <= 0.0 || ttl.is_zero() {
            return ttl;
        }
        let factor = 1.0 + self.jitter * (rand::random::<f64>() * 2.0 - 1.0);
        ttl.mul_f64(factor)
    }

    pub(crate) fn classify(&self, entry: &Entry, now: u64) -> Freshness {
        if now < entry.fresh_until {
            let mut refresh = false;
            if let Some(fraction) = self.refresh_at {
                let span = entry.fresh_until.saturating_sub(entry.stored_at) as f64;
                refresh = now as f64 >= entry.stored_at as f64 + span * fraction;
            }
            if !refresh && self.beta > 0.0 && entry.load_ms > 0 {
                // XFetch: -Δ·β·ln(u) with u in (0, 1] is >= 0.
                let u: f64 = 1.0 - rand::random::<f64>();
                let gap = -f64::from(entry.load_ms) * self.beta * u.ln();
                refresh = now as f64 + gap >= entry.fresh_until as f64;
            }
            return Freshness::Fresh { refresh };
        }
        if now >= entry.stale_until {
            return Freshness::Expired;
        }
        let past = Duration::from_millis(now - entry.fresh_until);
        let (swr, sie) = entry.stale_windows().unwrap_or((self.swr, self.sie));
        if past < swr {
            Freshness::Revalidate
        } else if past < sie {
            Freshness::IfError
        } else {
            Freshness::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_at(stored_at: u64, ttl_ms: u64, stale_ms: u64) -> Entry {
        Entry::new("v")
            .with_stored_at(stored_at)
            .with_ttl(Duration::from_millis(ttl_ms))
            .with_stale(Duration::from_millis(stale_ms))
    }

    #[test]
    fn windows_classify_in_order() {
        let p = Policy::ttl(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(5))
            .stale_if_error(Duration::from_secs(20));
        let e = entry_at(0, 10_000, 20_000);
        assert_eq!(p.classify(&e, 1), Freshness::Fresh { refresh: false });
        assert_eq!(p.classify(&e, 12_000), Freshness::Revalidate);
        assert_eq!(p.classify(&e, 20_000), Freshness::IfError);
        assert_eq!(p.classify(&e, 30_000), Freshness::Expired);
    }

    #[test]
    fn refresh_ahead_triggers_past_the_fraction() {
        let p = Policy::ttl(Duration::from_secs(10)).refresh_ahead_at(0.8);
        let e = entry_at(0, 10_000, 0);
        assert_eq!(p.classify(&e, 7_999), Freshness::Fresh { refresh: false });
        assert_eq!(p.classify(&e, 8_000), Freshness::Fresh { refresh: true });
    }

    #[test]
    fn xfetch_refreshes_more_often_close_to_expiry() {
        let p = Policy::ttl(Duration::from_secs(10)).early_refresh(1.0);
        let mut e = entry_at(0, 10_000, 0);
        e.load_ms = 1_000;
        let rate = |now: u64| {
            (0..2_000)
                .filter(|_| p.classify(&e, now) == Freshness::Fresh { refresh: true })
                .count()
        };
        let early = rate(1_000);
        let late = rate(9_500);
        assert!(early < 20, "far from expiry: {early}");
        assert!(late > 500, "close to expiry: {late}");
        e.load_ms = 0;
        assert_eq!(p.classify(&e, 9_999), Freshness::Fresh { refresh: false });
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let p = Policy::ttl(Duration::from_secs(100));
        let ttls: Vec<u128> = (0..1_000)
            .map(|_| p.jittered(Duration::from_secs(100)).as_millis())
            .collect();
        assert!(ttls.iter().all(|t| (90_000..=110_000).contains(t)));
        let distinct: std::collections::HashSet<_> = ttls.iter().map(|t| t / 1_000).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
        assert_eq!(
            Policy::ttl(Duration::from_secs(100))
                .jitter(0.0)
                .jittered(Duration::from_secs(100)),
            Duration::from_secs(100)
        );
    }
}
