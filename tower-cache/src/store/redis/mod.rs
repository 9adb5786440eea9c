//! The shared L2 store, on Redis.

pub(super) mod breaker;
mod builder;
mod filter;
mod lease;
mod queue;
mod read;
pub(super) mod replay;
mod scripts;
mod stamps;
mod tombstone;
mod versioned;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::Counter;
use futures_util::FutureExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};

use super::{Lease, Store, StoreError};
use crate::clock;
use crate::entry::Entry;
use breaker::Breaker;
pub use breaker::{DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_INTERVAL};
use builder::backend;
pub use builder::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_LOAD_TIME, DEFAULT_MAX_TTL, DEFAULT_OP_TIMEOUT,
    DEFAULT_PREFIX, RedisStoreBuilder,
};
pub use queue::RedisQueue;
pub use replay::DEFAULT_MAX_PENDING_INVALIDATIONS;
use replay::{Invalidation, ReplayQueue};
use scripts::INVALIDATE;
use stamps::KnownStamps;

struct Inner {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    /// `{prefix}all`, `{prefix}v` and `{prefix}t:`, made once.
    all_key: String,
    version_key: String,
    tag_prefix: String,
    op_timeout: Duration,
    max_ttl: Duration,
    /// How long a key's tombstone is kept.
    max_load_time: Duration,
    invalidate: Script,
    version: Script,
    read: Script,
    stamps: Script,
    /// The invalidation versions last read, which let a hit be one `MGET`.
    known: KnownStamps,
    breaker: Breaker,
    replay: ReplayQueue,
    /// `tower_cache_l2_errors_total`.
    errors: Counter,
    /// `tower_cache_store_corrupt_total`.
    corrupt: Counter,
}

/// The shared L2 store, on Redis through redis-rs.
///
/// - **One multiplexed connection** ([`ConnectionManager`]) that reconnects
///   by itself; the store can be built while Redis is down and starts
///   working when it comes up.
/// - **One timeout per operation** (default [`DEFAULT_OP_TIMEOUT`],
///   200 ms), however many commands the operation sends: a slow Redis
///   costs a request at most that long.
/// - **A hit is one plain command**: `MGET` of the entry and the
///   namespace's invalidation counter. The invalidation versions that
///   decide whether it may be served are kept in process with the counter
///   value they were read at; every invalidation moves the counter, so
///   while it has not moved they are current. They are read again (one
///   more round trip) after an invalidation, for a tag not read before,
///   and at least every 10 s.
/// - **A key namespace**: entries live under `{prefix}e:{key}`, tag
///   invalidation versions under `{prefix}t:{tag}`, the namespace-wide one
///   ([`RedisStore::invalidate_all`]) under `{prefix}all` and the
///   namespace's invalidation version counter under `{prefix}v` (default
///   prefix [`DEFAULT_PREFIX`]). A key's tombstone lives under
///   `{prefix}x:` and its load lease under `{prefix}l:`, each followed by
///   the key in braces (`tc:x:{products/1}`, [`RedisStore::tombstone_key`],
///   [`RedisStore::lease_key`]): hash-tagged with the key, so that on a
///   Redis Cluster they share the entry's slot; every script touches one key's
///   family or the namespace's keys, never both.
/// - **Redis-side expiry** at the end of the entry's stale window, and
///   never more than [`RedisStoreBuilder::max_ttl`] (default 24 h) after
///   it is written.
/// - **Tag invalidation by version, not by clock**: invalidating a tag
///   moves the namespace's version counter forward (one script, in Redis)
///   and records the new version in one small key. A load records the
///   version before it reads the origin ([`Store::version`],
///   [`Entry::version`]); an entry is refused, when written and when read,
///   if one of its tags (or the namespace) was invalidated at a later
///   version. No instance's clock takes part, so instances whose clocks
///   disagree never miss an invalidation; no tag index, no `KEYS`/`SCAN`.
///   A tag's version is kept `max_ttl` and an entry never lives longer
///   than that after its write, so the tag's version outlives every entry
///   it invalidates.
/// - **Key removes win over loads on every instance**: a
///   [`remove`](Store::remove) moves the counter forward and, in one
///   script on the key's own keys, deletes the entry and its lease and
///   leaves a tombstone of the new version, kept
///   [`RedisStoreBuilder::max_load_time`] (default 60 s). The write of an
///   entry whose [`Entry::version`] is older than the tombstone is refused
///   in the script that would store it: a value read from the origin
///   before the remove, by any instance, is never stored after it. The
///   limit: a load that takes longer than `max_load_time` after a remove
///   can still store what it read before it.
/// - **One load per key across instances**: [`Store::lease`] is one
///   `SET NX PX` of the key's lease with the loader's token, for its load
///   timeout; the holder's write releases it in the same script
///   ([`Store::put_released`]), [`Store::release`] otherwise, and a holder
///   that dies leaves it until it expires. The limit: a holder slower than
///   its lease loses it, and a second instance loads too.
/// - **Garbage reads as a miss**: bytes that are not a valid envelope (a
///   checksum that fails, an entry written under another key, another
///   format version) are deleted, counted in
///   `tower_cache_store_corrupt_total` and reported as a miss. An entry
///   key of another type is a miss; the read a load starts with deletes
///   it, and the load's write replaces it. A tag key that holds anything
///   but a version invalidates its entries (one changed without an
///   invalidation, by something other than this store, is seen at the next
///   invalidation in the namespace and at the latest 10 s later).
/// - **A circuit breaker**: after
///   [`RedisStoreBuilder::failure_threshold`] failures in a row (default
///   3), or at once when the connection is refused, reset or closed, every
///   operation fails at once with [`StoreError::Unavailable`] (the engine
///   goes to the origin) and one operation probes Redis every
///   [`RedisStoreBuilder::retry_interval`] (default 1 s). One warning per
///   outage.
/// - **Invalidations are never lost**: a remove or tag invalidation that
///   fails, and the key of a write that fails, are kept (bounded by
///   [`RedisStoreBuilder::max_pending_invalidations`]) and replayed before
///   the next operation once Redis answers again.
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

