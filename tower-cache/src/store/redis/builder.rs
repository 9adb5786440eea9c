//! The [`RedisStore`] builder: its knobs and their defaults.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::{Client, IntoConnectionInfo};

use super::breaker::{Breaker, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_INTERVAL};
use super::connection::{Lua, RedisConnection};
use super::decoded::DecodedEntries;
use super::keys::Keys;
use super::replay::{DEFAULT_MAX_PENDING_INVALIDATIONS, ReplayQueue};
use super::replicas::{DEFAULT_HOT_KEY_MIN_RATE, Replicas};
use super::scripts::{INVALIDATE, STAMPS, VERSION};
use super::stamps::KnownStamps;
use super::tracked::Tracker;
use super::{Inner, RedisStore};
use crate::store::StoreError;

/// Default timeout of one Redis operation (all its commands): 200 ms.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(200);
/// Default timeout of one connection attempt: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default longest lifetime of an entry in Redis: 24 h.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default longest load a key remove is ordered against: 60 s (six times
/// [`Policy`](crate::Policy)'s default load timeout).
pub const DEFAULT_MAX_LOAD_TIME: Duration = Duration::from_secs(60);
/// Default key namespace prefix.
pub const DEFAULT_PREFIX: &str = "tc:";

/// Where the store's Redis is.
#[derive(Debug, Clone)]
enum Target {
    /// One server, by URL.
    Single(String),
    /// A Redis Cluster, by the URLs of some of its nodes.
    Cluster(Vec<String>),
}

/// Builds a [`RedisStore`], on a single node ([`RedisStore::builder`]) or
/// a Redis Cluster ([`RedisStore::cluster_builder`]), with the same knobs.
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    op_timeout: Duration,
    connect_timeout: Duration,
    max_ttl: Duration,
    max_load_time: Duration,
    failure_threshold: u64,
    retry_interval: Duration,
    max_pending: usize,
    hot_replicas: usize,
    hot_min_rate: u64,
    tracking: bool,
}

impl RedisStoreBuilder {
    /// Keeps `replicas` copies of every hot key's entry in other slots, for
    /// a Redis Cluster, where one key read by every instance would
    /// otherwise load one shard alone: reads of a key read at least
    /// [`hot_key_min_rate`](Self::hot_key_min_rate) times a second pick
    /// one of its copies at random, each one `MGET` (the copy and a copy
    /// of the namespace's counter, in one slot) on the node of that
    /// copy's slot. Copy `n` of every key is in one slot named by the
    /// prefix, so the copies spread over the masters as `replicas` slots
    /// do: ask for a few more than there are masters. Every write and remove of
    /// any key then also writes or removes its copies (one more round
    /// trip), and every tag invalidation moves one counter copy per
    /// replica; a remove, write or invalidation is seen through the copies
    /// exactly as through the entry. [`RedisStore::replicated_keys`] lists
    /// the keys read from copies. Default: 0 (no copies).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tower_cache::store::RedisStore;
    ///
    /// let store = RedisStore::cluster_builder(["redis://127.0.0.1:7000"])
    ///     .hot_key_replicas(3)
    ///     .hot_key_min_rate(500)
    ///     .build()
    ///     .unwrap();
    /// assert!(store.replicated_keys().is_empty());
    /// # }
    /// ```
    #[must_use]
    pub fn hot_key_replicas(mut self, replicas: usize) -> Self {
        self.hot_replicas = replicas;
        self
    }

    /// Whether a single node's hit is one `GET` on a second connection of
    /// the store's own, on which Redis tracks the namespace's invalidation
    /// counter (`CLIENT TRACKING ON OPTIN`, RESP3; Redis 6 or later): Redis
    /// tells that connection when the counter changes, so the counter is
    /// read again only then, not beside every entry. Until that connection
    /// is up, and on a server that refuses RESP3 or client tracking, a hit
    /// is one `MGET` of the entry and the counter on the main connection;
    /// both decide exactly alike. Not used on a cluster. Default: `true`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tower_cache::store::RedisStore;
    ///
    /// // One connection per store, a hit reading the counter each time.
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .client_tracking(false)
    ///     .build()
    ///     .unwrap();
    /// # }
    /// ```
    #[must_use]
    pub fn client_tracking(mut self, enabled: bool) -> Self {
        self.tracking = enabled;
        self
    }

