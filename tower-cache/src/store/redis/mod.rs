//! The shared L2 store, on Redis.

pub(super) mod breaker;
mod builder;
mod connection;
mod decoded;
mod filter;
mod keys;
mod lease;
mod queue;
mod read;
pub(super) mod replay;
mod replicas;
mod scripts;
mod stamps;
mod tombstone;
mod tracked;
mod versioned;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::Counter;
use futures_util::FutureExt;
use redis::{AsyncCommands, Client};

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
use connection::Lua;
pub use connection::RedisConnection;
use decoded::DecodedEntries;
use keys::Keys;
pub use queue::RedisQueue;
pub use replay::DEFAULT_MAX_PENDING_INVALIDATIONS;
use replay::{Invalidation, ReplayQueue};
pub use replicas::DEFAULT_HOT_KEY_MIN_RATE;
use replicas::Replicas;
use stamps::KnownStamps;

struct Inner {
    /// One client per node named (one for a single node, one per seed
    /// for a cluster), for connections of one's own (pub/sub).
    clients: Vec<Client>,
    conn: RedisConnection,
    keys: Keys,
    op_timeout: Duration,
    max_ttl: Duration,
    /// How long a key's tombstone is kept.
    max_load_time: Duration,
    invalidate: Lua,
    version: Lua,
    stamps: Lua,
    /// The invalidation versions last read, which let a hit be one `MGET`.
    known: KnownStamps,
    /// The entries lately read, decoded once for the same bytes.
    decoded: DecodedEntries,
    /// The single node's tracked connection, on which a hit is one `GET`.
    tracker: Option<Arc<tracked::Tracker>>,
    /// Hot keys' replicas, when asked for.
    replicas: Option<Replicas>,
    breaker: Breaker,
    replay: ReplayQueue,
    /// `tower_cache_l2_errors_total`.
    errors: Counter,
    /// `tower_cache_store_corrupt_total`.
    corrupt: Counter,
}

/// The shared L2 store, on Redis through redis-rs: a single node
/// ([`RedisStore::builder`]) or a Redis Cluster ([`RedisStore::cluster`]).
///
/// - **One multiplexed connection** ([`RedisConnection`]) that reconnects
///   by itself; the store can be built while Redis is down and starts
///   working when it comes up. On a cluster, redis-rs's async cluster
///   client sends each command to the master of its key's slot, follows
///   redirects and finds a promoted replica after a failover.
/// - **One timeout per operation** (default [`DEFAULT_OP_TIMEOUT`],
///   200 ms), however many commands the operation sends: a slow Redis
///   costs a request at most that long. A hit on the tracked connection
///   (below) starts no timer: that connection is watched every half
///   timeout, and one on which a request waited that long twice over is
///   dropped, which fails every read waiting on it at once (the rare
///   second round trip of such a read has the timeout of its own).
/// - **A hit is one plain command**: on a single node, a `GET` of the
///   entry on a second connection on which Redis tracks the namespace's
///   invalidation counter and says when it changes (RESP3 client
///   tracking, [`RedisStoreBuilder::client_tracking`], default on);
///   without it, `MGET` of the entry and the counter (on a cluster, where
///   they are in two slots, two `GET`s sent at once: one round trip). The invalidation versions that
///   decide whether it may be served are kept in process with the counter
///   value they were read at; every invalidation moves the counter, so
///   while it has not moved they are current. They are read again (one
///   more round trip) after an invalidation, for a tag not read before,
///   and at least every 10 s. The entries last read are kept decoded
///   beside the key and bytes they came from (64 of them, of at most
///   8 KiB each: at most 512 KiB a store), and bytes read again the same
///   under the same key are that entry, not checked and parsed again.
/// - **A key namespace**, the same on a single node and a cluster: for
///   the prefix `P` (default [`DEFAULT_PREFIX`], `tc:`), the entry of key
///   `K` lives under `P` `e:{K}` (hashed on `K`, so entries spread over
///   every slot), its tombstone under `P` `x:{K}` and its load lease under
///   `P` `l:{K}` (`tc:x:{products/1}`, [`RedisStore::tombstone_key`],
///   [`RedisStore::lease_key`]), all three in the entry's slot; the
///   namespace's keys share the slot of `{P}`: tag invalidation versions
///   under `{P}t:TAG`, the namespace-wide one
///   ([`RedisStore::invalidate_all`]) under `{P}all` and the namespace's
///   invalidation version counter under `{P}v`. Every script declares the
///   keys it touches, all in one slot: one key's family or the
///   namespace's keys, never both.
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
///   script: `SET NX PX` of the key's lease with the loader's token, for
///   its load timeout, and whether the entry exists (a value stored and
///   released since the caller's read is then read, not loaded again);
///   the holder's write releases it in the same script
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
            .field("prefix", &self.inner.keys.prefix())
            .field("cluster", &self.inner.conn.is_cluster())
            .field("op_timeout", &self.inner.op_timeout)
            .finish()
    }
}

