//! Key removes ordered against loads across instances: a remove leaves a tombstone of its version under the key, and the write of a value loaded before it is refused.
//!
//! # The protocol
//!
//! - A load records the namespace's invalidation counter before it reads
//!   the origin ([`Entry::version`], the load version).
//! - A remove of a key moves the counter forward (one command, [`BUMP`]),
//!   then, in one script on the key's own keys ([`REMOVE`]: the entry, its
//!   tombstone, its lease), deletes the entry and the lease and raises the
//!   tombstone to the remove's version, kept
//!   [`max_load_time`](super::RedisStoreBuilder::max_load_time).
//! - The write of a loaded value ([`PUT_UNLESS_REMOVED`], on the entry and
//!   its tombstone) is refused when the tombstone is above the load
//!   version: the value was read before the remove, by whichever instance.
//!
//! Each script touches one key's family only, which shares one Redis
//! Cluster slot (the key is the hash tag of all three, see `keys.rs`);
//! the counter is moved by a script of its own and the namespace's
//! versions are read by single-key commands, in the namespace's slot.
//!
//! The limit: a tombstone is kept `max_load_time`; a load that takes
//! longer than that after a remove of its key can still store the value it
//! read before the remove.

use std::sync::LazyLock;

use redis::{AsyncCommands, Value};

use super::connection::{Lua, RedisConnection, Spread, Step};
use super::keys::Family;
use super::lease::token_arg;
use super::read::{is_after, stamp};
use super::stamps::Stamp;
use super::{RedisStore, redis_error};
use crate::clock;
use crate::entry::Entry;
use crate::store::StoreError;

/// Moves the namespace's invalidation counter (`KEYS[1]`) forward, as an
/// invalidation does, and returns it: one more than it was, and never
/// below Redis's clock in microseconds, so that a counter that was lost
/// (evicted, deleted, overwritten with garbage) starts again above every
/// version handed out before. Whatever else sits at the key is replaced.
pub(super) const BUMP: &str = r"
local raw = redis.pcall('GET', KEYS[1])
local cur = type(raw) == 'string' and tonumber(raw) or nil
local t = redis.call('TIME')
local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
if cur and cur >= v then v = cur + 1 end
redis.call('SET', KEYS[1], string.format('%.0f', v))
return v
";

/// Removes a key: deletes its entry (`KEYS[1]`) and its lease
/// (`KEYS[3]`), and raises its tombstone (`KEYS[2]`) to the remove's
/// version (`ARGV[1]`), never lowering it, kept `ARGV[2]` ms. A tombstone
/// key holding anything else is replaced.
pub(super) const REMOVE: &str = r"
redis.call('DEL', KEYS[1], KEYS[3])
local v = tonumber(ARGV[1])
local raw = redis.pcall('GET', KEYS[2])
local cur = type(raw) == 'string' and tonumber(raw) or nil
if cur and cur > v then v = cur end
redis.call('SET', KEYS[2], string.format('%.0f', v), 'PX', ARGV[2])
return 1
";

/// Stores an envelope (`ARGV[1]`, `PX` `ARGV[2]`) at `KEYS[1]` unless the
/// key's tombstone (`KEYS[2]`) is above the entry's load version
/// (`ARGV[3]`): a value read from the origin before a remove of the key is
/// refused. A tombstone holding anything but a version refuses the write
/// and is deleted. Then releases the key's lease (`KEYS[3]`) if it holds
/// the token `ARGV[4]` (none when empty), and deletes one that never
/// expires (every lease does: that one is garbage). With `ARGV[5]` = `1`,
/// stores only where nothing is (a hot key's replica filled from its
/// entry, which never replaces a newer write). Returns 1 when stored.
pub(super) const PUT_UNLESS_REMOVED: &str = r"
local stored = 0
local raw = redis.pcall('GET', KEYS[2])
local n = type(raw) == 'string' and tonumber(raw) or nil
if raw and not n then
  redis.call('DEL', KEYS[2])
elseif not n or n <= tonumber(ARGV[3]) then
  if ARGV[5] == '1' then
    if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then stored = 1 end
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    stored = 1
  end
end
local held = redis.pcall('GET', KEYS[3])
if (ARGV[4] ~= '' and held == ARGV[4]) or (held and redis.call('PTTL', KEYS[3]) == -1) then
  redis.call('DEL', KEYS[3])
end
return stored
";

static BUMP_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(BUMP));
static REMOVE_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(REMOVE));
static PUT_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(PUT_UNLESS_REMOVED));

