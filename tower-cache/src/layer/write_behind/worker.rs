//! The background worker: batches, coalesces, delivers with retries.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;
use tracing::Instrument;

use super::layer::{DeadLetterFn, Limits, MergeFn, WriteBehindLayer};
use super::{DeadLetter, WriteBehind, WriteBehindStats};
use crate::Cache;
use crate::codec::CacheKey;
use crate::layer::write::Write;
use crate::store::Store;

/// What travels through the queue.
pub(super) enum Item<K, V> {
    Write {
        key: String,
        write: Write<K, V>,
        /// Durable mode: the log entry id once appended, `None` if that
        /// failed (the write was then not acknowledged).
        logged: Option<oneshot::Receiver<Option<String>>>,
    },
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
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
    pub recovered: tokio::sync::watch::Sender<bool>,
    pub counters: Counters,
}

impl<V> Shared<V> {
    pub(super) fn stats(&self) -> WriteBehindStats {
        let c = &self.counters;
        WriteBehindStats {
            queued: c.queued.load(Ordering::Relaxed).max(0) as u64,
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            dead_letters: c.dead_letters.load(Ordering::Relaxed),
        }
    }

    /// Merge mode: stops counting the write `id` to `key` as pending.
    #[cfg(feature = "redis")]
    pub(super) fn forget_pending_write(&self, key: &str, id: u64) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(queue) = pending.get_mut(key) {
            queue.retain(|(write, _)| *write != id);
            if queue.is_empty() {
                pending.remove(key);
            }
        }
    }

    pub(super) fn queue_depth_changed(&self, delta: i64) {
        let depth = self.counters.queued.fetch_add(delta, Ordering::Relaxed) + delta;
        metrics::gauge!("tower_cache_write_behind_queue_depth", "cache" => self.name.to_string())
            .set(depth.max(0) as f64);
    }
}

/// One batch: the writes of each key coalesced, keys in order of first
/// appearance.
struct Batch<K, V> {
    index: HashMap<String, usize>,
    /// Per key: the coalesced write and how many of its writes are counted
    /// in [`Shared::pending`] (those acknowledged by this process; writes
    /// recovered from the durable log are not).
    writes: Vec<(String, Write<K, V>, usize)>,
    items: usize,
    deadline: Option<Instant>,
    /// Durable mode: the log entries the batch holds.
    logged: Vec<String>,
}

impl<K, V> Batch<K, V> {
    fn new() -> Self {
        Batch {
            index: HashMap::new(),
            writes: Vec::new(),
            items: 0,
            deadline: None,
            logged: Vec::new(),
        }
    }

    /// Adds a write; `live` when it was acknowledged by this process (and
    /// so counted in [`Shared::pending`]), not when recovered from the log.
    fn add(
        &mut self,
        key: String,
        write: Write<K, V>,
        merge: Option<&MergeFn<V>>,
        delay: Duration,
        live: bool,
    ) {
        let live = usize::from(live);
        self.items += 1;
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + delay);
        }
        match self.index.get(&key) {
            Some(&i) => {
                let (_, existing, count) = &mut self.writes[i];
                existing.value = match merge {
                    Some(merge) => merge(&existing.value, &write.value),
                    None => write.value,
                };
                existing.key = write.key;
                *count += live;
            }
            None => {
                self.index.insert(key.clone(), self.writes.len());
                self.writes.push((key, write, live));
            }
        }
    }
}

struct Worker<S, K, V, St> {
    rx: mpsc::Receiver<Item<K, V>>,
    writer: S,
    shared: Arc<Shared<V>>,
    cache: Cache<St>,
    limits: Limits,
    dead_letter: Option<DeadLetterFn<K, V>>,
    batch: Batch<K, V>,
    #[cfg(feature = "redis")]
    durable: Option<super::layer::Durable<K, V>>,
}

/// Starts the worker for `layer` over `writer` and returns the first
/// service.
pub(super) fn start<S, K, V, St>(
    layer: WriteBehindLayer<K, V, St>,
    writer: S,
) -> WriteBehind<K, V, St>
where
    S: Service<Vec<Write<K, V>>> + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Display,
    K: CacheKey + Clone + Send + Sync + 'static,
    V: serde::Serialize + Clone + Send + Sync + 'static,
    St: Store,
{
    let (tx, rx) = mpsc::channel(layer.limits.queue_capacity);
    let shared = Arc::new(Shared {
        name: Arc::from(layer.profile.name()),
        namespace: layer.namespace.clone(),
        merge: layer.merge.clone(),
        pending: Mutex::new(HashMap::new()),
        latest: Mutex::new(HashMap::new()),
        seq: AtomicU64::new(0),
        stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        closed: AtomicBool::new(false),
        recovered: tokio::sync::watch::Sender::new(false),
        counters: Counters::default(),
    });
    let worker = Worker {
        rx,
        writer,
        shared: shared.clone(),
        cache: layer.cache.clone(),
        limits: layer.limits,
        dead_letter: layer.dead_letter.clone(),
        batch: Batch::new(),
        #[cfg(feature = "redis")]
        durable: layer.durable.clone(),
    };
    let span = tracing::info_span!("tower_cache.write_behind", name = %layer.profile.name());
    tokio::spawn(worker.run().instrument(span));
    let service = WriteBehind::new(tx, shared, layer.cache, layer.profile);
    #[cfg(feature = "redis")]
    let service = service.with_durable(layer.durable);
    service
}

