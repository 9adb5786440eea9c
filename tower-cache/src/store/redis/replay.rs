//! Removes and tag invalidations that could not reach Redis, kept until
//! they can be replayed.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ::metrics::{Counter, Gauge};

use super::StoreError;
use crate::metrics::Tally;

/// Default bound on removes and tag invalidations kept for replay while
/// Redis is away: 10 000.
pub const DEFAULT_MAX_PENDING_INVALIDATIONS: usize = 10_000;

/// A remove or tag invalidation that did not reach Redis.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Invalidation {
    Key(String),
    Tag(String),
}

impl Invalidation {
    /// The keys and the tags among `items`.
    pub(crate) fn split(items: &[Invalidation]) -> (Vec<&str>, Vec<&str>) {
        let mut keys = Vec::new();
        let mut tags = Vec::new();
        for item in items {
            match item {
                Invalidation::Key(k) => keys.push(k.as_str()),
                Invalidation::Tag(t) => tags.push(t.as_str()),
            }
        }
        (keys, tags)
    }
}

#[derive(Default)]
struct Pending {
    items: HashSet<Invalidation>,
    overflows: u64,
    replayed_overflows: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.overflows == self.replayed_overflows
    }
}

/// Removes and tag invalidations waiting for Redis, bounded. On overflow
/// the set is dropped and replaced by one namespace-wide invalidation, so
/// nothing is ever forgotten: at worst the namespace starts cold.
pub(crate) struct ReplayQueue {
    max: usize,
    pending: Mutex<Pending>,
    has_pending: AtomicBool,
    /// One replay at a time; callers that find work pending wait for the
    /// replay in progress rather than read Redis before it is done.
    turn: tokio::sync::Mutex<()>,
    /// Items waiting (`tower_cache_invalidations_pending`), moved by the
    /// change of each update, so that several queues add up.
    pending_gauge: Gauge,
    deferred: Counter,
    replayed: Tally,
    overflows: Counter,
}

impl ReplayQueue {
    pub(crate) fn new(max: usize) -> Self {
        ReplayQueue {
            max,
            pending: Mutex::new(Pending::default()),
            has_pending: AtomicBool::new(false),
            turn: tokio::sync::Mutex::new(()),
            pending_gauge: ::metrics::gauge!(crate::metrics::INVALIDATIONS_PENDING),
            deferred: ::metrics::counter!(crate::metrics::INVALIDATIONS_DEFERRED_TOTAL),
            replayed: Tally::named(crate::metrics::INVALIDATIONS_REPLAYED_TOTAL),
            overflows: ::metrics::counter!(crate::metrics::INVALIDATION_OVERFLOWS_TOTAL),
        }
    }

    /// Moves the pending gauge from `before` items to `after`.
    fn pending_changed(&self, before: usize, after: usize) {
        self.pending_gauge.increment(after as f64 - before as f64);
    }

    /// How many items were replayed, in all.
    pub(crate) fn replayed(&self) -> u64 {
        self.replayed.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether anything waits to be replayed (one atomic load).
    pub(crate) fn has_pending(&self) -> bool {
        self.has_pending.load(Ordering::Acquire)
    }

    /// How many removes and tag invalidations wait, and how many times
    /// the queue overflowed.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let p = self.lock();
        (p.items.len() as u64, p.overflows)
    }

    /// Keeps an invalidation for replay.
    pub(crate) fn keep(&self, invalidation: Invalidation) {
        let mut p = self.lock();
        if p.overflows != p.replayed_overflows {
            // A namespace-wide invalidation is already due; it covers this.
            return;
        }
        let before = p.items.len();
        if before >= self.max && !p.items.contains(&invalidation) {
            p.items.clear();
            p.overflows += 1;
            self.overflows.increment(1);
            tracing::warn!(
                max = self.max,
                "too many invalidations missed Redis; its namespace will be invalidated whole when it returns"
            );
        } else {
            p.items.insert(invalidation);
        }
        self.pending_changed(before, p.items.len());
        self.deferred.increment(1);
        self.has_pending.store(true, Ordering::Release);
    }

