//! Hot keys spread over several slots: the entry of a key read faster than a set rate is kept in copies (replicas) hashed on other slots, so that one hot key does not load one Redis Cluster shard alone.
//!
//! Off unless [`RedisStoreBuilder::hot_key_replicas`] asks for it.
//!
//! # How
//!
//! - **Which keys**: each store counts its reads in a `HeavyKeeper` top-k
//!   sketch over one-second windows; a key read at least
//!   [`hot_key_min_rate`](super::RedisStoreBuilder::hot_key_min_rate)
//!   times a second (default [`DEFAULT_HOT_KEY_MIN_RATE`]) in the last
//!   window is hot, for the next one.
//! - **Reads** of a hot key pick one of its `N` replicas at random
//!   (`{P#n}r:K`, see `keys.rs`), read with copy `n` of the namespace's
//!   invalidation counter (`{P#n}v`), in the same slot: one `MGET` on one
//!   node, and neither the entry's node nor the namespace's is asked. The
//!   `N` slots are fixed by the prefix, so the copies spread over the
//!   masters as `N` slots do: ask for a few more replicas than there are
//!   masters. A replica that is missing is filled from the entry (a write
//!   that never replaces a replica already there).
//! - **Writes** of any key (hot or not here: another instance may find it
//!   hot) write its replicas too, after the entry; **removes** remove
//!   them, each leaving a tombstone of the remove's version in its
//!   replica's slot, which refuses a fill of a value read before the
//!   remove, as the entry's tombstone refuses a load's write.
//! - **Invalidations** of a tag or of the namespace move every copy of
//!   the counter to the invalidation's version after the invalidation is
//!   recorded and before it returns, never backwards. A replica's read
//!   decides on the versions known here at the copy's value; when they
//!   are not known, it reads them with the namespace's counter `m` (one
//!   script), records them at `m`, and raises the copy to `m`. When a
//!   read later finds the copy at `m`, every invalidation that returned
//!   before it was either recorded before the versions were read, or got
//!   a version above `m` and raised the copy beyond `m` before returning,
//!   which the copy would show. The tags' and the namespace's versions
//!   are the entry's own, so a replica is refused exactly as its entry is.
//!
//! The cost: every write and remove of a key, hot or not, takes one more
//! script per replica (sent at once, one more round trip), and every tag
//! or namespace invalidation one more command per replica.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError, RwLock};

use heavykeeper::TopK;

use super::connection::{Lua, RedisConnection};
use super::keys::Family;
use super::read::{delete, entry_and_counter};
use super::stamps::KnownStamps;
use super::{RedisStore, redis_error};
use crate::clock;
use crate::entry::Entry;
use crate::store::StoreError;

/// How many reads a second make a key hot, by default.
pub const DEFAULT_HOT_KEY_MIN_RATE: u64 = 1_000;

/// How long one counting window lasts, in milliseconds.
const WINDOW_MS: u64 = 1_000;
/// How many keys can be hot at once.
const MAX_HOT: usize = 32;

/// Moves copy `KEYS[1]` of the namespace's counter to `ARGV[1]` unless it
/// is there or beyond already; whatever else sits at the key is replaced.
const RAISE: &str = r"
local raw = redis.pcall('GET', KEYS[1])
local cur = type(raw) == 'string' and tonumber(raw) or nil
if not cur or cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
";

/// The replicas of one store: how many, which keys are hot, and the
/// invalidation versions known at each copy of the counter.
pub(super) struct Replicas {
    count: usize,
    min_rate: u64,
    window: Mutex<Window>,
    hot: RwLock<HashSet<Box<str>, foldhash::fast::RandomState>>,
    /// `known[n - 1]`: the versions known at copy `n`'s values.
    known: Vec<KnownStamps>,
    raise: Lua,
}

struct Window {
    started_ms: u64,
    sketch: TopK<String>,
}

fn sketch() -> TopK<String> {
    TopK::new(MAX_HOT, MAX_HOT * 128, 4, 0.9)
}

impl Replicas {
    /// `count` replicas (at least 1) of every key read `min_rate` times a
    /// second.
    pub(super) fn new(count: usize, min_rate: u64) -> Self {
        let count = count.max(1);
        Replicas {
            count,
            min_rate: min_rate.max(1),
            window: Mutex::new(Window {
                started_ms: clock::now_ms(),
                sketch: sketch(),
            }),
            hot: RwLock::default(),
            known: (0..count).map(|_| KnownStamps::default()).collect(),
            raise: Lua::new(RAISE),
        }
    }

