//! The shared L2 store, on Redis.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::{Store, StoreError};
use crate::clock;
use crate::entry::Entry;

/// Default timeout of one Redis operation: 250 ms.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(250);
/// Default timeout of one connection attempt: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default longest lifetime of an entry in Redis: 24 h.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default key namespace prefix.
pub const DEFAULT_PREFIX: &str = "tc:";

/// Sets a tag's invalidation timestamp, never moving it backwards, and keeps
/// it as long as any entry stored before it could live.
const INVALIDATE_TAG: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local t = tonumber(ARGV[1])
if t > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

struct Inner {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    op_timeout: Duration,
    max_ttl: Duration,
    invalidate_tag: Script,
}

/// The shared L2 store, on Redis through redis-rs.
///
/// - **One multiplexed connection** ([`ConnectionManager`]) that reconnects
///   by itself; the store can be built while Redis is down and starts
///   working when it comes up.
/// - **A timeout on every operation** (default [`DEFAULT_OP_TIMEOUT`],
///   250 ms): a slow Redis costs a request at most that long.
/// - **A key namespace**: entries live under `{prefix}e:{key}`, tag
///   timestamps under `{prefix}t:{tag}` (default prefix [`DEFAULT_PREFIX`]).
/// - **Redis-side expiry** at the end of the entry's stale window, capped at
///   [`RedisStoreBuilder::max_ttl`] (default 24 h).
/// - **Tag invalidation by timestamp**: invalidating a tag records the time
///   in one small key; a read compares it with the entry's
///   [`Entry::stored_at`]. No tag index, no `KEYS`/`SCAN`, no requirement
///   that the keys of a tag share a node, and an entry loaded before an
///   invalidation but written after it is still rejected. Timestamps come
///   from the instances' clocks, which are assumed to agree within a few
///   milliseconds.
/// - **Garbage reads as a miss**: bytes that are not a valid envelope are
///   deleted and reported as a miss.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_cache::store::{RedisStore, Store};
/// use tower_cache::Entry;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let l2 = RedisStore::builder("redis://127.0.0.1:6379")
///     .prefix("catalog:")
///     .op_timeout(Duration::from_millis(100))
///     .build()
///     .expect("valid URL");
/// l2.put("k", Entry::new("v")).await.ok();
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("op_timeout", &self.inner.op_timeout)
            .finish()
    }
}

/// Builds a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    op_timeout: Duration,
    connect_timeout: Duration,
    max_ttl: Duration,
}

impl RedisStoreBuilder {
    /// The key namespace prefix. Default: [`DEFAULT_PREFIX`] (`"tc:"`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Timeout of every operation. Default: [`DEFAULT_OP_TIMEOUT`] (250 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Timeout of one connection attempt. Default:
    /// [`DEFAULT_CONNECT_TIMEOUT`] (1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest time an entry is kept in Redis, and how long a tag
    /// invalidation is remembered. Default: [`DEFAULT_MAX_TTL`] (24 h).
    pub fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Builds the store without connecting; the connection is made on first
    /// use and remade whenever it breaks. Fails only on an invalid URL.
    ///
    /// Must be called within a Tokio runtime.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        let client = Client::open(self.url.as_str()).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.op_timeout))
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(backend)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                conn,
                prefix: self.prefix,
                op_timeout: self.op_timeout,
                max_ttl: self.max_ttl,
                invalidate_tag: Script::new(INVALIDATE_TAG),
            }),
        })
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(e.to_string())
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
        }
    }

    /// A store for the Redis at `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).build()
    }

    /// The key namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The redis-rs client, for connections of one's own (pub/sub).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A handle on the multiplexed connection.
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// The configured per-operation timeout.
    pub fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// The Redis key an entry is stored under.
    pub fn entry_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.inner.prefix.len() + 2 + key.len());
        k.push_str(&self.inner.prefix);
        k.push_str("e:");
        k.push_str(key);
        k
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}t:{}", self.inner.prefix, tag)
    }

    /// Sends `PING`; `Ok` when Redis answers within the timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.inner.op_timeout, op(self.inner.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(backend(e)),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn delete_raw(&self, rkey: String) -> Result<(), StoreError> {
        self.run(
            |mut c| async move { redis::cmd("DEL").arg(rkey).query_async::<i64>(&mut c).await },
        )
        .await
        .map(|_| ())
    }

    async fn invalidated_by_tag(&self, entry: &Entry) -> Result<bool, StoreError> {
        if entry.tags.is_empty() {
            return Ok(false);
        }
        let keys: Vec<String> = entry.tags.iter().map(|t| self.tag_key(t)).collect();
        let stamps: Vec<Option<u64>> = self
            .run(|mut c| async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await })
            .await?;
        Ok(stamps.into_iter().flatten().any(|t| t >= entry.stored_at))
    }
}

impl Store for RedisStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send + 'a {
        let rkey = self.entry_key(key);
        async move {
            let raw: Option<Vec<u8>> = self
                .run(|mut c| {
                    let rkey = rkey.clone();
                    async move { redis::cmd("GET").arg(rkey).query_async(&mut c).await }
                })
                .await?;
            let Some(raw) = raw else { return Ok(None) };
            let entry = match Entry::decode(Bytes::from(raw)) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(key = %rkey, %error, "dropping undecodable cache entry");
                    metrics::counter!("tower_cache_store_corrupt_total").increment(1);
                    self.delete_raw(rkey).await.ok();
                    return Ok(None);
                }
            };
            if !entry.is_servable_at(clock::now_ms()) {
                return Ok(None);
            }
            if self.invalidated_by_tag(&entry).await? {
                self.delete_raw(rkey).await.ok();
                return Ok(None);
            }
            Ok(Some(entry))
        }
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        let rkey = self.entry_key(key);
        async move {
            let remaining = entry.stale_until.saturating_sub(clock::now_ms());
            let ttl_ms = remaining.min(self.inner.max_ttl.as_millis() as u64);
            if ttl_ms == 0 {
                return self.delete_raw(rkey).await;
            }
            let payload = entry.encode();
            self.run(|mut c| async move {
                redis::cmd("SET")
                    .arg(rkey)
                    .arg(payload.as_ref())
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
        }
    }

    fn remove<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.delete_raw(self.entry_key(key))
    }

    fn remove_tag<'a>(
        &'a self,
        tag: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        let tkey = self.tag_key(tag);
        async move {
            let now = clock::now_ms();
            let keep_ms = self.inner.max_ttl.as_millis() as u64;
            let script = &self.inner.invalidate_tag;
            self.run(|mut c| async move {
                script
                    .key(tkey)
                    .arg(now)
                    .arg(keep_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
        }
    }
}