    /// How many reads a second (counted by this store) make a key hot, for
    /// [`hot_key_replicas`](Self::hot_key_replicas). Default:
    /// [`DEFAULT_HOT_KEY_MIN_RATE`](crate::store::DEFAULT_HOT_KEY_MIN_RATE)
    /// (1 000).
    #[must_use]
    pub fn hot_key_min_rate(mut self, reads_per_second: u64) -> Self {
        self.hot_min_rate = reads_per_second;
        self
    }

    /// How many distinct removes and tag invalidations (and keys whose
    /// write failed) are kept for replay while Redis cannot be reached.
    /// Past that, they are dropped and every entry of the namespace is
    /// invalidated on recovery instead. Default:
    /// [`DEFAULT_MAX_PENDING_INVALIDATIONS`](crate::store::DEFAULT_MAX_PENDING_INVALIDATIONS)
    /// (10 000).
    #[must_use]
    pub fn max_pending_invalidations(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Consecutive failures (errors, timeouts) that open the circuit
    /// breaker; a refused, reset or closed connection opens it at once, and
    /// so does a timeout when nothing at all succeeded while it waited.
    /// While it is open every operation fails at once with
    /// [`StoreError::Unavailable`], so a dead or paused Redis never makes a
    /// request wait. Default: [`DEFAULT_FAILURE_THRESHOLD`] (3).
    ///
    /// A [`TieredStore`](crate::store::TieredStore) has a breaker of its own
    /// (configured on its builder) and does not go through this one.
    #[must_use]
    pub fn failure_threshold(mut self, failures: u64) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// How often Redis is probed (one operation goes through) while the
    /// circuit breaker is open. Default: [`DEFAULT_RETRY_INTERVAL`] (1 s).
    #[must_use]
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The key namespace prefix. Default: [`DEFAULT_PREFIX`] (`"tc:"`).
    ///
    /// A prefix is a name closed by `:` (given with or without it: `"shop"`
    /// and `"shop:"` are the same prefix). The name may not be empty nor
    /// contain `:`, so that no prefix is the start of another's keys
    /// (`"app:"` and `"app:e:"` would overlap), nor `{` or `}`, which would
    /// move the hash tags the store's keys carry (see [`RedisStore`]):
    /// [`build`](Self::build) refuses one that does.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Timeout of one whole operation (`get`, `put`, `remove`,
    /// `remove_tag`), all its commands together. Default:
    /// [`DEFAULT_OP_TIMEOUT`] (200 ms): the longest a request waits on a
    /// Redis that stops answering before the circuit breaker opens. A
    /// hit on the tracked connection ([`client_tracking`](Self::client_tracking))
    /// is bounded instead by that connection's watch, every half timeout:
    /// a request unanswered for two looks drops the connection and fails
    /// every read waiting on it.
    #[must_use]
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Timeout of one connection attempt (to each node, on a cluster).
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`] (1 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest time an entry is kept in Redis after it is written, and how
    /// long a tag invalidation is remembered after it is made. Also caps a [`TieredStore`](crate::store::TieredStore)'s
    /// L1 lifetime. Default: [`DEFAULT_MAX_TTL`] (24 h).
    #[must_use]
    pub fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// How long a key remove refuses the writes of loads that began
    /// before it: its tombstone ([`RedisStore::tombstone_key`]) is kept this long.
    /// Keep it above the longest [`Policy::load_timeout`](crate::Policy::load_timeout)
    /// of the layers using the store: a load that takes longer than this
    /// after a remove of its key can store the value it read before the
    /// remove. Default: [`DEFAULT_MAX_LOAD_TIME`] (60 s).
    #[must_use]
    pub fn max_load_time(mut self, max_load_time: Duration) -> Self {
        self.max_load_time = max_load_time;
        self
    }

    /// Builds the store without connecting; the connection is made on first
    /// use and remade whenever it breaks (on a cluster: to every master,
    /// found from the first seed node that answers). Its metrics (the
    /// store-wide ones in [`crate::metrics`]) are registered, at 0, with the
    /// recorder installed now.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for a prefix that could overlap another's or
    /// move a hash tag, and for a cluster seed list that is empty or holds
    /// an invalid URL (naming it); [`StoreError::Backend`] for an invalid
    /// single-node URL.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        let keys = Keys::new(&self.prefix)?;
        let mut tracker = None;
        let (clients, conn) = match &self.target {
            Target::Single(url) => {
                let client = Client::open(url.as_str()).map_err(backend)?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(self.op_timeout))
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(backend)?;
                if self.tracking {
                    tracker = Tracker::start(&client, self.connect_timeout, self.op_timeout);
                }
                (vec![client], RedisConnection::Single(conn))
            }
            Target::Cluster(seeds) => self.cluster(seeds)?,
        };
        crate::metrics::describe();
        Ok(RedisStore {
            inner: Arc::new(Inner {
                clients,
                conn,
                keys,
                op_timeout: self.op_timeout,
                max_ttl: self.max_ttl,
                max_load_time: self.max_load_time,
                invalidate: Lua::new(INVALIDATE),
                version: Lua::new(VERSION),
                stamps: Lua::new(STAMPS),
                known: KnownStamps::default(),
                decoded: DecodedEntries::default(),
                tracker,
                replicas: (self.hot_replicas > 0)
                    .then(|| Replicas::new(self.hot_replicas, self.hot_min_rate)),
                breaker: Breaker::new(self.failure_threshold, self.retry_interval),
                replay: ReplayQueue::new(self.max_pending),
                errors: ::metrics::counter!(crate::metrics::L2_ERRORS_TOTAL),
                corrupt: ::metrics::counter!(crate::metrics::STORE_CORRUPT_TOTAL),
            }),
        })
    }

    /// A client per seed and the cluster connection, made lazily.
    fn cluster(&self, seeds: &[String]) -> Result<(Vec<Client>, RedisConnection), StoreError> {
        if seeds.is_empty() {
            return Err(StoreError::Config(
                "a Redis Cluster store needs at least one seed node URL".to_owned(),
            ));
        }
        let mut infos = Vec::with_capacity(seeds.len());
        let mut clients = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let bad = |e: redis::RedisError| {
                StoreError::Config(format!("invalid Redis Cluster seed URL {seed:?}: {e}"))
            };
            let info = seed.as_str().into_connection_info().map_err(bad)?;
            clients.push(Client::open(info.clone()).map_err(bad)?);
            infos.push(info);
        }
        let client = ClusterClientBuilder::new(infos)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.op_timeout)
            .retries(2)
            .max_retry_wait(500)
            .build()
            .map_err(|e| StoreError::Config(format!("invalid Redis Cluster seed list: {e}")))?;
        let config = ClusterConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.op_timeout);
        let conn = client.get_pending_async_connection_with_config(config);
        Ok((clients, RedisConnection::Cluster(conn)))
    }
}

pub(super) fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl RedisStore {
    /// A builder for the Redis at `url` (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        Self::builder_for(Target::Single(url.into()))
    }

    /// A builder for the Redis Cluster whose nodes include `seeds` (URLs,
    /// `redis://host:port`): any of its nodes will do, several let the
    /// store start while one is down. The store finds every master from
    /// the first that answers, spreads its entries over all of them, and
    /// follows the cluster through resharding and failover. Same knobs and
    /// defaults as [`builder`](Self::builder).
    ///
    /// ```no_run
    /// use tower_cache::store::RedisStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let l2 = RedisStore::cluster_builder(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .prefix("catalog:")
    ///     .build()
    ///     .expect("valid seed URLs");
    /// # }
    /// ```
    pub fn cluster_builder<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
    ) -> RedisStoreBuilder {
        Self::builder_for(Target::Cluster(seeds.into_iter().map(Into::into).collect()))
    }

    /// A store for the Redis Cluster whose nodes include `seeds`, with the
    /// defaults (see [`cluster_builder`](Self::cluster_builder)).
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for an empty or invalid seed list.
    pub fn cluster<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
    ) -> Result<Self, StoreError> {
        Self::cluster_builder(seeds).build()
    }

    fn builder_for(target: Target) -> RedisStoreBuilder {
        RedisStoreBuilder {
            target,
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_ttl: DEFAULT_MAX_TTL,
            max_load_time: DEFAULT_MAX_LOAD_TIME,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            max_pending: DEFAULT_MAX_PENDING_INVALIDATIONS,
            hot_replicas: 0,
            hot_min_rate: DEFAULT_HOT_KEY_MIN_RATE,
            tracking: true,
        }
    }

    /// A store for the Redis at `url` with the defaults.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for an invalid URL.
    pub fn new(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).build()
    }
}