impl RedisStore {
    /// The key namespace prefix, closed by `:`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The redis-rs client, for connections of one's own (pub/sub).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A handle on the multiplexed connection.
    #[must_use]
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// The configured per-operation timeout.
    #[must_use]
    pub fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// The configured longest lifetime of an entry in Redis
    /// ([`RedisStoreBuilder::max_ttl`]).
    #[must_use]
    pub fn max_ttl(&self) -> Duration {
        self.inner.max_ttl
    }

    /// The Redis key an entry is stored under.
    #[must_use]
    pub fn entry_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.inner.prefix.len() + 2 + key.len());
        k.push_str(&self.inner.prefix);
        k.push_str("e:");
        k.push_str(key);
        k
    }

    /// `{prefix}{kind}{{key}}`: a key of `key`'s own family, hash-tagged
    /// with `key` so that it shares the entry's Redis Cluster slot.
    fn family_key(&self, kind: &str, key: &str) -> String {
        let prefix = &self.inner.prefix;
        let mut k = String::with_capacity(prefix.len() + kind.len() + key.len() + 2);
        k.push_str(prefix);
        k.push_str(kind);
        k.push('{');
        k.push_str(key);
        k.push('}');
        k
    }

    /// The Redis key of `key`'s tombstone: the version of its latest
    /// remove ([`Store::remove`]), which refuses older loads' writes.
    #[must_use]
    pub fn tombstone_key(&self, key: &str) -> String {
        self.family_key("x:", key)
    }

    /// The Redis key of `key`'s load lease ([`Store::lease`]).
    #[must_use]
    pub fn lease_key(&self, key: &str) -> String {
        self.family_key("l:", key)
    }

    /// What every tag key starts with.
    fn tag_prefix(&self) -> &str {
        &self.inner.tag_prefix
    }

    fn tag_key(&self, tag: &str) -> String {
        let mut k = String::with_capacity(self.inner.tag_prefix.len() + tag.len());
        k.push_str(&self.inner.tag_prefix);
        k.push_str(tag);
        k
    }

    /// The key of the namespace-wide invalidation version.
    fn all_key(&self) -> &str {
        &self.inner.all_key
    }

    /// The key of the namespace's invalidation version counter.
    fn version_key(&self) -> &str {
        &self.inner.version_key
    }

    /// How long an invalidation version is kept, in milliseconds.
    fn keep_ms(&self) -> u64 {
        clock::ms(self.inner.max_ttl)
    }

    /// Sends `PING`; `Ok` when Redis answers within the timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError::Timeout`] when Redis does not answer within the
    /// operation timeout, [`StoreError::Unavailable`] when it cannot be
    /// reached, [`StoreError::Backend`] when it answers with an error.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            let mut c = self.connection();
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(redis_error)
        })
        .await
        .map(|_| ())
    }

    /// Invalidates every entry of this namespace loaded before now, in one
    /// small write (no `KEYS`/`SCAN`): reads compare each entry's
    /// [`Entry::version`] with this invalidation's version as they do with
    /// a tag's. Entries loaded afterwards are unaffected.
    ///
    /// # Errors
    ///
    /// [`StoreError::Timeout`] when Redis does not answer within the
    /// operation timeout, [`StoreError::Unavailable`] when it cannot be
    /// reached, [`StoreError::Backend`] when it answers with an error.
    pub async fn invalidate_all(&self) -> Result<(), StoreError> {
        self.invalidate_stamp(self.all_key()).await.map(|_| ())
    }

    /// Runs a whole operation, however many commands it sends, under one
    /// [`RedisStoreBuilder::op_timeout`], counted from this call (made
    /// right before the operation is awaited).
    fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        // A combinator rather than an `async fn`: the operation's future
        // is held once, not once as an argument and once as awaited.
        tokio::time::timeout(self.inner.op_timeout, op)
            .map(|timed| timed.unwrap_or(Err(StoreError::Timeout)))
    }

    /// Invalidates what `skey` (a tag's key, or the namespace's) names;
    /// returns the invalidation's version.
    async fn invalidate_stamp(&self, skey: &str) -> Result<u64, StoreError> {
        let keep_ms = self.keep_ms();
        self.timed(async {
            let mut c = self.connection();
            self.inner
                .invalidate
                .key(skey)
                .key(self.version_key())
                .arg(keep_ms)
                .invoke_async::<u64>(&mut c)
                .await
                .map_err(redis_error)
        })
        .await
    }

    /// Applies removes and tag invalidations, optionally a namespace-wide
    /// invalidation first, in one pipeline under one timeout; returns the
    /// invalidations' versions (the namespace's first when `all`, then
    /// one per tag). Used to replay what could not reach Redis while it
    /// was away.
    pub(crate) async fn apply_invalidations(
        &self,
        all: bool,
        keys: &[&str],
        tags: &[&str],
    ) -> Result<Vec<u64>, StoreError> {
        if keys.is_empty() && tags.is_empty() && !all {
            return Ok(Vec::new());
        }
        let keep_ms = self.keep_ms();
        let version_key = self.version_key();
        let mut pipe = redis::pipe();
        let stamp = |pipe: &mut redis::Pipeline, skey: &str| {
            pipe.cmd("EVAL")
                .arg(INVALIDATE)
                .arg(2)
                .arg(skey)
                .arg(version_key)
                .arg(keep_ms);
        };
        if all {
            stamp(&mut pipe, self.all_key());
        }
        for tag in tags {
            stamp(&mut pipe, &self.tag_key(tag));
        }
        self.timed(async {
            let mut c = self.connection();
            if !keys.is_empty() {
                // Removes as `Store::remove` makes them: tombstones of one
                // version, taken first.
                let version = self.bump_version(&mut c).await?;
                self.bury_all(&mut pipe, keys, version);
            }
            pipe.query_async::<Vec<u64>>(&mut c)
                .await
                .map_err(redis_error)
        })
        .await
    }

    /// Publishes `messages` on `channel`, in one pipeline under one
    /// timeout.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        messages: &[String],
    ) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for msg in messages {
            pipe.publish(channel, msg).ignore();
        }
        self.timed(async {
            let mut c = self.connection();
            pipe.query_async::<()>(&mut c).await.map_err(redis_error)
        })
        .await
    }

    /// Reads the namespace's invalidation version, under one timeout.
    pub(crate) async fn version_direct(&self) -> Result<u64, StoreError> {
        self.timed(async {
            let mut c = self.connection();
            self.inner
                .version
                .key(self.version_key())
                .invoke_async::<u64>(&mut c)
                .await
                .map_err(redis_error)
        })
        .await
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        StoreError::Unavailable
    } else {
        backend(e)
    }
}

