//! The service: acknowledges a write once it is queued (and cached or logged, where the mode asks).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use tower_service::Service;

use super::durable::Durable;
use super::queue::{Item, Logged, Shared};
use super::{
    DurableLogUnavailable, ResponseFuture, WriteBehindClosed, WriteBehindHandle, WriteBehindWorker,
};
use crate::codec::{CacheKey, key_in};
use crate::layer::write::Write;
use crate::store::{SharedStore, Store};
use crate::{Cache, Fill, Profile};

/// A write-behind front for a batch writer: each write is acknowledged as
/// soon as it is queued (and, without a merge function, cached). Built by
/// [`WriteBehindLayer`](super::WriteBehindLayer).
pub struct WriteBehind<K, V, St = SharedStore> {
    sender: PollSender<Item<K, V>>,
    tx: mpsc::Sender<Item<K, V>>,
    shared: Arc<Shared<V>>,
    cache: Cache<St>,
    profile: Profile,
    durable: Option<Durable<K, V>>,
}

impl<K, V, St> Clone for WriteBehind<K, V, St> {
    fn clone(&self) -> Self {
        WriteBehind {
            sender: self.sender.clone(),
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            cache: self.cache.clone(),
            profile: self.profile.clone(),
            durable: self.durable.clone(),
        }
    }
}

impl<K, V, St> std::fmt::Debug for WriteBehind<K, V, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehind")
            .field("name", &self.shared.name)
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl<K, V, St> WriteBehind<K, V, St> {
    pub(super) fn new(
        tx: mpsc::Sender<Item<K, V>>,
        shared: Arc<Shared<V>>,
        cache: Cache<St>,
        profile: Profile,
        durable: Option<Durable<K, V>>,
    ) -> Self
    where
        K: Send + 'static,
        V: Send + 'static,
    {
        WriteBehind {
            sender: PollSender::new(tx.clone()),
            tx,
            shared,
            cache,
            profile,
            durable,
        }
    }

    /// Runs `worker` as a task of the queue's own, which
    /// [`WriteBehindHandle::shutdown`] waits for.
    pub(super) fn spawn_worker(&self, worker: WriteBehindWorker) {
        let task = self.shared.tasks.spawn(worker);
        *self
            .shared
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// A handle to flush, shut down and observe the queue.
    #[must_use]
    pub fn handle(&self) -> WriteBehindHandle<K, V> {
        WriteBehindHandle::new(self.tx.clone(), self.shared.clone())
    }
}

fn stripe_of(key: &str, stripes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    usize::try_from(h.finish() % stripes as u64).unwrap_or(0)
}

impl<K, V, St> Service<Write<K, V>> for WriteBehind<K, V, St>
where
    K: CacheKey + Send + 'static,
    V: serde::Serialize + Clone + Send + Sync + 'static,
    St: Store,
{
    type Response = ();
    type Error = tower::BoxError;
    type Future = ResponseFuture;

    /// Ready when the queue has room for one more write; pending while it
    /// is full, so callers wait for the writer instead of memory growing.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.shared.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Poll::Ready(Err(WriteBehindClosed.into()));
        }
        self.sender
            .poll_reserve(cx)
            .map_err(|_| WriteBehindClosed.into())
    }

    fn call(&mut self, write: Write<K, V>) -> Self::Future {
        let key = key_in(&self.shared.namespace, &write.key);
        // Merge mode: the write's id among the pending ones.
        let id = self
            .shared
            .seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let forget = self.shared.merge.is_some().then(|| (key.clone(), id));
        let (logged, append) = match self.durable_append(&write, forget) {
            Ok(pair) => pair,
            Err(error) => return ResponseFuture::ready(Err(error)),
        };
        let shared = &self.shared;
        if shared.merge.is_some() {
            // Queue order and pending order are the same: both under the lock.
            let mut pending = shared.lock_pending();
            let value = write.value.clone();
            if !enqueue(shared, &mut self.sender, &key, write, logged) {
                return ResponseFuture::ready(Err(WriteBehindClosed.into()));
            }
            pending.entry(key).or_default().push_back((id, value));
            drop(pending);
            self.acknowledged();
            return match append {
                None => ResponseFuture::ready(Ok(())),
                // On a task of its own: the worker waits for the append, so
                // it must go on whether or not the caller polls the answer.
                Some(append) => ResponseFuture::spawned(&self.shared.tasks, append),
            };
        }

        let encoded = serde_json::to_vec(&write.value);
        // Sequence, latest-marker and queue position are taken under one
        // lock, so the order in which writes to a key reach the writer is
        // the order in which they win the cache.
        let seq = {
            let mut latest = shared
                .latest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let seq = shared
                .seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if !enqueue(shared, &mut self.sender, &key, write, logged) {
                return ResponseFuture::ready(Err(WriteBehindClosed.into()));
            }
            latest.insert(key.clone(), seq);
            seq
        };
        self.acknowledged();
        let (shared, cache, profile) = (
            self.shared.clone(),
            self.cache.clone(),
            self.profile.clone(),
        );
        // The cache is set on a task of its own: a caller that stops
        // waiting for the answer does not leave the queued write uncached.
        ResponseFuture::spawned(&self.shared.tasks, async move {
            let appended = match append {
                Some(append) => append.await,
                None => Ok(()),
            };
            // Writes to one key set the cache one at a time, and only the
            // latest acknowledged one lands.
            let stripe = &shared.stripes[stripe_of(&key, shared.stripes.len())];
            let _turn = stripe.lock().await;
            let is_latest = |shared: &Shared<V>| {
                shared
                    .latest
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&key)
                    == Some(&seq)
            };
            if appended.is_ok() && is_latest(&shared) {
                match encoded {
                    Ok(bytes) => cache.put(&key, &profile, Fill::new(bytes)).await,
                    Err(error) => {
                        tracing::warn!(key, %error, "written value does not encode; removing the cached one");
                        cache.remove(&key).await;
                    }
                }
            }
            let mut map = shared
                .latest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.get(&key) == Some(&seq) {
                map.remove(&key);
            }
            appended
        })
    }
}