    /// How many replicas each key has.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// Counts a read of `key` and says where to read it: 0 for its entry,
    /// `n` for replica `n` (one at random, for a hot key).
    pub(super) fn pick(&self, key: &str) -> usize {
        let now = clock::now_ms();
        {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            window.sketch.add(key, 1);
            let elapsed = now.saturating_sub(window.started_ms);
            if elapsed >= WINDOW_MS {
                let least = self.min_rate.saturating_mul(elapsed) / 1_000;
                let hot = window
                    .sketch
                    .list()
                    .into_iter()
                    .filter(|node| node.count >= least)
                    .map(|node| node.item.into_boxed_str())
                    .collect();
                *self.hot.write().unwrap_or_else(PoisonError::into_inner) = hot;
                *window = Window {
                    started_ms: now,
                    sketch: sketch(),
                };
            }
        }
        let hot = self
            .hot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key);
        if hot {
            rand::random_range(1..=self.count)
        } else {
            0
        }
    }

    /// The keys hot in the last window.
    pub(super) fn hot(&self) -> Vec<String> {
        let hot = self.hot.read().unwrap_or_else(PoisonError::into_inner);
        hot.iter().map(ToString::to_string).collect()
    }
}

impl RedisStore {
    /// Reads replica `n` of `key`, filling it from the entry when it is
    /// missing. A replica that does not decode or is invalidated is
    /// deleted, and the entry read instead. Under the caller's timeout.
    pub(super) async fn get_replica(
        &self,
        replicas: &Replicas,
        c: &mut RedisConnection,
        key: &str,
        n: usize,
    ) -> Result<Option<Entry>, StoreError> {
        let family = self.inner.keys.replica(key, n);
        let copy = self.inner.keys.version_copy(n);
        let mut mget = redis::cmd("MGET");
        mget.arg(&family.entry).arg(&copy);
        let (raw, count) = entry_and_counter(mget.query_async(c).await)?;
        let Some(raw) = raw else {
            let entry = self.read_entry(key).await?;
            if let Some(entry) = &entry
                && let Err(error) = self.fill(c, &family, entry).await
            {
                tracing::debug!(key, %error, "hot key replica fill failed");
            }
            return Ok(entry);
        };
        let entry = match self.inner.decoded.decode(&family.entry, raw) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(key = %family.entry, %error, "dropping undecodable cache entry");
                self.inner.corrupt.increment(1);
                delete(c, &family.entry).await;
                return self.read_entry(key).await;
            }
        };
        let now = clock::now_ms();
        if !entry.is_servable_at(now) {
            return self.read_entry(key).await;
        }
        let known = &replicas.known[n - 1];
        let invalidated = if let Some(invalidated) =
            count.and_then(|count| known.invalidated(&entry, count, now))
        {
            invalidated
        } else {
            let (invalidated, at) = Box::pin(self.read_stamps_into(c, &entry, now, known)).await?;
            if let Some(at) = at
                && count != Some(at)
            {
                // The copy moved to the counter the versions were
                // read at (see the module docs); a failure leaves the
                // next read to the versions again.
                let raised = self.raise_copy(replicas, c, n, at).await;
                if let Err(error) = raised {
                    tracing::debug!(%error, "counter copy not raised");
                }
            }
            invalidated
        };
        if invalidated {
            delete(c, &family.entry).await;
            return self.read_entry(key).await;
        }
        Ok(Some(entry))
    }

    /// Writes `entry` to a replica that is missing, unless a remove of the
    /// key came after the entry's version was read.
    async fn fill(
        &self,
        c: &mut RedisConnection,
        family: &Family,
        entry: &Entry,
    ) -> Result<(), StoreError> {
        let ttl_ms = self.entry_ttl_ms(entry);
        if ttl_ms == 0 {
            return Ok(());
        }
        self.put_unless_removed(c, family, entry, ttl_ms, None, true)
            .await
            .map(|_| ())
    }

    /// Writes `entry`, just written as `key`'s own, to every replica of
    /// `key`, all at once, each checked as the entry's write is.
    pub(super) async fn write_replicas(
        &self,
        replicas: &Replicas,
        c: &RedisConnection,
        key: &str,
        entry: &Entry,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let writes = (1..=replicas.count()).map(|n| {
            let mut c = c.clone();
            async move {
                let family = self.inner.keys.replica(key, n);
                self.put_unless_removed(&mut c, &family, entry, ttl_ms, None, false)
                    .await
            }
        });
        for written in futures_util::future::join_all(writes).await {
            written?;
        }
        Ok(())
    }

    /// Moves every copy of the namespace's counter to `version` (an
    /// invalidation's, just recorded), all at once.
    pub(super) async fn raise_copies(
        &self,
        replicas: &Replicas,
        c: &RedisConnection,
        version: u64,
    ) -> Result<(), StoreError> {
        let raises = (1..=replicas.count()).map(|n| {
            let mut c = c.clone();
            async move { self.raise_copy(replicas, &mut c, n, version).await }
        });
        for raised in futures_util::future::join_all(raises).await {
            raised?;
        }
        Ok(())
    }

    /// Moves copy `n` of the namespace's counter to `version`, unless it
    /// is there or beyond.
    async fn raise_copy(
        &self,
        replicas: &Replicas,
        c: &mut RedisConnection,
        n: usize,
        version: u64,
    ) -> Result<(), StoreError> {
        replicas
            .raise
            .key(self.inner.keys.version_copy(n))
            .arg(version)
            .invoke::<i64>(c)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}
