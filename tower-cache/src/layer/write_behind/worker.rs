//! The worker: takes writes off the queue into batches and hands each batch
//! to delivery when it is full, due, flushed or shut down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::BoxError;
use tower_service::Service;
use tracing::Instrument;

use super::EntryId;
use super::batch::{Batch, Planned};
use super::config::Config;
use super::deliver::Delivery;
use super::durable::Durable;
use super::queue::{Item, Logged, Shared};
use super::recover::{self, Claims, Recovery};
use crate::Cache;
use crate::codec::{CacheKey, key_in};
use crate::layer::write::Write;
use crate::store::Store;

/// The worker of a write-behind queue, from
/// [`WriteBehindLayer::pair`](super::WriteBehindLayer::pair): a future that
/// delivers the queue, in the tracing span `tower_cache.write_behind`.
///
/// It completes once the queue is [shut down](super::WriteBehindHandle::shutdown),
/// or once every service and handle is dropped, in both cases after
/// delivering every acknowledged write. Nothing is delivered (and `flush`
/// and `shutdown` wait) while nobody polls it.
#[must_use = "writes are delivered only while the worker is polled"]
pub struct WriteBehindWorker {
    run: BoxFuture<'static, ()>,
}

impl WriteBehindWorker {
    pub(super) fn new(run: impl Future<Output = ()> + Send + 'static, name: &str) -> Self {
        let span = tracing::info_span!("tower_cache.write_behind", name);
        WriteBehindWorker {
            run: Box::pin(run.instrument(span)),
        }
    }
}

impl std::fmt::Debug for WriteBehindWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteBehindWorker")
    }
}

impl Future for WriteBehindWorker {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.run.as_mut().poll(cx)
    }
}

pub(super) struct Worker<S, K, V, St> {
    pub rx: mpsc::Receiver<Item<K, V>>,
    pub shared: Arc<Shared<V>>,
    pub cache: Cache<St>,
    pub config: Config,
    pub delivery: Delivery<S, K, V>,
    pub durable: Option<Durable<K, V>>,
    pub batch: Batch<K, V>,
    /// When the current batch is due: `max_delay` after its first write.
    pub deadline: Option<Instant>,
}

impl<S, K, V, St> Worker<S, K, V, St>
where
    S: Service<Vec<Write<K, V>>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    K: CacheKey + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    St: Store,
{
    /// Durable mode: recovers what the log holds first, then serves the
    /// queue with the heartbeat beside it. Otherwise serves the queue.
    pub async fn run(mut self) {
        self.recover().await;
        self.shared.recovered.send_replace(true);
        match self.durable.clone() {
            Some(durable) => {
                let span = tracing::debug_span!("tower_cache.write_behind.heartbeat");
                tokio::select! {
                    () = self.serve() => {}
                    () = recover::heartbeat(durable).instrument(span) => {}
                }
            }
            None => self.serve().await,
        }
    }

    async fn serve(&mut self) {
        let mut sweep = self.sweep_interval();
        loop {
            let item = tokio::select! {
                item = self.rx.recv() => item,
                () = sleep_until(self.deadline) => {
                    self.deliver().await;
                    continue;
                }
                () = tick(sweep.as_mut()) => {
                    self.sweep().await;
                    continue;
                }
            };
            match item {
                Some(Item::Write { key, write, logged }) => self.accept(key, write, logged).await,
                Some(Item::Flush(done)) => {
                    self.deliver().await;
                    let _ = done.send(());
                }
                Some(Item::Shutdown(done)) => {
                    self.drain().await;
                    tracing::info!(
                        "write-behind shut down; every acknowledged write was handed to the writer"
                    );
                    let _ = done.send(());
                    return;
                }
                None => {
                    self.deliver().await;
                    tracing::info!("write-behind drained after its last handle was dropped");
                    return;
                }
            }
        }
    }

    async fn accept(&mut self, key: String, write: Write<K, V>, logged: Option<Logged>) {
        self.shared.queue_depth_changed(-1);
        let (write, entry) = match logged {
            None => (write, None),
            Some(logged) => match logged.await {
                Ok(Some(id)) => (write.with_log_ids(vec![id.clone()]), Some(id)),
                // Not appended, so not acknowledged: the caller got an
                // error, and the write was taken out of `pending` before.
                _ => return,
            },
        };
        self.add(key, write, true, entry);
        if self.batch.len() >= self.config.max_batch {
            self.deliver().await;
        }
    }

    fn add(&mut self, key: String, write: Write<K, V>, live: bool, entry: Option<EntryId>) {
        if self.batch.is_empty() {
            self.deadline = Some(Instant::now() + self.config.max_delay);
        }
        self.batch
            .add(key, write, self.shared.merge.as_ref(), live, entry);
    }

    /// Stops taking writes and delivers everything queued.
    async fn drain(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.rx.close();
        let mut waiting = Vec::new();
        while let Some(item) = self.rx.recv().await {
            match item {
                Item::Write { key, write, logged } => self.accept(key, write, logged).await,
                Item::Flush(done) | Item::Shutdown(done) => waiting.push(done),
            }
        }
        self.deliver().await;
        for done in waiting {
            let _ = done.send(());
        }
    }

    /// Delivers the current batch, then settles it: in merge mode the
    /// cached values are dropped (the writer's value changed) and the
    /// writes no longer count as pending; in durable mode the log entries
    /// are acknowledged.
    async fn deliver(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.deadline = None;
        if batch.is_empty() {
            return;
        }
        let (writes, entries) = match self.durable.clone() {
            Some(durable) => logged_writes(&durable, &batch).await,
            None => (batch.writes(), Vec::new()),
        };
        let delivered = self.delivery.deliver(writes, &batch).await;
        // Acknowledged first: a crash before this delivers the batch again.
        if let Some(durable) = &self.durable
            && let Err(error) = durable.log.acknowledge(&entries).await
        {
            tracing::warn!(%error, entries = entries.len(), "delivered writes stay pending in the durable log; they will be delivered again after a restart");
        }
        if delivered && self.shared.merge.is_some() {
            for key in batch.keys() {
                self.cache.remove(key).await;
            }
        }
        for (key, live) in batch.live() {
            self.shared.forget_delivered(key, live);
        }
    }

    /// Durable mode: opens the log, delivers this consumer's own pending
    /// entries (left by a previous run under the same consumer identity)
    /// and those other consumers abandoned.
    async fn recover(&mut self) {
        let Some(durable) = self.durable.clone() else {
            return;
        };
        let mut recovery = Recovery::new(durable, self.config);
        recovery.open().await;
        let mut recovered = 0usize;
        while let Some(page) = recovery.own_page().await {
            recovered += self.take_recovered(page);
            self.deliver().await;
        }
        recovered += self.claim_abandoned().await;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "delivered the writes a previous run left in the durable log"
            );
        }
    }

    /// Durable mode, periodically: delivers what other consumers abandoned.
    async fn sweep(&mut self) {
        let recovered = self.claim_abandoned().await;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "delivered writes another consumer of the durable log abandoned"
            );
        }
    }

    /// Claims and delivers, page by page, what other consumers abandoned;
    /// returns how many writes.
    async fn claim_abandoned(&mut self) -> usize {
        let Some(durable) = self.durable.clone() else {
            return 0;
        };
        let mut claims = Claims::new(durable, self.config.max_batch);
        let mut recovered = 0;
        while let Some(page) = claims.next_page().await {
            if !page.is_empty() {
                // What this process acknowledged goes out first, so that it
                // is not overwritten by older writes of a dead process.
                self.deliver().await;
                recovered += self.take_recovered(page);
                self.deliver().await;
            }
        }
        recovered
    }

    /// Adds writes read back from the log to the batch; returns how many.
    fn take_recovered(&mut self, page: Vec<(EntryId, Write<K, V>)>) -> usize {
        let taken = page.len();
        for (id, write) in page {
            let key = key_in(&self.shared.namespace, &write.key);
            // An entry that replaced others carries their ids; any other
            // stands for itself.
            let write = if write.log_ids().is_empty() {
                write.with_log_ids(vec![id.clone()])
            } else {
                write
            };
            self.add(key, write, false, Some(id));
        }
        taken
    }

    /// Durable mode: how often to look for abandoned entries.
    fn sweep_interval(&self) -> Option<tokio::time::Interval> {
        let every =
            (self.durable.as_ref()?.log.claim_after_idle() / 2).max(Duration::from_millis(1));
        let mut sweep = tokio::time::interval_at(Instant::now() + every, every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(sweep)
    }
}