impl<S, K, V, St> Worker<S, K, V, St>
where
    S: Service<Vec<Write<K, V>>> + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Display,
    K: CacheKey + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    St: Store,
{
    async fn run(mut self) {
        #[cfg(feature = "redis")]
        let _heartbeat = self.recover().await;
        self.shared.recovered.send_replace(true);
        let mut sweep = self.sweep_interval();
        loop {
            let deadline = self.batch.deadline;
            let item = tokio::select! {
                item = self.rx.recv() => item,
                _ = sleep_until(deadline) => {
                    self.deliver().await;
                    continue;
                }
                _ = tick(sweep.as_mut()) => {
                    #[cfg(feature = "redis")]
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

    async fn accept(
        &mut self,
        key: String,
        write: Write<K, V>,
        logged: Option<oneshot::Receiver<Option<String>>>,
    ) {
        self.shared.queue_depth_changed(-1);
        if let Some(logged) = logged {
            match logged.await {
                Ok(Some(id)) => self.batch.logged.push(id),
                // Not appended, so not acknowledged: the caller got an
                // error, and the write was taken out of `pending` before.
                _ => return,
            }
        }
        let delay = self.limits.max_delay;
        self.batch
            .add(key, write, self.shared.merge.as_ref(), delay, true);
        if self.batch.writes.len() >= self.limits.max_batch {
            self.deliver().await;
        }
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

    /// Hands the current batch to the writer, retrying with backoff; what
    /// still fails goes to the dead-letter handler.
    async fn deliver(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Batch::new());
        if batch.writes.is_empty() {
            return;
        }
        let c = &self.shared.counters;
        let coalesced = (batch.items - batch.writes.len()) as u64;
        c.coalesced.fetch_add(coalesced, Ordering::Relaxed);
        let name = self.shared.name.to_string();
        metrics::counter!("tower_cache_write_behind_coalesced_total", "cache" => name.clone())
            .increment(coalesced);
        let writes: Vec<Write<K, V>> = batch.writes.iter().map(|(_, w, _)| w.clone()).collect();
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        let outcome = loop {
            let ready = self
                .writer
                .ready()
                .await
                .map(drop)
                .map_err(|e| e.to_string());
            let result = match ready {
                Ok(()) => self
                    .writer
                    .call(writes.clone())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break Ok(()),
                Err(error) if attempt >= self.limits.max_retries => break Err(error),
                Err(error) => {
                    attempt += 1;
                    c.retries.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("tower_cache_write_behind_retries_total", "cache" => name.clone())
                        .increment(1);
                    let wait = self.backoff(attempt);
                    tracing::warn!(%error, attempt, ?wait, writes = writes.len(), "write-behind batch failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let merge_mode = self.shared.merge.is_some();
        match outcome {
            Ok(()) => {
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.delivered
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                metrics::counter!("tower_cache_write_behind_batches_total", "cache" => name.clone())
                    .increment(1);
                metrics::histogram!("tower_cache_write_behind_flush_seconds", "cache" => name)
                    .record(started.elapsed().as_secs_f64());
                if merge_mode {
                    // The writer's value changed: reload it, then stop
                    // counting what it now includes.
                    for (key, _, _) in &batch.writes {
                        self.cache.remove(key).await;
                    }
                }
            }
            Err(error) => {
                c.dead_letters
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                metrics::counter!("tower_cache_write_behind_dead_letters_total", "cache" => name)
                    .increment(writes.len() as u64);
                let keys: Vec<&str> = batch.writes.iter().map(|(k, _, _)| k.as_str()).collect();
                match &self.dead_letter {
                    Some(handler) => {
                        tracing::warn!(%error, ?keys, "write-behind batch given to the dead-letter handler");
                        handler(DeadLetter {
                            writes,
                            error,
                            attempts: attempt + 1,
                        });
                    }
                    None => tracing::error!(
                        %error,
                        ?keys,
                        attempts = attempt + 1,
                        "write-behind batch failed after every retry; these writes did not reach the writer"
                    ),
                }
            }
        }
        for (key, _, count) in &batch.writes {
            self.forget_pending(key, *count);
        }
        #[cfg(feature = "redis")]
        if let Some(durable) = &self.durable
            && let Err(error) = durable.queue.ack(&batch.logged).await
        {
            tracing::warn!(%error, entries = batch.logged.len(), "delivered writes stay pending in the durable log; they will be delivered again after a restart");
        }
    }

    /// Merge mode: stops counting `count` writes to `key` as pending.
    fn forget_pending(&self, key: &str, count: usize) {
        if self.shared.merge.is_none() || count == 0 {
            return;
        }
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(queue) = pending.get_mut(key) {
            queue.drain(..count.min(queue.len()));
            if queue.is_empty() {
                pending.remove(key);
            }
        }
    }

    /// Durable mode: creates the consumer group, delivers this consumer's
    /// own pending entries (left by a previous run under the same consumer
    /// name) and those other consumers abandoned, then starts the task that
    /// keeps this consumer's entries from being claimed while it lives.
    /// Dropping the returned guard stops that task.
    #[cfg(feature = "redis")]
    async fn recover(&mut self) -> Option<AbortOnDrop> {
        let durable = self.durable.clone()?;
        let queue = &durable.queue;
        let mut failures = 0;
        while let Err(error) = queue.create_group().await {
            if failures >= 5 {
                tracing::error!(%error, "cannot create the durable log's consumer group; what the log holds is delivered later");
                break;
            }
            failures += 1;
            tracing::warn!(%error, "cannot reach the durable log yet; retrying");
            tokio::time::sleep(self.backoff(failures)).await;
        }
        let mut after = "0".to_owned();
        let mut recovered = 0usize;
        loop {
            let page = match queue.own_pending(&after, self.limits.max_batch).await {
                Ok(page) => page,
                Err(error) if failures < 5 => {
                    failures += 1;
                    tracing::warn!(%error, "cannot read the durable log yet; retrying");
                    tokio::time::sleep(self.backoff(failures)).await;
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the durable log; what it holds is delivered later");
                    break;
                }
            };
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            recovered += self.take_recovered(&durable, page).await;
            self.deliver().await;
        }
        recovered += self.claim_abandoned(&durable).await;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "delivered the writes a previous run left in the durable log"
            );
        }
        let heartbeat = durable.queue.clone();
        let every = heartbeat.claim_after_idle() / 4;
        let span = tracing::debug_span!("tower_cache.write_behind.heartbeat");
        let task = tokio::spawn(
            async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if let Err(error) = heartbeat.touch().await {
                        tracing::warn!(%error, "cannot keep this consumer's pending writes; another consumer may deliver them too");
                    }
                }
            }
            .instrument(span),
        );
        Some(AbortOnDrop(task.abort_handle()))
    }

    /// Durable mode, periodically: delivers what other consumers abandoned.
    #[cfg(feature = "redis")]
    async fn sweep(&mut self) {
        let Some(durable) = self.durable.clone() else {
            return;
        };
        let recovered = self.claim_abandoned(&durable).await;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "delivered writes another consumer of the durable log abandoned"
            );
        }
    }

    /// Claims and delivers, page by page, the entries other consumers left
    /// idle for the queue's `claim_after`.
    #[cfg(feature = "redis")]
    async fn claim_abandoned(&mut self, durable: &super::layer::Durable<K, V>) -> usize {
        let mut after = "-".to_owned();
        let mut recovered = 0;
        loop {
            let (page, next) = match durable
                .queue
                .claim_abandoned(&after, self.limits.max_batch)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim abandoned entries of the durable log; trying again later");
                    return recovered;
                }
            };
            if !page.is_empty() {
                // What this process acknowledged goes out first, so that it
                // is not overwritten by older writes of a dead process.
                self.deliver().await;
                recovered += self.take_recovered(durable, page).await;
                self.deliver().await;
            }
            match next {
                Some(next) => after = next,
                None => return recovered,
            }
        }
    }

    /// Adds entries read back from the log to the batch; returns how many.
    #[cfg(feature = "redis")]
    async fn take_recovered(
        &mut self,
        durable: &super::layer::Durable<K, V>,
        page: Vec<(String, bytes::Bytes)>,
    ) -> usize {
        let mut taken = 0;
        for (id, payload) in page {
            match (durable.decode)(&payload) {
                Ok(write) => {
                    let key = crate::codec::key_in(&self.shared.namespace, &write.key);
                    self.batch.logged.push(id);
                    self.batch.add(
                        key,
                        write,
                        self.shared.merge.as_ref(),
                        self.limits.max_delay,
                        false,
                    );
                    taken += 1;
                }
                Err(error) => {
                    tracing::error!(%error, id, "dropping an undecodable entry of the durable log");
                    let _ = durable.queue.ack(&[id]).await;
                }
            }
        }
        taken
    }

    /// Durable mode: how often to look for abandoned entries.
    fn sweep_interval(&self) -> Option<tokio::time::Interval> {
        #[cfg(feature = "redis")]
        if let Some(durable) = &self.durable {
            let every = durable.queue.claim_after_idle() / 2;
            let mut sweep = tokio::time::interval_at(Instant::now() + every, every);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            return Some(sweep);
        }
        None
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .limits
            .backoff
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.limits.max_backoff);
        base.mul_f64(0.5 + rand::random::<f64>())
    }
}

/// Aborts a task when dropped.
#[cfg(feature = "redis")]
struct AbortOnDrop(tokio::task::AbortHandle);

#[cfg(feature = "redis")]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