impl RedisStore {
    /// Runs `op` through the circuit breaker: refused at once while it is
    /// open, and its outcome recorded.
    async fn guarded<T, Fut>(&self, op: impl FnOnce() -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let breaker = &self.inner.breaker;
        let Some(generation) = breaker.allow() else {
            return Err(StoreError::Unavailable);
        };
        let replayed = if self.inner.replay.has_pending() {
            // Boxed: the rare path stays out of every operation's future.
            Box::pin(self.replay_pending()).await
        } else {
            Ok(())
        };
        let outcome = match replayed {
            Ok(()) => op().await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(v) => {
                if breaker.on_success(generation) {
                    tracing::info!(prefix = %self.inner.prefix, "cache Redis is back");
                }
                Ok(v)
            }
            Err(error) => {
                self.inner.errors.increment(1);
                if breaker.on_failure(&error) {
                    tracing::warn!(prefix = %self.inner.prefix, %error, "cache Redis unavailable; going to the origin until it returns");
                } else {
                    tracing::debug!(%error, "cache Redis call failed");
                }
                Err(error)
            }
        }
    }

    /// Stores the entry until the end of its stale window, and never
    /// longer than [`RedisStoreBuilder::max_ttl`]: an invalidation version
    /// is kept `max_ttl`, so it outlives every entry it invalidates. An
    /// entry is not stored (that is not an error) when its tags (or
    /// namespace) were invalidated at a version after its own, or when its
    /// key was removed after its version was read: a value loaded before
    /// an invalidation and written after it. An entry with no version gets
    /// the current one first (one more round trip). `Ok(false)` when
    /// refused.
    pub(crate) fn put_direct<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a {
        self.put_leased_direct(key, entry, None)
    }

