//! An existence filter shared through Redis: the snapshot of its bits in
//! one string, the source hashes of the keys inserted since in another
//! (appended to, eight bytes a key), and the snapshot's epoch in a third,
//! all under one hash tag so that a cluster keeps them on one slot.

use std::sync::LazyLock;

use super::connection::Lua;
use super::{RedisStore, redis_error};
use crate::filter::{FilterShare, FilterSpec, FilterUpdate, LogPosition};
use crate::store::StoreError;
use futures_util::future::BoxFuture;

/// Lua: `str(key)`, the string at `key` or `''`; a key of another type is
/// deleted (it reads as empty). `epoch()`, the epoch at `KEYS[3]`, 0 when
/// there is none; one that is not a number is deleted. `aligned(key)`,
/// the length of the log at `key` after a torn tail that is not a whole
/// hash is cut (read with `STRLEN`, not copied).
macro_rules! filter_prelude {
    () => {
        r"
local function str(key)
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' then
    redis.call('DEL', key)
    return ''
  end
  return raw or ''
end
local function epoch()
  local raw = redis.pcall('GET', KEYS[3])
  if type(raw) == 'table' then redis.call('DEL', KEYS[3]) return 0 end
  if not raw then return 0 end
  local n = tonumber(raw)
  if not n then redis.call('DEL', KEYS[3]) return 0 end
  return n
end
local function aligned(key)
  local len = redis.pcall('STRLEN', key)
  if type(len) == 'table' then
    redis.call('DEL', key)
    return 0
  end
  local cut = len - len % 8
  if cut ~= len then
    if cut == 0 then
      redis.call('SET', key, '')
    else
      redis.call('SET', key, redis.call('GETRANGE', key, 0, cut - 1))
    end
  end
  return cut
end
"
    };
}

/// Appends `ARGV[1]` (source hashes, eight bytes each) to the log
/// (`KEYS[2]`; `KEYS[1]` and `KEYS[3]` are the snapshot and the epoch), first cutting a torn tail that is not a whole hash.
/// Returns the log's length in bytes.
const APPEND: &str = concat!(
    filter_prelude!(),
    r"
aligned(KEYS[2])
return redis.call('APPEND', KEYS[2], ARGV[1])
"
);

/// What was appended past byte `ARGV[2]` of the log when the epoch is
/// `ARGV[1]` and the log is at least that long: `{epoch, length, tail,
/// false}` (the log is not copied: `STRLEN` and `GETRANGE`);
/// otherwise the whole state, `{epoch, length, log, snapshot}`.
const SINCE: &str = concat!(
    filter_prelude!(),
    r"
local e = epoch()
local len = aligned(KEYS[2])
local from = tonumber(ARGV[2])
if e == tonumber(ARGV[1]) and len >= from then
  if len == from then return {e, len, '', false} end
  return {e, len, redis.call('GETRANGE', KEYS[2], from, len - 1), false}
end
return {e, len, str(KEYS[2]), str(KEYS[1])}
"
);

/// ORs `ARGV[1]` into the snapshot (`KEYS[1]`; one of another size is
/// replaced), through the scratch key `KEYS[4]`. When the epoch is
/// `ARGV[2]`, the first `ARGV[3]` bytes of the log, which the published
/// bits hold, leave it. Then moves the epoch forward (never below Redis's
/// clock in microseconds, so a lost epoch starts again above every one
/// handed out) and returns the whole state, `{epoch, length, log,
/// snapshot}`.
const PUBLISH: &str = concat!(
    filter_prelude!(),
    r"
local cur = str(KEYS[1])
if string.len(cur) == string.len(ARGV[1]) then
  redis.call('SET', KEYS[4], ARGV[1])
  redis.call('BITOP', 'OR', KEYS[1], KEYS[1], KEYS[4])
  redis.call('DEL', KEYS[4])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
local e = epoch()
aligned(KEYS[2])
local log = str(KEYS[2])
if e == tonumber(ARGV[2]) then
  log = string.sub(log, tonumber(ARGV[3]) + 1)
  redis.call('SET', KEYS[2], log)
end
local t = redis.call('TIME')
local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
if e >= v then v = e + 1 end
redis.call('SET', KEYS[3], string.format('%.0f', v))
return {v, string.len(log), log, str(KEYS[1])}
"
);