/// Durable mode: the writes of `batch` as the writer is to see them, and
/// the log entries they are, to acknowledge once delivered. The fresh
/// entries of a key become one write, which the log first takes as one
/// entry in their place: delivered again, it is delivered whole, with the
/// same ids. Where the log cannot do that (its backend away, or an entry
/// claimed by another consumer meanwhile), each entry goes out as a write
/// of its own, all in this one batch.
async fn logged_writes<K, V>(
    durable: &Durable<K, V>,
    batch: &Batch<K, V>,
) -> (Vec<Write<K, V>>, Vec<EntryId>)
where
    K: Clone,
    V: Clone,
{
    let plan = batch.plan();
    let mut groups = Vec::new();
    for planned in &plan {
        if let Planned::Group { write, parts } = planned {
            match (durable.encode)(write) {
                Ok(payload) => groups.push((
                    parts.iter().map(|(id, _)| id.clone()).collect(),
                    bytes::Bytes::from(payload),
                )),
                Err(error) => {
                    tracing::warn!(%error, "a coalesced write does not encode; its writes go out one by one");
                    groups.clear();
                    break;
                }
            }
        }
    }
    let mut replaced = if groups.is_empty() {
        None
    } else {
        match durable.log.replace(&groups).await {
            Ok(ids) if ids.len() == groups.len() => Some(ids.into_iter()),
            Ok(_) => {
                tracing::warn!(
                    "the durable log replaced entries, but answered with the wrong number of ids; the writes go out one by one"
                );
                None
            }
            Err(error) => {
                tracing::debug!(%error, groups = groups.len(), "the durable log did not take coalesced writes as one entry; their writes go out one by one");
                None
            }
        }
    };
    let mut writes = Vec::with_capacity(plan.len());
    let mut entries = Vec::with_capacity(plan.len());
    for planned in plan {
        let parts = match planned {
            Planned::Group { write, parts } => match replaced.as_mut().and_then(Iterator::next) {
                Some(entry) => {
                    writes.push(write);
                    entries.push(entry);
                    continue;
                }
                None => parts,
            },
            Planned::Entries(parts) => parts,
        };
        for (entry, write) in parts {
            writes.push(write);
            entries.push(entry);
        }
    }
    (writes, entries)
}

async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
