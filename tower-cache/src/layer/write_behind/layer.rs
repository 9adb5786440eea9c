//! The layer: its builder methods, and `pair` to run the worker yourself.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use super::batch::{Batch, MergeFn};
use super::config::Config;
use super::deliver::{DeadLetterFn, Delivery};
use super::durable::Durable;
use super::queue::Shared;
use super::worker::Worker;
use super::{DeadLetter, DurableLog, WriteBehind, WriteBehindWorker};
use crate::codec::CacheKey;
use crate::layer::write::Write;
use crate::store::{SharedStore, Store};
use crate::{Cache, Policy, Profile};

/// Applies [`WriteBehind`] to a batch writer. See the
/// [module docs](crate::layer::write_behind).
pub struct WriteBehindLayer<K, V, St = SharedStore> {
    cache: Cache<St>,
    profile: Profile,
    namespace: Arc<str>,
    config: Config,
    merge: Option<MergeFn<V>>,
    dead_letter: Option<DeadLetterFn<K, V>>,
    durable: Option<Durable<K, V>>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V, St> Clone for WriteBehindLayer<K, V, St> {
    fn clone(&self) -> Self {
        WriteBehindLayer {
            cache: self.cache.clone(),
            profile: self.profile.clone(),
            namespace: self.namespace.clone(),
            config: self.config,
            merge: self.merge.clone(),
            dead_letter: self.dead_letter.clone(),
            durable: self.durable.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V, St> fmt::Debug for WriteBehindLayer<K, V, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehindLayer")
            .field("profile", &self.profile)
            .field("namespace", &self.namespace)
            .field("config", &self.config)
            .field("merge", &self.merge.is_some())
            .field("durable", &self.durable.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, V, St> WriteBehindLayer<K, V, St> {
    /// A layer over `cache`, named `name` (the metrics label); cached
    /// values get `policy`'s TTL and stale window.
    pub fn new(cache: Cache<St>, name: impl Into<String>, policy: Policy) -> Self {
        WriteBehindLayer {
            cache,
            profile: Profile::new(name, policy),
            namespace: Arc::from(""),
            config: Config::default(),
            merge: None,
            dead_letter: None,
            durable: None,
            _types: PhantomData,
        }
    }

    /// Prefix of every key, the same as the read layer's. Default: empty.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Arc::from(namespace.into());
        self
    }

    /// A batch goes out when it holds this many distinct keys. Default:
    /// [`DEFAULT_MAX_BATCH`](super::DEFAULT_MAX_BATCH) (100).
    #[must_use]
    pub fn max_batch(mut self, keys: usize) -> Self {
        self.config.max_batch = keys.max(1);
        self
    }

    /// A batch goes out at the latest this long after its first write.
    /// Default: [`DEFAULT_MAX_DELAY`](super::DEFAULT_MAX_DELAY) (100 ms).
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.config.max_delay = delay;
        self
    }

    /// Writes acknowledged but not yet taken by the worker. When the queue
    /// is full, `poll_ready` is pending until the writer catches up.
    /// Default: [`DEFAULT_QUEUE_CAPACITY`](super::DEFAULT_QUEUE_CAPACITY) (10,000).
    #[must_use]
    pub fn queue_capacity(mut self, writes: usize) -> Self {
        self.config.queue_capacity = writes.max(1);
        self
    }

    /// Retries of a failed batch before it goes to the dead-letter handler.
    /// Default: [`DEFAULT_MAX_RETRIES`](super::DEFAULT_MAX_RETRIES) (5).
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.max_retries = retries;
        self
    }

    /// The first retry delay; each retry doubles it (with ±50 % jitter), up
    /// to `max`. Default: [`DEFAULT_BACKOFF`](super::DEFAULT_BACKOFF)
    /// (100 ms), up to [`DEFAULT_MAX_BACKOFF`](super::DEFAULT_MAX_BACKOFF) (5 s).
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.config.backoff = first;
        self.config.max_backoff = max.max(first);
        self
    }

    /// Increment-style writes: repeated writes to one key combine with
    /// `merge(earlier, later)` (for a counter, a sum), so 1,000 increments
    /// reach the writer as one write of the total. `merge` must be
    /// associative. With a merge function the cache is not set by a write
    /// (it holds the writer's value, which the write changes): the writes
    /// not yet delivered are read with
    /// [`WriteBehindHandle::pending`](super::WriteBehindHandle::pending),
    /// and the key is removed from the cache once its batch is delivered.
    /// Default: none (the last write to a key wins, and the cache is set to
    /// it at once).
    #[must_use]
    pub fn merge(mut self, merge: impl Fn(&V, &V) -> V + Send + Sync + 'static) -> Self {
        self.merge = Some(Arc::new(merge));
        self
    }

    /// Receives the writes of a batch that still failed after every retry.
    /// Default: they are logged at error level with their keys. Either way
    /// they are counted in [`WriteBehindStats::dead_letters`](super::WriteBehindStats).
    #[must_use]
    pub fn dead_letter(
        mut self,
        handler: impl Fn(DeadLetter<K, V>) + Send + Sync + 'static,
    ) -> Self {
        self.dead_letter = Some(Arc::new(handler));
        self
    }

    /// The profile: name, policy and counters.
    #[must_use]
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Durable mode: every write is also appended to `log` (for example a
    /// [`RedisQueue`](crate::store::RedisQueue), a Redis Stream read by a
    /// consumer group) before it is acknowledged, and acknowledged there
    /// once the writer has it (or the dead-letter handler). When the worker
    /// starts it opens the log and first delivers what a previous run of
    /// the same consumer left pending; from then on it periodically claims
    /// and delivers what dead consumers of the log left, so every
    /// acknowledged write reaches the writer at least once. New writes are
    /// appended only once the first recovery is done. A write that cannot
    /// be appended (the log's backend down) fails with
    /// [`DurableLogUnavailable`](super::DurableLogUnavailable) instead of
    /// being acknowledged. Writes are stored as JSON. Default: off (the
    /// queue lives in process memory).
    ///
    /// # Exactly once
    ///
    /// A crash between the writer's success and the log's acknowledgement
    /// delivers the same writes again (after the restart, or from another
    /// process that claims them). Each write the writer is given carries
    /// [`Write::log_ids`]: the log ids of the acknowledged writes it stands
    /// for (several when it coalesces writes to one key), the same on every
    /// delivery. An exactly-once writer records them in the same
    /// transaction as the write's effect, and skips a write one of whose
    /// ids it has recorded already; in SQL, a table `applied (id TEXT
    /// PRIMARY KEY)`, and per write an `INSERT … ON CONFLICT DO NOTHING` of
    /// each id, the effect applied only when every insert added a row, one
    /// commit for the batch. Every acknowledged write then takes effect
    /// exactly once, whenever the process dies.
    ///
    /// A write coalescing several is first appended to the log as one
    /// entry in their place ([`DurableLog::replace`]), so that it is
    /// delivered again whole. Writes read back from the log (after a
    /// restart or a claim) are not coalesced, since some may have been
    /// applied already: a batch can then hold several writes to one key,
    /// in the order they were acknowledged; so can a batch whose coalesced
    /// writes the log could not take as one entry.
    ///
    /// The applied ids are needed only while their writes can come back:
    /// with a [`RedisQueue`](crate::store::RedisQueue), while they are in
    /// the stream ([`RedisQueue::oldest`](crate::store::RedisQueue::oldest)
    /// bounds them).
    ///
    /// ```no_run
    /// use std::collections::{HashMap, HashSet};
    /// use std::sync::{Arc, Mutex, PoisonError};
    /// use tower::service_fn;
    /// use tower_cache::layer::write_behind::EntryId;
    /// use tower_cache::store::{MemoryStore, RedisQueue, RedisStore};
    /// use tower_cache::{Cache, Policy, Write, WriteBehindLayer};
    /// use tower_layer::Layer;
    ///
    /// /// The database: view counts, and the log ids applied to them.
    /// #[derive(Default)]
    /// struct Db {
    ///     views: HashMap<u64, i64>,
    ///     applied: HashSet<EntryId>,
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
    /// let l2 = RedisStore::new("redis://127.0.0.1:6379")?;
    /// let db = Arc::new(Mutex::new(Db::default()));
    /// let views = WriteBehindLayer::<u64, i64, _>::new(
    ///     Cache::new(MemoryStore::default()),
    ///     "views",
    ///     Policy::default(),
    /// )
    /// .merge(|a, b| a + b)
    /// // A consumer name that survives restarts: a restart delivers what it left at once.
    /// .durable(RedisQueue::new(&l2, "views").consumer("web-1"))
    /// .layer(service_fn({
    ///     let db = db.clone();
    ///     move |batch: Vec<Write<u64, i64>>| {
    ///         // One lock for the batch stands for one transaction.
    ///         let mut db = db.lock().unwrap_or_else(PoisonError::into_inner);
    ///         for write in batch {
    ///             if write.log_ids().iter().any(|id| db.applied.contains(id)) {
    ///                 continue; // applied before a crash, delivered again
    ///             }
    ///             db.applied.extend(write.log_ids().iter().cloned());
    ///             *db.views.entry(write.key).or_default() += write.value;
    ///         }
    ///         async { Ok::<_, std::io::Error>(()) }
    ///     }
    /// }));
    /// # drop(views);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn durable(mut self, log: impl DurableLog) -> Self
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.durable = Some(Durable::json(Arc::new(log)));
        self
    }

    /// The service over `writer` and the worker that delivers its queue,
    /// for running the worker yourself (on a runtime or task of your
    /// choice, under your own supervision), like tower's `Buffer::pair`.
    /// Nothing is delivered, and [`flush`](super::WriteBehindHandle::flush)
    /// and [`shutdown`](super::WriteBehindHandle::shutdown) wait, until the
    /// worker is polled. [`Layer::layer`] spawns it instead.
    ///
    /// ```
    /// use tower::{ServiceExt, service_fn};
    /// use tower_cache::store::{MemoryStore, SharedStore};
    /// use tower_cache::{Cache, Policy, Write, WriteBehindLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
    /// let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    /// let (prices, worker) = WriteBehindLayer::<u64, i64>::new(cache, "prices", Policy::default())
    ///     .pair(service_fn(|batch: Vec<Write<u64, i64>>| async move {
    ///         Ok::<_, std::io::Error>(())
    ///     }));
    /// let worker = tokio::spawn(worker);
    /// prices.clone().oneshot(Write::new(1, 250)).await?;
    /// prices.handle().shutdown().await; // delivered; the worker returns
    /// worker.await?;
    /// # Ok(()) }
    /// ```
    pub fn pair<S>(&self, writer: S) -> (WriteBehind<K, V, St>, WriteBehindWorker)
    where
        S: Service<Vec<Write<K, V>>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        K: CacheKey + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        St: Store,
    {
        let (tx, rx) = mpsc::channel(self.config.queue_capacity);
        let shared = Arc::new(Shared::new(
            self.profile.name(),
            self.namespace.clone(),
            self.merge.clone(),
        ));
        let worker = Worker {
            rx,
            shared: shared.clone(),
            cache: self.cache.clone(),
            config: self.config,
            delivery: Delivery {
                writer,
                config: self.config,
                dead_letter: self.dead_letter.clone(),
                shared: shared.clone(),
            },
            durable: self.durable.clone(),
            batch: Batch::default(),
            deadline: None,
        };
        let service = WriteBehind::new(
            tx,
            shared,
            self.cache.clone(),
            self.profile.clone(),
            self.durable.clone(),
        );
        (
            service,
            WriteBehindWorker::new(worker.run(), self.profile.name()),
        )
    }
}

impl<S, K, V, St> Layer<S> for WriteBehindLayer<K, V, St>
where
    S: Service<Vec<Write<K, V>>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    K: CacheKey + Clone + Send + Sync + 'static,
    V: serde::Serialize + Clone + Send + Sync + 'static,
    St: Store,
{
    type Service = WriteBehind<K, V, St>;

    /// Spawns the worker (task `tower_cache.write_behind`) that delivers
    /// batches to `writer`; the queue's handles own it, and
    /// [`shutdown`](super::WriteBehindHandle::shutdown) waits for it. Must
    /// be called within a Tokio runtime. See [`pair`](WriteBehindLayer::pair)
    /// to run the worker yourself.
    fn layer(&self, writer: S) -> Self::Service {
        let (service, worker) = self.pair(writer);
        service.spawn_worker(worker);
        service
    }
}
