//! The handle: flush, shut down, observe a queue.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::queue::{Item, Shared};
use super::{WriteBehindClosed, WriteBehindStats};
use crate::codec::{CacheKey, key_in};

/// Controls a write-behind queue: flush, shut down, observe.
///
/// Cloning is cheap. The queue's worker stops when
/// [`shutdown`](WriteBehindHandle::shutdown) is called, or after the last
/// handle and service are dropped, in both cases after delivering what was
/// queued. Handles and services share the ownership of the queue's tasks
/// (the worker, when [`layer`](tower_layer::Layer::layer) spawned it, and
/// the task each write runs on until the cache holds it).
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
            .finish_non_exhaustive()
    }
}

impl<K, V> WriteBehindHandle<K, V> {
    pub(super) fn new(tx: mpsc::Sender<Item<K, V>>, shared: Arc<Shared<V>>) -> Self {
        WriteBehindHandle { tx, shared }
    }

    /// Waits until every write acknowledged before this call has been
    /// handed to the writer (delivered, or given to the dead-letter handler
    /// after its retries).
    ///
    /// # Errors
    ///
    /// [`WriteBehindClosed`] when the queue was shut down.
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
    /// stopped and every task of the queue has finished. Calling it again
    /// (or concurrently) returns once that is done. With a worker from
    /// [`pair`](super::WriteBehindLayer::pair), returns once the worker has
    /// delivered everything (it then completes).
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
        let worker = self
            .shared
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(worker) = worker
            && let Err(error) = worker.await
            && error.is_panic()
        {
            tracing::error!(name = %self.shared.name, "the write-behind worker panicked; writes it had not delivered are lost");
        }
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Current counters.
    #[must_use]
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
        let pending = self.shared.lock_pending();
        let mut values = pending.get(&key)?.iter().map(|(_, value)| value);
        let first = values.next()?.clone();
        Some(values.fold(first, |acc, v| merge(&acc, v)))
    }
}
