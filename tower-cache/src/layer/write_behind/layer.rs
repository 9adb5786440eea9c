use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::{DeadLetter, WriteBehind, worker};
use crate::codec::CacheKey;
use crate::layer::write::Write;
use crate::store::{SharedStore, Store};
use crate::{Cache, Policy, Profile};

/// Default largest batch (distinct keys): 100.
pub const DEFAULT_MAX_BATCH: usize = 100;
/// Default longest wait before a batch goes out: 100 ms.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);
/// Default queue capacity (writes): 10,000.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default retries of a failed batch: 5.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default first retry delay: 100 ms, doubling up to 5 s.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);

pub(super) type MergeFn<V> = Arc<dyn Fn(&V, &V) -> V + Send + Sync>;

#[cfg(feature = "redis")]
pub(super) type EncodeFn<K, V> = fn(&Write<K, V>) -> Result<Vec<u8>, String>;
#[cfg(feature = "redis")]
pub(super) type DecodeFn<K, V> = fn(&[u8]) -> Result<Write<K, V>, String>;

/// The durable log and how writes are written to it and read back.
#[cfg(feature = "redis")]
pub(super) struct Durable<K, V> {
    pub queue: crate::store::RedisQueue,
    pub encode: EncodeFn<K, V>,
    pub decode: DecodeFn<K, V>,
}

#[cfg(feature = "redis")]
impl<K, V> Clone for Durable<K, V> {
    fn clone(&self) -> Self {
        Durable {
            queue: self.queue.clone(),
            encode: self.encode,
            decode: self.decode,
        }
    }
}
pub(super) type DeadLetterFn<K, V> = Arc<dyn Fn(DeadLetter<K, V>) + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_batch: usize,
    pub max_delay: Duration,
    pub queue_capacity: usize,
    pub max_retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

/// Applies [`WriteBehind`] to a batch writer. See the
/// [module docs](crate::layer::write_behind).
pub struct WriteBehindLayer<K, V, St = SharedStore> {
    pub(super) cache: Cache<St>,
    pub(super) profile: Profile,
    pub(super) namespace: Arc<str>,
    pub(super) limits: Limits,
    pub(super) merge: Option<MergeFn<V>>,
    pub(super) dead_letter: Option<DeadLetterFn<K, V>>,
    #[cfg(feature = "redis")]
    pub(super) durable: Option<Durable<K, V>>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V, St> Clone for WriteBehindLayer<K, V, St> {
    fn clone(&self) -> Self {
        WriteBehindLayer {
            cache: self.cache.clone(),
            profile: self.profile.clone(),
            namespace: self.namespace.clone(),
            limits: self.limits,
            merge: self.merge.clone(),
            dead_letter: self.dead_letter.clone(),
            #[cfg(feature = "redis")]
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
            .field("limits", &self.limits)
            .field("merge", &self.merge.is_some())
            .finish()
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
            limits: Limits {
                max_batch: DEFAULT_MAX_BATCH,
                max_delay: DEFAULT_MAX_DELAY,
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                max_retries: DEFAULT_MAX_RETRIES,
                backoff: DEFAULT_BACKOFF,
                max_backoff: Duration::from_secs(5),
            },
            merge: None,
            dead_letter: None,
            #[cfg(feature = "redis")]
            durable: None,
            _types: PhantomData,
        }
    }

    /// Prefix of every key, the same as the read layer's. Default: empty.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Arc::from(namespace.into());
        self
    }

    /// A batch goes out when it holds this many distinct keys. Default:
    /// [`DEFAULT_MAX_BATCH`] (100).
    pub fn max_batch(mut self, keys: usize) -> Self {
        self.limits.max_batch = keys.max(1);
        self
    }

    /// A batch goes out at the latest this long after its first write.
    /// Default: [`DEFAULT_MAX_DELAY`] (100 ms).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.limits.max_delay = delay;
        self
    }

    /// Writes acknowledged but not yet taken by the worker. When the queue
    /// is full, `poll_ready` is pending until the writer catches up.
    /// Default: [`DEFAULT_QUEUE_CAPACITY`] (10,000).
    pub fn queue_capacity(mut self, writes: usize) -> Self {
        self.limits.queue_capacity = writes.max(1);
        self
    }

    /// Retries of a failed batch before it goes to the dead-letter handler.
    /// Default: [`DEFAULT_MAX_RETRIES`] (5).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.limits.max_retries = retries;
        self
    }

    /// The first retry delay; each retry doubles it (with ±50 % jitter), up
    /// to `max`. Default: [`DEFAULT_BACKOFF`] (100 ms), up to 5 s.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.limits.backoff = first;
        self.limits.max_backoff = max.max(first);
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
    pub fn merge(mut self, merge: impl Fn(&V, &V) -> V + Send + Sync + 'static) -> Self {
        self.merge = Some(Arc::new(merge));
        self
    }

    /// Receives the writes of a batch that still failed after every retry.
    /// Default: they are logged at error level with their keys. Either way
    /// they are counted in [`WriteBehindStats::dead_letters`](super::WriteBehindStats).
    pub fn dead_letter(
        mut self,
        handler: impl Fn(DeadLetter<K, V>) + Send + Sync + 'static,
    ) -> Self {
        self.dead_letter = Some(Arc::new(handler));
        self
    }

    /// The profile: name, policy and counters.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Durable mode: every write is also appended to `queue` (a Redis
    /// Stream read by a consumer group, see [`RedisQueue`](crate::store::RedisQueue))
    /// before it is acknowledged, and acknowledged and deleted there once
    /// the writer has it (or the dead-letter handler). When the worker
    /// starts it creates the group if needed and first delivers what a
    /// previous run of the same consumer left pending; from then on it
    /// periodically claims and delivers what dead consumers of the queue
    /// left, so every acknowledged write reaches the writer at least once:
    /// the writer must be idempotent. New writes are appended only once the
    /// first recovery is done. A write that cannot be appended (Redis down)
    /// fails with [`DurableLogUnavailable`](super::DurableLogUnavailable)
    /// instead of being acknowledged. Writes are stored as JSON. Default:
    /// off (the queue lives in process memory).
    #[cfg(feature = "redis")]
    pub fn durable(mut self, queue: crate::store::RedisQueue) -> Self
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.durable = Some(Durable {
            queue,
            encode: |w| serde_json::to_vec(w).map_err(|e| e.to_string()),
            decode: |b| serde_json::from_slice(b).map_err(|e| e.to_string()),
        });
        self
    }
}

impl<S, K, V, St> Layer<S> for WriteBehindLayer<K, V, St>
where
    S: Service<Vec<Write<K, V>>> + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Display,
    K: CacheKey + Clone + Send + Sync + 'static,
    V: serde::Serialize + Clone + Send + Sync + 'static,
    St: Store,
{
    type Service = WriteBehind<K, V, St>;

    /// Starts the worker (task `tower_cache.write_behind`) that delivers
    /// batches to `writer`. Must be called within a Tokio runtime.
    fn layer(&self, writer: S) -> Self::Service {
        worker::start(self.clone(), writer)
    }
}
