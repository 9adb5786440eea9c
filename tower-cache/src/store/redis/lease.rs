//! Leases on loads across instances: the instance that takes a key's lease loads it, the others wait for its value.
//!
//! A lease is one small key beside the entry (`P` `l:{K}`, in the entry's
//! Redis Cluster slot, see `keys.rs`) holding its holder's token, set only if
//! absent (`SET NX PX`) and expiring by itself: a holder that dies leaves
//! it for at most its time to live. The script that takes it also says
//! whether the entry exists, so that a caller whose read missed just
//! before a holder stored and released reads the value instead of
//! loading it again. The holder releases it when its load
//! is done, in the same script as its write when it has a value to store
//! (see `tombstone.rs`); a remove of the key deletes it, so that the
//! instances waiting for the value load it anew instead of waiting for
//! one read before the remove.

use std::sync::LazyLock;
use std::time::Duration;

use super::connection::{Lua, RedisConnection};
use super::{RedisStore, redis_error};
use crate::clock;
use crate::store::{Lease, StoreError};

/// Deletes the lease at `KEYS[1]` if it still holds the token `ARGV[1]`,
/// or if it never expires (every lease does: that one is garbage, which
/// would otherwise hold the key's loads back for good).
pub(super) const RELEASE: &str = r"
local held = redis.pcall('GET', KEYS[1])
if held == ARGV[1] or (held and redis.call('PTTL', KEYS[1]) == -1) then
  return redis.call('DEL', KEYS[1])
end
return 0
";

static RELEASE_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(RELEASE));

/// Takes the lease at `KEYS[1]` for `ARGV[2]` ms under the token `ARGV[1]`
/// if it is free; 0 when it is taken, 1 when granted, 2 when granted
/// while the entry at `KEYS[2]` exists (stored by a holder since the
/// caller's last read, or a stale entry being refreshed): one atomic look
/// at both, so that a load stored and released between a caller's read
/// and its lease is not loaded again.
const TAKE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1 + redis.call('EXISTS', KEYS[2])
end
return 0
";

static TAKE_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(TAKE));

/// A token as it is stored.
pub(super) fn token_arg(token: u64) -> String {
    format!("{token:016x}")
}

impl RedisStore {
    /// Takes `key`'s lease for `ttl` (at least 1 ms) under `token`: one
    /// `SET NX PX` and a look at the entry's existence, in one script.
    pub(crate) async fn lease_direct(
        &self,
        key: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        self.timed(async move {
            let mut c = self.connection();
            TAKE_SCRIPT
                .key(self.lease_key(key))
                .key(self.entry_key(key))
                .arg(token_arg(token))
                .arg(clock::ms(ttl).max(1))
                .invoke::<i64>(&mut c)
                .await
                .map(|taken| match taken {
                    0 => Lease::Taken,
                    1 => Lease::Granted,
                    _ => Lease::GrantedOverValue,
                })
                .map_err(redis_error)
        })
        .await
    }

    /// Gives up `key`'s lease if `token` still holds it.
    pub(crate) async fn release_direct(&self, key: &str, token: u64) -> Result<(), StoreError> {
        self.timed(async move {
            let mut c = self.connection();
            self.release_on(&mut c, key, token).await
        })
        .await
    }

    /// [`RedisStore::release_direct`] on a connection, without a timeout
    /// of its own.
    pub(super) async fn release_on(
        &self,
        c: &mut RedisConnection,
        key: &str,
        token: u64,
    ) -> Result<(), StoreError> {
        RELEASE_SCRIPT
            .key(self.lease_key(key))
            .arg(token_arg(token))
            .invoke::<i64>(c)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}