impl RedisStore {
    /// The key namespace prefix, closed by `:`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// The redis-rs client, for connections of one's own (pub/sub); on a
    /// cluster, the first seed node's (see [`clients`](Self::clients)).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.inner.clients[0]
    }

    /// One redis-rs client per node the store was given: the single node,
    /// or every seed node of a cluster. A `PUBLISH` on any node of a
    /// cluster reaches the subscribers of every node, so a subscriber that
    /// loses its node can take the next one.
    #[must_use]
    pub fn clients(&self) -> &[Client] {
        &self.inner.clients
    }

    /// Whether the store is on a Redis Cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    /// A handle on the multiplexed connection (a single node's or the
    /// cluster's).
    #[must_use]
    pub fn connection(&self) -> RedisConnection {
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

    /// The Redis key an entry is stored under: `P` `e:{K}` for the prefix
    /// `P` and the key `K` (so that the entry's slot is hashed on `K`).
    #[must_use]
    pub fn entry_key(&self, key: &str) -> String {
        self.inner.keys.entry(key)
    }

    /// The Redis key of `key`'s tombstone, `P` `x:{K}` in the entry's
    /// slot: the version of its latest remove ([`Store::remove`]), which
    /// refuses older loads' writes.
    #[must_use]
    pub fn tombstone_key(&self, key: &str) -> String {
        self.inner.keys.tombstone(key)
    }

    /// The Redis key of `key`'s load lease ([`Store::lease`]), `P` `l:{K}`
    /// in the entry's slot.
    #[must_use]
    pub fn lease_key(&self, key: &str) -> String {
        self.inner.keys.lease(key)
    }

    /// The Redis key of a tag's invalidation version: `{P}t:TAG`, in the
    /// namespace's slot.
    #[must_use]
    pub fn tag_key(&self, tag: &str) -> String {
        self.inner.keys.tag(tag)
    }

    /// The key of the namespace-wide invalidation version, `{P}all`.
    fn all_key(&self) -> &str {
        self.inner.keys.all()
    }

    /// The key of the namespace's invalidation version counter, `{P}v`.
    #[must_use]
    pub fn version_key(&self) -> &str {
        self.inner.keys.version()
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
            let version = self
                .inner
                .invalidate
                .key(skey)
                .key(self.version_key())
                .arg(keep_ms)
                .invoke::<u64>(&mut c)
                .await
                .map_err(redis_error)?;
            if let Some(replicas) = &self.inner.replicas {
                self.raise_copies(replicas, &c, version).await?;
            }
            Ok(version)
        })
        .await
    }

    /// Applies removes and tag invalidations, optionally a namespace-wide
    /// invalidation first, under one timeout; returns the invalidations'
    /// versions (the namespace's first when `all`, then one per tag). The
    /// invalidations go in one pipeline to the namespace's slot, the
    /// removes to their entries' slots (one more pipeline on a single
    /// node), both at once. Used to replay what could not reach Redis
    /// while it was away.
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
        let stamp_keys: Vec<String> = all
            .then(|| self.all_key().to_owned())
            .into_iter()
            .chain(tags.iter().map(|tag| self.tag_key(tag)))
            .collect();
        let calls: Vec<connection::Step<'_>> = stamp_keys
            .iter()
            .map(|skey| {
                let mut call = self.inner.invalidate.key(skey);
                call.key(self.version_key()).arg(keep_ms);
                call.into()
            })
            .collect();
        self.timed(async {
            let (mut c, mut d) = (self.connection(), self.connection());
            let (stamps, removed) = futures_util::join!(
                async {
                    if calls.is_empty() {
                        return Ok(Vec::new());
                    }
                    c.run(&calls, connection::Spread::OneSlot).await
                },
                async {
                    if keys.is_empty() {
                        return Ok(());
                    }
                    // Removes as `Store::remove` makes them: tombstones of
                    // one version, taken first.
                    let version = self.bump_version(&mut d).await?;
                    self.bury_all(&mut d, keys, version).await
                }
            );
            removed?;
            let versions: Vec<u64> = stamps
                .map_err(redis_error)?
                .into_iter()
                .map(|v| redis::from_redis_value::<u64>(v).map_err(parse_error))
                .collect::<Result<_, _>>()?;
            if let (Some(replicas), Some(&latest)) = (&self.inner.replicas, versions.iter().max()) {
                self.raise_copies(replicas, &c, latest).await?;
            }
            Ok(versions)
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
                .invoke::<u64>(&mut c)
                .await
                .map_err(redis_error)
        })
        .await
    }
}