static APPEND_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(APPEND));
static SINCE_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(SINCE));
static PUBLISH_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(PUBLISH));

/// The keys of one filter: snapshot, log, epoch, scratch.
fn keys(store: &RedisStore, spec: &FilterSpec) -> [String; 4] {
    let tag = format!(
        "{}f:{{{}:{}x{}:{:x}}}",
        store.prefix(),
        spec.name,
        spec.num_bits,
        spec.num_hashes,
        spec.seed
    );
    ["bits", "log", "epoch", "tmp"].map(|part| format!("{tag}:{part}"))
}

fn hashes_of(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        .collect()
}

/// A reply of `SINCE` or `PUBLISH`: epoch, log length in bytes, the log
/// (or its tail), and the snapshot when the whole state was sent.
type Reply = (u64, u64, Vec<u8>, Option<Vec<u8>>);

fn update_of((epoch, len, log, snapshot): Reply) -> FilterUpdate {
    FilterUpdate {
        hashes: hashes_of(&log),
        snapshot,
        at: LogPosition {
            epoch: Some(epoch),
            offset: len / 8,
        },
    }
}

/// Every call goes through the store's circuit breaker and operation
/// timeout ([`RedisStoreBuilder::op_timeout`](super::RedisStoreBuilder::op_timeout)):
/// while Redis is away the filter answers "present" at once.
///
/// The filter's keys carry no TTL: keep them out of eviction (a
/// `volatile-*` or `noeviction` policy; every cache entry has a TTL, so
/// `volatile-lru` evicts entries only). A log found shorter than a copy
/// has read makes that copy read the whole state again.
impl FilterShare for RedisStore {
    fn append<'a>(
        &'a self,
        spec: &'a FilterSpec,
        hashes: &'a [u64],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let [bits, log, epoch, _] = keys(self, spec);
            let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
            self.guarded(|| {
                self.timed(async {
                    let mut c = self.connection();
                    APPEND_SCRIPT
                        .key(&bits)
                        .key(&log)
                        .key(&epoch)
                        .arg(bytes.as_slice())
                        .invoke::<u64>(&mut c)
                        .await
                        .map(|len| len / 8)
                        .map_err(redis_error)
                })
            })
            .await
        })
    }

    fn since<'a>(
        &'a self,
        spec: &'a FilterSpec,
        at: LogPosition,
    ) -> BoxFuture<'a, Result<FilterUpdate, StoreError>> {
        Box::pin(async move {
            let [bits, log, epoch, _] = keys(self, spec);
            // An epoch no reply ever carries: the whole state is sent.
            let asked = at.epoch.map_or(-1, i128::from);
            self.guarded(|| {
                self.timed(async {
                    let mut c = self.connection();
                    SINCE_SCRIPT
                        .key(&bits)
                        .key(&log)
                        .key(&epoch)
                        .arg(asked.to_string())
                        .arg(at.offset.saturating_mul(8))
                        .invoke::<Reply>(&mut c)
                        .await
                        .map(update_of)
                        .map_err(redis_error)
                })
            })
            .await
        })
    }

    fn publish<'a>(
        &'a self,
        spec: &'a FilterSpec,
        bits: Vec<u8>,
        compact: Option<LogPosition>,
    ) -> BoxFuture<'a, Result<FilterUpdate, StoreError>> {
        Box::pin(async move {
            let [snapshot, log, epoch, tmp] = keys(self, spec);
            let (from_epoch, from_offset) = match compact {
                Some(LogPosition {
                    epoch: Some(e),
                    offset,
                }) => (i128::from(e), offset.saturating_mul(8)),
                _ => (-1, 0),
            };
            self.guarded(|| {
                self.timed(async {
                    let mut c = self.connection();
                    PUBLISH_SCRIPT
                        .key(&snapshot)
                        .key(&log)
                        .key(&epoch)
                        .key(&tmp)
                        .arg(bits.as_slice())
                        .arg(from_epoch.to_string())
                        .arg(from_offset)
                        .invoke::<Reply>(&mut c)
                        .await
                        .map(update_of)
                        .map_err(redis_error)
                })
            })
            .await
        })
    }
}
