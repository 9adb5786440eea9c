//! Leases on loads across instances: the instance that takes a key's lease loads it, the others wait for its value.
//!
//! A lease is one small key beside the entry (`P` `l:{K}`, in the entry's
//! Redis Cluster slot, see `keys.rs`) holding its holder's token, set only if
//! absent (`SET NX PX`) and expiring by itself: a holder that dies leaves
//! it for at most its time to live. The holder releases it when its load
//! is done, in the same script as its write when it has a value to store
//! (see `tombstone.rs`); a remove of the key deletes it, so that the
//! instances waiting for the value load it anew instead of waiting for
//! one read before the remove.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};

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

/// A token as it is stored.
pub(super) fn token_arg(token: u64) -> String {
    format!("{token:016x}")
}

impl RedisStore {
    /// Takes `key`'s lease for `ttl` (at least 1 ms) under `token`: one
    /// `SET NX PX`.
    pub(crate) async fn lease_direct(
        &self,
        key: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let lkey = self.lease_key(key);
        self.timed(async move {
            let mut c = self.connection();
            let opts = SetOptions::default()
                .conditional_set(ExistenceCheck::NX)
                .with_expiration(SetExpiry::PX(clock::ms(ttl).max(1)));
            c.set_options::<_, _, Option<String>>(lkey, token_arg(token), opts)
                .await
                .map(|set| {
                    if set.is_some() {
                        Lease::Granted
                    } else {
                        Lease::Taken
                    }
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
