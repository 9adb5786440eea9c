//! The Lua scripts the Redis store runs on the namespace's keys: invalidation with versions, the version read and the read of versions (a key's remove, its checked write and its lease have theirs beside them, in `tombstone.rs` and `lease.rs`).
//!
//! Every script declares every key it touches in `KEYS`, and the keys of
//! one script share a slot (see `keys.rs`): each touches the namespace's
//! keys alone (those in `tombstone.rs` and `lease.rs` one key's family
//! alone), and runs on one node of a Redis Cluster. An L2 hit runs none of them: it is one `GET`
//! or `MGET` on a single node, two `GET`s at once on a cluster (see `read.rs`).

/// Lua: `num(key)`, the number stored at `key`, or `nil` when none is;
/// a key holding another type or a value that is not a number is deleted
/// (it reads as "none"). `now()`, Redis's own clock in microseconds.
macro_rules! lua_prelude {
    () => {
        r"
local function num(key)
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' then
    redis.call('DEL', key)
    return nil
  end
  if not raw then return nil end
  local n = tonumber(raw)
  if not n then redis.call('DEL', key) end
  return n
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"
    };
}

/// Invalidates a tag (or the whole namespace): moves the namespace's
/// invalidation version (`KEYS[2]`) forward and records it at the tag's
/// key (`KEYS[1]`), kept `ARGV[1]` ms (as long as any entry can live in
/// Redis) and never moved backwards nor shortened. Returns the new
/// version.
///
/// The version is a counter, never a client's clock. It never falls
/// below Redis's own clock in microseconds, so a counter that is lost
/// (evicted, deleted, overwritten with garbage) starts again above every
/// version it handed out, as long as fewer than one invalidation per
/// microsecond was made on average. Whatever else sits at either key is
/// replaced, so an invalidation always lands.
pub(super) const INVALIDATE: &str = concat!(
    lua_prelude!(),
    r"
local v = now()
local cur = num(KEYS[2])
if cur and cur >= v then v = cur + 1 end
redis.call('SET', KEYS[2], string.format('%.0f', v))
local keep = tonumber(ARGV[1])
local stamp = num(KEYS[1])
if not stamp or v > stamp then
  redis.call('SET', KEYS[1], string.format('%.0f', v), 'PX', keep)
elseif redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return v
"
);

/// Reads the namespace's invalidation version (`KEYS[1]`). A missing one
/// (never set, or lost) starts at Redis's clock in microseconds, which is
/// above every version handed out before (see [`INVALIDATE`]).
pub(super) const VERSION: &str = concat!(
    lua_prelude!(),
    r"
local v = num(KEYS[1])
if not v then
  v = now()
  redis.call('SET', KEYS[1], string.format('%.0f', v))
end
return v
"
);

/// Reads the invalidation versions an entry needs, all at one instant:
/// the namespace's counter (`KEYS[1]`), the namespace-wide version
/// (`KEYS[2]`) and its tags' versions (`KEYS[3..]`). Replies the counter,
/// then one version per other key: `''` where none is set, `'?'` where
/// the key holds another type. A counter that is missing or not a
/// number is seeded as [`VERSION`] does, so the reply always carries one
/// at which the versions beside it were read.
pub(super) const STAMPS: &str = concat!(
    lua_prelude!(),
    r"
local v = num(KEYS[1])
if not v then
  v = now()
  redis.call('SET', KEYS[1], string.format('%.0f', v))
end
local out = {string.format('%.0f', v)}
for i = 2, #KEYS do
  local s = redis.pcall('GET', KEYS[i])
  if type(s) == 'table' then s = '?' end
  out[#out + 1] = s or ''
end
return out
"
);