    /// Hands what waits to `apply` (whether the whole namespace is due,
    /// then the items) and forgets what it returns once it succeeded: how
    /// many items were replayed, `None` when nothing was pending.
    pub(crate) async fn replay<F, Fut>(&self, apply: F) -> Result<Option<usize>, StoreError>
    where
        F: FnOnce(bool, Vec<Invalidation>) -> Fut,
        Fut: Future<Output = Result<Vec<Invalidation>, StoreError>>,
    {
        let _turn = self.turn.lock().await;
        let (items, overflows, whole) = {
            let p = self.lock();
            if p.is_empty() {
                return Ok(None);
            }
            let items: Vec<Invalidation> = p.items.iter().cloned().collect();
            (items, p.overflows, p.overflows != p.replayed_overflows)
        };
        let applied = apply(whole, items).await?;
        let mut p = self.lock();
        let before = p.items.len();
        for item in &applied {
            p.items.remove(item);
        }
        self.pending_changed(before, p.items.len());
        p.replayed_overflows = p.replayed_overflows.max(overflows);
        self.has_pending.store(!p.is_empty(), Ordering::Release);
        drop(p);
        self.replayed.add(applied.len() as u64);
        tracing::info!(
            replayed = applied.len(),
            whole,
            "invalidations missed by Redis replayed"
        );
        Ok(Some(applied.len()))
    }
}

impl Drop for ReplayQueue {
    fn drop(&mut self) {
        let left = self.lock().items.len();
        self.pending_changed(left, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_overflow_becomes_one_namespace_invalidation() {
        let q = ReplayQueue::new(2);
        for k in ["a", "b", "c"] {
            q.keep(Invalidation::Key(k.to_owned()));
        }
        assert!(q.has_pending());
        assert_eq!(q.counts(), (0, 1));
        let done = q
            .replay(|whole, items| async move {
                assert!(whole && items.is_empty());
                Ok(items)
            })
            .await
            .unwrap();
        assert_eq!(done, Some(0));
        assert!(!q.has_pending());
    }

    #[tokio::test]
    #[expect(
        clippy::float_cmp,
        reason = "gauges moved by whole numbers, held exactly as f64"
    )]
    async fn its_metrics_follow_what_waits() {
        let recorder = crate::test_support::Metrics::default();
        let sum = |name| recorder.sum(name, &[]);
        let pending = || sum(crate::metrics::INVALIDATIONS_PENDING);
        let q = ::metrics::with_local_recorder(&recorder, || ReplayQueue::new(2));
        for k in ["a", "b", "a"] {
            q.keep(Invalidation::Key(k.to_owned()));
        }
        assert_eq!(pending(), 2.0);
        assert_eq!(sum(crate::metrics::INVALIDATIONS_DEFERRED_TOTAL), 3.0);
        q.replay(|_, items| async move { Ok(items[..1].to_vec()) })
            .await
            .unwrap();
        assert_eq!(pending(), 1.0, "what was applied waits no more");
        assert_eq!(sum(crate::metrics::INVALIDATIONS_REPLAYED_TOTAL), 1.0);
        for k in ["c", "d"] {
            q.keep(Invalidation::Key(k.to_owned()));
        }
        assert_eq!(sum(crate::metrics::INVALIDATION_OVERFLOWS_TOTAL), 1.0);
        assert_eq!(
            pending(),
            0.0,
            "the namespace-wide invalidation replaces them"
        );
        q.replay(|_, items| async move { Ok(items) }).await.unwrap();
        q.keep(Invalidation::Tag("t".to_owned()));
        assert_eq!(pending(), 1.0);
        drop(q);
        assert_eq!(pending(), 0.0, "a queue gone holds nothing");
    }

    #[tokio::test]
    async fn a_failed_replay_keeps_everything() {
        let q = ReplayQueue::new(10);
        q.keep(Invalidation::Tag("t".to_owned()));
        let failed = q
            .replay(|_, _| async { Err::<Vec<Invalidation>, _>(StoreError::Timeout) })
            .await;
        assert!(failed.is_err());
        assert!(q.has_pending());
        assert_eq!(q.counts(), (1, 0));
    }
}