/// Durable mode: appends a write to the log, then tells the worker the
/// entry id (or that it failed).
type Append = futures_util::future::BoxFuture<'static, Result<(), tower::BoxError>>;

impl<K, V, St> WriteBehind<K, V, St> {
    fn durable_append(
        &self,
        write: &Write<K, V>,
        forget: Option<(String, u64)>,
    ) -> Result<(Option<Logged>, Option<Append>), tower::BoxError>
    where
        V: Send + Sync + 'static,
    {
        let Some(durable) = &self.durable else {
            return Ok((None, None));
        };
        let payload = (durable.encode)(write)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = durable.log.clone();
        let mut recovered = self.shared.recovered.subscribe();
        let shared = self.shared.clone();
        let append: Append = Box::pin(async move {
            // New entries only once the old ones were read back.
            let _ = recovered.wait_for(|done| *done).await;
            match log.append(bytes::Bytes::from(payload)).await {
                Ok(id) => {
                    let _ = tx.send(Some(id));
                    Ok(())
                }
                Err(error) => {
                    // Out of `pending` before the caller hears of it.
                    if let Some((key, id)) = forget {
                        shared.forget_pending_write(&key, id);
                    }
                    let _ = tx.send(None);
                    Err(DurableLogUnavailable::new(error).into())
                }
            }
        });
        Ok((Some(rx), Some(append)))
    }

    fn acknowledged(&self) {
        self.shared
            .counters
            .acknowledged
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Hands a write to the worker; `false` when the worker has stopped. The
/// queue's depth counts it before the worker can take it.
fn enqueue<K: Send + 'static, V: Send + 'static>(
    shared: &Shared<V>,
    sender: &mut PollSender<Item<K, V>>,
    key: &str,
    write: Write<K, V>,
    logged: Option<Logged>,
) -> bool {
    let item = Item::Write {
        key: key.to_owned(),
        write,
        logged,
    };
    shared.queue_depth_changed(1);
    let sent = sender.send_item(item).is_ok();
    if !sent {
        shared.queue_depth_changed(-1);
    }
    sent
}
