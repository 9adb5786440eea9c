//! The [`RedisStore`] builder: its knobs and their defaults.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::breaker::{Breaker, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_INTERVAL};
use super::replay::{DEFAULT_MAX_PENDING_INVALIDATIONS, ReplayQueue};
use super::scripts::{INVALIDATE, READ, STAMPS, VERSION};
use super::stamps::KnownStamps;
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
/// What closes a namespace prefix; a prefix may not contain it elsewhere.
const PREFIX_SEPARATOR: char = ':';

/// Builds a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    op_timeout: Duration,
    connect_timeout: Duration,
    max_ttl: Duration,
    max_load_time: Duration,
    failure_threshold: u64,
    retry_interval: Duration,
    max_pending: usize,
}

impl RedisStoreBuilder {
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
    /// (`"app:"` and `"app:e:"` would overlap): [`build`](Self::build)
    /// refuses one that does.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Timeout of one whole operation (`get`, `put`, `remove`,
    /// `remove_tag`), all its commands together. Default:
    /// [`DEFAULT_OP_TIMEOUT`] (200 ms): the longest a request waits on a
    /// Redis that stops answering before the circuit breaker opens.
    #[must_use]
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Timeout of one connection attempt. Default:
    /// [`DEFAULT_CONNECT_TIMEOUT`] (1 s).
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
    /// use and remade whenever it breaks. Its metrics (the store-wide ones
    /// in [`crate::metrics`]) are registered, at 0, with the recorder
    /// installed now.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for a prefix that could overlap another's,
    /// [`StoreError::Backend`] for an invalid URL.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        let prefix = closed_prefix(&self.prefix)?;
        let client = Client::open(self.url.as_str()).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.op_timeout))
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(backend)?;
        crate::metrics::describe();
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                conn,
                all_key: format!("{prefix}all"),
                version_key: format!("{prefix}v"),
                tag_prefix: format!("{prefix}t:"),
                prefix,
                op_timeout: self.op_timeout,
                max_ttl: self.max_ttl,
                max_load_time: self.max_load_time,
                invalidate: Script::new(INVALIDATE),
                version: Script::new(VERSION),
                read: Script::new(READ),
                stamps: Script::new(STAMPS),
                known: KnownStamps::default(),
                breaker: Breaker::new(self.failure_threshold, self.retry_interval, self.op_timeout),
                replay: ReplayQueue::new(self.max_pending),
                errors: ::metrics::counter!(crate::metrics::L2_ERRORS_TOTAL),
                corrupt: ::metrics::counter!(crate::metrics::STORE_CORRUPT_TOTAL),
            }),
        })
    }
}

/// `prefix` closed by the separator, or why it cannot be one.
fn closed_prefix(prefix: &str) -> Result<String, StoreError> {
    let name = prefix.strip_suffix(PREFIX_SEPARATOR).unwrap_or(prefix);
    if name.is_empty() || name.contains(PREFIX_SEPARATOR) {
        return Err(StoreError::Config(format!(
            "Redis key prefix {prefix:?} must be a non-empty name without \
             {PREFIX_SEPARATOR:?} (optionally ending with one), so that no \
             prefix is the start of another's keys"
        )));
    }
    Ok(format!("{name}{PREFIX_SEPARATOR}"))
}

pub(super) fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl RedisStore {
    /// A builder for the Redis at `url` (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_ttl: DEFAULT_MAX_TTL,
            max_load_time: DEFAULT_MAX_LOAD_TIME,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            max_pending: DEFAULT_MAX_PENDING_INVALIDATIONS,
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
