//! What travels from the services to the worker, and the state they share.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::EntryId;
use super::batch::MergeFn;
use crate::layer::write::Write;

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

#[derive(Default)]
pub(super) struct Counters {
    pub queued: AtomicI64,
    pub acknowledged: AtomicU64,
    pub delivered: AtomicU64,
    pub batches: AtomicU64,
    pub coalesced: AtomicU64,
    pub retries: AtomicU64,
    pub dead_letters: AtomicU64,
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
            counters: Counters::default(),
        }
    }

    pub fn stats(&self) -> WriteBehindStats {
        let c = &self.counters;
        WriteBehindStats {
            queued: u64::try_from(c.queued.load(Ordering::Relaxed)).unwrap_or(0),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            dead_letters: c.dead_letters.load(Ordering::Relaxed),
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

    pub fn queue_depth_changed(&self, delta: i64) {
        let depth = self.counters.queued.fetch_add(delta, Ordering::Relaxed) + delta;
        metrics::gauge!("tower_cache_write_behind_queue_depth", "cache" => self.name.to_string())
            .set(depth.max(0) as f64);
    }
}