impl RedisStore {
    /// How long a tombstone is kept, in milliseconds.
    pub(super) fn tombstone_ms(&self) -> u64 {
        clock::ms(self.inner.max_load_time).max(1)
    }

    /// Moves the namespace's invalidation counter forward; its new value.
    pub(super) async fn bump_version(&self, c: &mut RedisConnection) -> Result<u64, StoreError> {
        BUMP_SCRIPT
            .key(self.version_key())
            .invoke(c)
            .await
            .map_err(redis_error)
    }

    /// [`REMOVE`] of the entry `family` holds at `version`.
    fn remove_call(&self, family: &Family, version: u64) -> Step<'static> {
        let mut call = REMOVE_SCRIPT.key(&family.entry);
        call.key(&family.tombstone)
            .key(&family.lease)
            .arg(version)
            .arg(self.tombstone_ms());
        call.into()
    }

    /// Deletes `key`'s entry and lease, and raises its tombstone to
    /// `version`.
    pub(super) async fn bury(
        &self,
        c: &mut RedisConnection,
        key: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        self.bury_all(c, &[key], version).await
    }

    /// Removes `keys` at `version` (the replay of removes that missed
    /// Redis too): [`REMOVE`] once per key and per replica of it (see
    /// `replicas.rs`), each on its slot, in one pipeline on a single node
    /// and all at once on a cluster.
    pub(super) async fn bury_all(
        &self,
        c: &mut RedisConnection,
        keys: &[&str],
        version: u64,
    ) -> Result<(), StoreError> {
        let replicas = self
            .inner
            .replicas
            .as_ref()
            .map_or(0, super::replicas::Replicas::count);
        let calls: Vec<Step<'_>> = keys
            .iter()
            .flat_map(|key| {
                let keys = &self.inner.keys;
                std::iter::once(keys.primary(key))
                    .chain((1..=replicas).map(|n| keys.replica(key, n)))
            })
            .map(|family| self.remove_call(&family, version))
            .collect();
        c.run(&calls, Spread::AtOnce)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }

    /// Stores `entry` at `family`'s entry key for `ttl_ms` (only where
    /// none is, with `only_if_absent`) unless a remove of its key was made
    /// after its version was read, and releases the lease `token` holds ([`PUT_UNLESS_REMOVED`], on the key's slot); then reads the
    /// namespace's and the entry's tags' invalidation versions (single-key
    /// `GET`s, on the namespace's slot; in the same round trip on a single
    /// node), and deletes what it stored when one is after the entry's (a
    /// value loaded before an invalidation and written after it). `true`
    /// when stored and kept.
    ///
    /// The versions are read after the write: an invalidation made before
    /// the write is seen, and one made after it outlives the entry (both
    /// are kept `max_ttl`). In between, readers refuse the entry by the
    /// same versions (see [`RedisStore::put_direct`]).
    pub(super) async fn put_unless_removed(
        &self,
        c: &mut RedisConnection,
        family: &Family,
        entry: &Entry,
        ttl_ms: u64,
        token: Option<u64>,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        let rkey = family.entry.as_str();
        let payload = entry.encode(rkey);
        let token = token.map(token_arg).unwrap_or_default();
        let mut put = PUT_SCRIPT.key(rkey);
        put.key(&family.tombstone)
            .key(&family.lease)
            .arg(payload.as_ref())
            .arg(ttl_ms)
            .arg(entry.version().unwrap_or(0))
            .arg(&token)
            .arg(if only_if_absent { "1" } else { "0" });
        let gets: Vec<redis::Cmd> = std::iter::once(redis::Cmd::get(self.all_key()))
            .chain(
                entry
                    .tags()
                    .iter()
                    .map(|tag| redis::Cmd::get(self.tag_key(tag))),
            )
            .collect();
        let (stored, versions) = c.run_then(&put, &gets).await.map_err(redis_error)?;
        let stored = matches!(stored, Value::Int(1));
        // A tag key of another type answers an error of its own, which
        // refuses the write as garbage would.
        let stamps: Vec<Stamp> = versions
            .into_iter()
            .map(|v| match v {
                Ok(Value::Nil) => None,
                Ok(Value::BulkString(raw)) => stamp(&raw),
                _ => Some(u64::MAX),
            })
            .collect();
        let overtaken =
            stamps.len() != entry.tags().len() + 1 || is_after(entry, stamps[0], &stamps[1..]);
        if stored && overtaken {
            // A delete that fails fails the write, kept for replay as a
            // remove of the key.
            c.del::<_, i64>(rkey).await.map_err(redis_error)?;
        }
        Ok(stored && !overtaken)
    }
}
