//! What travels from the services to the worker, and the state they share.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use ::metrics::{Gauge, Histogram};

use super::EntryId;
use super::batch::MergeFn;
use crate::layer::write::Write;
use crate::metrics::Tally;

/// Durable mode: the id of a write's log entry once appended, `None` if
/// that failed (the write was then not acknowledged).
pub(super) type Logged = oneshot::Receiver<Option<EntryId>>;

/// What travels through the queue.
pub(super) enum Item<K, V> {
    Write {
        key: String,
        write: Write<K, V>,
        /// Durable mode: where the log entry's id arrives.
        logged: Option<Logged>,
    },
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Counters of a write-behind queue, from
/// [`WriteBehindHandle::stats`](super::WriteBehindHandle::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBehindStats {
    /// Writes acknowledged and not yet taken by the worker.
    pub queued: u64,
    /// Writes acknowledged.
    pub acknowledged: u64,
    /// Coalesced writes delivered to the writer.
    pub delivered: u64,
    /// Batches delivered (writer calls that succeeded).
    pub batches: u64,
    /// Writes folded into another write to the same key.
    pub coalesced: u64,
    /// Writer calls retried.
    pub retries: u64,
    /// Coalesced writes given up on and handed to the dead-letter handler.
    pub dead_letters: u64,
}

/// The counters of a queue; all but `acknowledged` and `delivered` are
/// also reported as metrics, labelled with the layer's name.
pub(super) struct Counters {
    pub queued: AtomicI64,
    pub queue_depth: Gauge,
    pub acknowledged: AtomicU64,
    pub delivered: AtomicU64,
    pub batches: Tally,
    pub coalesced: Tally,
    pub retries: Tally,
    pub dead_letters: Tally,
    pub flush_seconds: Histogram,
}

impl Counters {
    /// The counters of the queue `name`, their metrics registered (at 0)
    /// with the recorder installed now.
    fn new(name: &str) -> Self {
        crate::metrics::describe();
        let labels = || vec![::metrics::Label::new("cache", name.to_owned())];
        let tally = |metric: &'static str| Tally::new(::metrics::counter!(metric, labels()));
        Counters {
            queued: AtomicI64::new(0),
            queue_depth: ::metrics::gauge!(crate::metrics::WRITE_BEHIND_QUEUE_DEPTH, labels()),
            acknowledged: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            batches: tally(crate::metrics::WRITE_BEHIND_BATCHES_TOTAL),
            coalesced: tally(crate::metrics::WRITE_BEHIND_COALESCED_TOTAL),
            retries: tally(crate::metrics::WRITE_BEHIND_RETRIES_TOTAL),
            dead_letters: tally(crate::metrics::WRITE_BEHIND_DEAD_LETTERS_TOTAL),
            flush_seconds: ::metrics::histogram!(
                crate::metrics::WRITE_BEHIND_FLUSH_SECONDS,
                labels()
            ),
        }
    }
}

/// State shared by the services, the handles and the worker.
pub(super) struct Shared<V> {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub merge: Option<MergeFn<V>>,
    /// Merge mode: per key, the writes acknowledged and not yet delivered,
    /// in queue order, each with an id of its own.
    pub pending: Mutex<HashMap<String, VecDeque<(u64, V)>>>,
    /// Set mode: per key, the sequence number of the latest write, so that
    /// an older write never overwrites a newer one in the cache.
    pub latest: Mutex<HashMap<String, u64>>,
    pub seq: AtomicU64,
    pub stripes: Vec<tokio::sync::Mutex<()>>,
    pub closed: AtomicBool,
    /// Durable mode: set once what a previous run left in the log is
    /// delivered; appends wait for it, so that recovery reads only old entries.
    pub recovered: watch::Sender<bool>,
    /// Every task spawned for this queue: the worker (unless the user runs
    /// it) and the per-write tasks; shutdown waits for them.
    pub tasks: TaskTracker,
    /// The worker's task, when the layer spawned it.
    pub worker: Mutex<Option<JoinHandle<()>>>,
    pub counters: Counters,
}

impl<V> Shared<V> {
    pub fn new(name: &str, namespace: Arc<str>, merge: Option<MergeFn<V>>) -> Self {
        Shared {
            name: Arc::from(name),
            namespace,
            merge,
            pending: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            closed: AtomicBool::new(false),
            recovered: watch::Sender::new(false),
            tasks: TaskTracker::new(),
            worker: Mutex::new(None),
            counters: Counters::new(name),
        }
    }

    pub fn stats(&self) -> WriteBehindStats {
        let c = &self.counters;
        WriteBehindStats {
            queued: u64::try_from(c.queued.load(Ordering::Relaxed)).unwrap_or(0),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            batches: c.batches.get(),
            coalesced: c.coalesced.get(),
            retries: c.retries.get(),
            dead_letters: c.dead_letters.get(),
        }
    }

    pub fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<(u64, V)>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Merge mode: stops counting the write `id` to `key` as pending.
    pub fn forget_pending_write(&self, key: &str, id: u64) {
        let mut pending = self.lock_pending();
        if let Some(queue) = pending.get_mut(key) {
            queue.retain(|(write, _)| *write != id);
            if queue.is_empty() {
                pending.remove(key);
            }
        }
    }

    /// Merge mode: stops counting the first `count` pending writes to
    /// `key`, delivered now.
    pub fn forget_delivered(&self, key: &str, count: usize) {
        if self.merge.is_none() || count == 0 {
            return;
        }
        let mut pending = self.lock_pending();
        if let Some(queue) = pending.get_mut(key) {
            queue.drain(..count.min(queue.len()));
            if queue.is_empty() {
                pending.remove(key);
            }
        }
    }

    /// Counts `delta` more writes waiting for the worker (fewer when
    /// negative), and sets the gauge to the new depth. A depth changed by
    /// another caller meanwhile is set again, so whichever caller sets the
    /// gauge last sets the depth as it stands.
    pub fn queue_depth_changed(&self, delta: i64) {
        let c = &self.counters;
        let mut depth = c.queued.fetch_add(delta, Ordering::AcqRel) + delta;
        loop {
            c.queue_depth.set(depth.max(0) as f64);
            let now = c.queued.load(Ordering::Acquire);
            if now == depth {
                break;
            }
            depth = now;
        }
    }
}