/// A reply that is not what the command gives.
fn parse_error(e: redis::ParsingError) -> StoreError {
    StoreError::Backend(Box::new(e))
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
        let Some(call) = breaker.allow() else {
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
                if breaker.on_success(call) {
                    tracing::info!(prefix = %self.prefix(), "cache Redis is back");
                }
                Ok(v)
            }
            Err(error) => {
                self.inner.errors.increment(1);
                if breaker.on_failure(&error, call) {
                    tracing::warn!(prefix = %self.prefix(), %error, "cache Redis unavailable; going to the origin until it returns");
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
    ///
    /// # Two slots, in this order
    ///
    /// The entry's keys (the entry, its tombstone, its lease) and the
    /// namespace's versions live in two slots (two nodes of a cluster), so
    /// no one script can check everything and store at once. The write is:
    /// [`PUT_UNLESS_REMOVED`](tombstone::PUT_UNLESS_REMOVED) on the
    /// entry's keys (which refuses the write of a value read before a
    /// remove of the key, and releases the lease), *then* read the
    /// namespace's versions (single-key `GET`s), and delete the entry if
    /// one of them is after its own. On a single node both go in one
    /// pipeline (run in that order, one round trip); on a cluster the
    /// reads are sent once the store has answered. Why nothing is weaker
    /// than one script doing both, for an invalidation `I` that the load
    /// did not see (its version is after the entry's):
    ///
    /// - `I` before the check: the check sees it and the entry is deleted.
    ///   Until then, a read refuses the entry as it would without the
    ///   delete: a read that starts after `I` sees the counter `I` moved
    ///   and reads the versions again (see `read.rs`), which include
    ///   `I`'s, for as long as `I`'s version is kept. A delete that fails
    ///   fails the write, which is then kept for replay as a remove. Only a
    ///   process that dies between the check and the delete leaves the
    ///   entry behind: every read refuses it while `I`'s version is kept,
    ///   and it expires at most the time between `I` and the write after
    ///   that version does.
    /// - `I` after the check: then it is after the store too, so the entry
    ///   was in Redis before `I` was made, exactly as an entry stored by
    ///   one script before `I`; every read after `I` refuses it.
    ///
    /// Checking before storing would not do: an `I` between the check and
    /// the store would be missed, and the entry would outlive `I`'s
    /// version. A key remove needs no such order: its tombstone is in the
    /// entry's slot, and the script that stores reads it.
    pub(crate) fn put_direct<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a {
        self.put_leased_direct(key, entry, None)
    }

    /// [`RedisStore::put_direct`], releasing in the same round trip the
    /// key's lease if `token` holds it.
    pub(crate) async fn put_leased_direct(
        &self,
        key: &str,
        entry: Entry,
        token: Option<u64>,
    ) -> Result<bool, StoreError> {
        {
            let entry = if entry.version().is_some() {
                entry
            } else {
                let version = self.version_direct().await?;
                entry.with_version(version)
            };
            self.timed(async move {
                let ttl_ms = self.entry_ttl_ms(&entry);
                let mut c = self.connection();
                let family = self.inner.keys.primary(key);
                if ttl_ms == 0 {
                    c.del::<_, i64>(&family.entry).await.map_err(redis_error)?;
                    if let Some(replicas) = &self.inner.replicas {
                        let copies: Vec<String> = (1..=replicas.count())
                            .map(|n| self.inner.keys.replica(key, n).entry)
                            .collect();
                        for copy in copies {
                            c.del::<_, i64>(copy).await.map_err(redis_error)?;
                        }
                    }
                    if let Some(token) = token {
                        self.release_on(&mut c, key, token).await?;
                    }
                    return Ok(true);
                }
                let kept = self
                    .put_unless_removed(&mut c, &family, &entry, ttl_ms, token, false)
                    .await?;
                if kept && let Some(replicas) = &self.inner.replicas {
                    self.write_replicas(replicas, &c, key, &entry, ttl_ms)
                        .await?;
                }
                Ok(kept)
            })
            .await
        }
    }

    /// How long `entry` may be kept in Redis from now, in milliseconds (0:
    /// not at all).
    pub(super) fn entry_ttl_ms(&self, entry: &Entry) -> u64 {
        entry
            .stale_until
            .saturating_sub(clock::now_ms())
            .min(self.keep_ms())
    }

    /// The keys this store reads from replicas now (see
    /// [`RedisStoreBuilder::hot_key_replicas`]): those read at least
    /// [`RedisStoreBuilder::hot_key_min_rate`] times a second in the last
    /// second. Empty without replicas.
    #[must_use]
    pub fn replicated_keys(&self) -> Vec<String> {
        self.inner
            .replicas
            .as_ref()
            .map_or_else(Vec::new, Replicas::hot)
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