    /// [`RedisStore::put_direct`], releasing in the same round trip the
    /// key's lease if `token` holds it.
    pub(crate) fn put_leased_direct<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
        token: Option<u64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a {
        let rkey = self.entry_key(key);
        async move {
            let entry = if entry.version().is_some() {
                entry
            } else {
                let version = self.version_direct().await?;
                entry.with_version(version)
            };
            self.timed(async move {
                let now = clock::now_ms();
                let ttl_ms = entry.stale_until.saturating_sub(now).min(self.keep_ms());
                let mut c = self.connection();
                if ttl_ms == 0 {
                    c.del::<_, i64>(rkey).await.map_err(redis_error)?;
                    if let Some(token) = token {
                        self.release_on(&mut c, key, token).await?;
                    }
                    return Ok(true);
                }
                self.put_unless_removed(&mut c, key, &rkey, &entry, ttl_ms, token)
                    .await
            })
            .await
        }
    }

    /// Moves the namespace's invalidation counter forward (one command),
    /// then deletes the entry and its lease and leaves a tombstone of the
    /// new version (one script on the key's own keys).
    pub(crate) fn remove_direct<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.timed(async move {
            let mut c = self.connection();
            let version = self.bump_version(&mut c).await?;
            self.bury(&mut c, key, version).await
        })
    }

    /// Invalidates `tag`; returns the invalidation's version.
    pub(crate) async fn remove_tag_direct(&self, tag: &str) -> Result<u64, StoreError> {
        self.invalidate_stamp(&self.tag_key(tag)).await
    }
}

impl RedisStore {
    /// Applies the removes and tag invalidations that missed Redis.
    async fn replay_pending(&self) -> Result<(), StoreError> {
        self.inner
            .replay
            .replay(|whole, items| async move {
                let (keys, tags) = Invalidation::split(&items);
                self.apply_invalidations(whole, &keys, &tags).await?;
                Ok(items)
            })
            .await
            .map(|_| ())
    }

    /// Whether Redis is currently used (circuit breaker closed).
    #[must_use]
    pub fn available(&self) -> bool {
        !self.inner.breaker.is_open()
    }

    /// How many removes and tag invalidations wait to be replayed.
    #[must_use]
    pub fn pending_invalidations(&self) -> u64 {
        self.inner.replay.counts().0
    }
}

/// Every operation goes through the circuit breaker, after the removes and
/// tag invalidations that missed Redis are replayed. A remove, tag
/// invalidation or write that fails is kept for replay (a failed write as
/// a remove of its key), so Redis never serves what the application
/// removed or overwrote while it was away; they then answer `Ok`.
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.guarded(|| self.get_direct(key)).await
    }

    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        let put = self.guarded(|| self.put_direct(key, entry)).await;
        if put.is_err() {
            self.inner.replay.keep(Invalidation::Key(key.to_owned()));
        }
        put.map(|_| ())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        if self.guarded(|| self.remove_direct(key)).await.is_err() {
            self.inner.replay.keep(Invalidation::Key(key.to_owned()));
        }
        Ok(())
    }

    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        if self.guarded(|| self.remove_tag_direct(tag)).await.is_err() {
            self.inner.replay.keep(Invalidation::Tag(tag.to_owned()));
        }
        Ok(())
    }

    async fn version(&self) -> Result<u64, StoreError> {
        self.guarded(|| self.version_direct()).await
    }

    async fn get_versioned(&self, key: &str) -> Result<(Option<Entry>, u64), StoreError> {
        self.guarded(|| self.get_versioned_direct(key)).await
    }

    async fn lease(&self, key: &str, token: u64, ttl: Duration) -> Result<Lease, StoreError> {
        self.guarded(|| self.lease_direct(key, token, ttl)).await
    }

    async fn release(&self, key: &str, token: u64) -> Result<(), StoreError> {
        self.guarded(|| self.release_direct(key, token)).await
    }

    async fn put_released(&self, key: &str, entry: Entry, token: u64) -> Result<(), StoreError> {
        let put = self
            .guarded(|| self.put_leased_direct(key, entry, Some(token)))
            .await;
        if put.is_err() {
            self.inner.replay.keep(Invalidation::Key(key.to_owned()));
        }
        put.map(|_| ())
    }
}
