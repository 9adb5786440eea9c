use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::WriteBehindClosed;
use super::worker::{Item, Shared};
use crate::codec::{CacheKey, key_in};

/// Counters of a write-behind queue, from [`WriteBehindHandle::stats`].
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

/// Controls a write-behind queue: flush, shut down, observe.
///
/// Cloning is cheap. The queue's worker stops when
/// [`shutdown`](WriteBehindHandle::shutdown) is called, or after the last
/// handle and service are dropped, in both cases after delivering what was
/// queued.
pub struct WriteBehindHandle<K, V> {
    tx: mpsc::Sender<Item<K, V>>,
    shared: Arc<Shared<V>>,
}

impl<K, V> Clone for WriteBehindHandle<K, V> {
    fn clone(&self) -> Self {
        WriteBehindHandle {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for WriteBehindHandle<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehindHandle")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<K, V> WriteBehindHandle<K, V> {
    pub(super) fn new(tx: mpsc::Sender<Item<K, V>>, shared: Arc<Shared<V>>) -> Self {
        WriteBehindHandle { tx, shared }
    }

    /// Waits until every write acknowledged before this call has been
    /// handed to the writer (delivered, or given to the dead-letter handler
    /// after its retries).
    pub async fn flush(&self) -> Result<(), WriteBehindClosed> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Item::Flush(done))
            .await
            .map_err(|_| WriteBehindClosed)?;
        wait.await.map_err(|_| WriteBehindClosed)
    }

    /// Stops taking writes (callers then get [`WriteBehindClosed`]),
    /// delivers everything acknowledged, and returns when the worker has
    /// stopped. Calling it again returns at once.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Current counters.
    pub fn stats(&self) -> WriteBehindStats {
        self.shared.stats()
    }
}

impl<K: CacheKey, V: Clone> WriteBehindHandle<K, V> {
    /// With a merge function: the writes to `key` acknowledged and not yet
    /// delivered, merged (for a counter, the increments the writer has not
    /// applied yet). `None` when there are none, or without a merge
    /// function.
    pub fn pending(&self, key: &K) -> Option<V> {
        let merge = self.shared.merge.as_ref()?;
        let key = key_in(&self.shared.namespace, key);
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut values = pending.get(&key)?.iter().map(|(_, value)| value);
        let first = values.next()?.clone();
        Some(values.fold(first, |acc, v| merge(&acc, v)))
    }
}
