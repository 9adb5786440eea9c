//! The read path of the Redis store: a hit is one `MGET` of the entry and the namespace's invalidation counter (on a cluster, two `GET`s at once), or on a single node one `GET` on the connection where Redis tracks the counter (`tracked.rs`).
//!
//! # Why a hit is one plain command
//!
//! Whether an entry may be served depends on three things in Redis: the
//! entry (its [`Entry::version`] and tags), the namespace-wide
//! invalidation version and the versions of its tags. Reading them all on
//! every hit takes a script (the tag keys are only known once the entry
//! is read), and a script costs Redis several times what a plain read
//! does.
//!
//! Every invalidation, of a tag or of the whole namespace, goes through
//! the invalidation script, which moves the namespace's version counter
//! forward before it records the invalidation's version. So while the
//! counter holds a value, no invalidation version changes. The store
//! keeps, in process ([`KnownStamps`]), the versions it last read, each
//! with the counter value read with it in the same script. A read is
//! then `MGET entry counter`, one command (on a cluster, where the two
//! keys are in two slots, a `GET` of each sent at once, one round trip):
//!
//! - when the counter it brings back is the one at which every version
//!   the entry needs was read (its namespace's, its tags'), those are the
//!   versions Redis holds at the instant of the `MGET`, and the entry is
//!   decided here, exactly as a script would have decided it then;
//! - otherwise (an invalidation was made since, a tag not read before, a
//!   counter that is missing or not a number, versions read more than
//!   [`MAX_AGE_MS`](super::stamps::MAX_AGE_MS) ago) one more round trip
//!   reads the versions the entry needs ([`STAMPS`](super::scripts::STAMPS)),
//!   the table is brought up to date and the entry decided on them.
//!   Versions read after the entry are never older than those it was
//!   read with, so this refuses at least what a read of both at once
//!   would have.
//!
//! On a cluster the two reads are not one instant, and need not be: an
//! invalidation made before the read started moved the counter before
//! either `GET` ran, so the counter brought back is not the one the known
//! versions were read at, and the versions are read again, as above. One
//! made while the read runs is concurrent with it, and the read may be
//! ordered before it, as a read of both at once could have been.
//!
//! On a single node with client tracking, the counter is not read with
//! every entry: Redis says, on the connection the entry is read on, when
//! the counter changes, and a `GET` of the entry whose reply comes before
//! any such message is decided on the counter value read before it,
//! exactly as an `MGET` bringing that value back would be (see
//! `tracked.rs`, and the model beside it, `tracking.pml`).
//!
//! An entry that does not decode, or that is invalidated, is deleted (one
//! more command, on that path only). A counter that is lost and seeded
//! again starts above every value handed out before (see
//! [`INVALIDATE`](super::scripts::INVALIDATE)), so it never comes back to
//! a value a version was read at. A tag key that holds anything but a
//! version invalidates its entries; when it is written by something other
//! than this crate without an invalidation, the change is seen at the
//! next invalidation in the namespace, and at the latest after
//! `MAX_AGE_MS`.

use std::future::Future;

use redis::aio::ConnectionLike;
use redis::{AsyncCommands, Value};

use super::stamps::{KnownStamps, Stamp};
use super::{RedisConnection, RedisStore, redis_error};
use crate::clock;
use crate::entry::Entry;
use crate::store::StoreError;

impl RedisStore {
    /// One `GET` of the entry on the tracked connection while it is up
    /// (see `tracked.rs`), else one `MGET` of the entry and the
    /// namespace's counter; a second round trip for the invalidation
    /// versions only when those known here were not read at that counter
    /// value (see the module docs). An invalidated or undecodable entry is
    /// deleted. On the main connection all of it runs under one
    /// [`RedisStoreBuilder::op_timeout`]; on the tracked one the `GET` is
    /// bounded by the connection's watch (`tracked.rs`), and each further
    /// round trip by the operation timeout.
    pub(crate) async fn get_direct(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        if self.inner.replicas.is_none()
            && let Some(link) = self.inner.tracker.as_ref().and_then(|t| t.link())
        {
            let rkey = self.entry_key(key);
            let (raw, counter) = link.read(&rkey, self.version_key()).await?;
            drop(link);
            return self.settle(rkey, raw, counter, true).await;
        }
        // Boxed: the main connection's read stays out of the hit's future.
        Box::pin(self.timed(async move {
            if let Some(replicas) = &self.inner.replicas {
                let n = replicas.pick(key);
                if n > 0 {
                    let mut c = self.connection();
                    return self.get_replica(replicas, &mut c, key, n).await;
                }
            }
            self.read_entry(key).await
        }))
        .await
    }

    /// [`RedisStore::get_direct`] of `key`'s own entry on the main
    /// connection, without a timeout of its own.
    pub(super) async fn read_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let rkey = self.entry_key(key);
        let (raw, counter) = self.read_main(&rkey).await?;
        self.settle(rkey, raw, counter, false).await
    }

    /// Decides the entry read at `rkey` (its bytes, and the counter's
    /// value at that instant when known): decoded, checked against the
    /// invalidation versions (read again when those known are not at
    /// that counter value), deleted when undecodable or invalidated. When
    /// `timed`, each further round trip runs under the operation timeout.
    async fn settle(
        &self,
        rkey: String,
        raw: Option<Vec<u8>>,
        counter: Option<u64>,
        timed: bool,
    ) -> Result<Option<Entry>, StoreError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let entry = match self.inner.decoded.decode(&rkey, raw) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(key = %rkey, %error, "dropping undecodable cache entry");
                self.inner.corrupt.increment(1);
                self.delete_under(&rkey, timed).await;
                return Ok(None);
            }
        };
        let now = clock::now_ms();
        if !entry.is_servable_at(now) {
            return Ok(None);
        }
        let known = counter.and_then(|counter| self.inner.known.invalidated(&entry, counter, now));
        let invalidated = match known {
            Some(invalidated) => invalidated,
            // Boxed: the rare path stays out of the hit's future.
            None => {
                Box::pin(async {
                    let mut c = self.connection();
                    let stamps = self.read_stamps(&mut c, &entry, now);
                    if timed {
                        self.timed(stamps).await
                    } else {
                        stamps.await
                    }
                })
                .await?
            }
        };
        if invalidated {
            self.delete_under(&rkey, timed).await;
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Deletes an entry found undecodable or invalidated, under the
    /// operation timeout when `timed`.
    async fn delete_under(&self, rkey: &str, timed: bool) {
        let mut c = self.connection();
        if timed {
            let _ = tokio::time::timeout(self.inner.op_timeout, delete(&mut c, rkey)).await;
        } else {
            delete(&mut c, rkey).await;
        }
    }

    /// The entry at `rkey` and the namespace's counter, on the main
    /// connection: one `MGET` on a single node, a `GET` of each at once on
    /// a cluster.
    async fn read_main(&self, rkey: &str) -> Result<(Option<Vec<u8>>, Option<u64>), StoreError> {
        let version_key = self.version_key();
        let mut c = self.connection();
        if let RedisConnection::Single(single) = &mut c {
            // Sized up front: no buffer grows while the command is built.
            let mut mget = redis::Cmd::with_capacity(3, 4 + rkey.len() + version_key.len());
            mget.arg("MGET").arg(rkey).arg(version_key);
            entry_and_counter(single.req_packed_command(&mget).await)
        } else {
            entry_and_counter_apart(&c, rkey, version_key).await
        }
    }

    /// Reads the namespace's counter and the versions `entry` needs at
    /// one instant, records them, and says whether one of them is after
    /// the entry's version.
    pub(super) async fn read_stamps(
        &self,
        c: &mut RedisConnection,
        entry: &Entry,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.read_stamps_into(c, entry, now_ms, &self.inner.known)
            .await
            .map(|(invalidated, _)| invalidated)
    }

    /// [`RedisStore::read_stamps`], recording the versions in `known`;
    /// also the namespace's counter they were read at, if it is one.
    pub(super) async fn read_stamps_into(
        &self,
        c: &mut RedisConnection,
        entry: &Entry,
        now_ms: u64,
        known: &KnownStamps,
    ) -> Result<(bool, Option<u64>), StoreError> {
        let mut stamps = self.inner.stamps.key(self.version_key());
        stamps.key(self.all_key());
        for tag in entry.tags() {
            stamps.key(self.tag_key(tag));
        }
        let reply: Vec<Vec<u8>> = stamps.invoke(c).await.map_err(redis_error)?;
        let mut reply = reply.iter();
        let counter = reply.next().and_then(|raw| counter(raw));
        let all = reply.next().map_or(Some(u64::MAX), |raw| stamp(raw));
        let tags: Vec<Stamp> = reply.map(|raw| stamp(raw)).collect();
        if tags.len() != entry.tags().len() {
            // Not the reply the script gives: nothing is known.
            return Ok((true, None));
        }
        if let Some(counter) = counter {
            let named = entry
                .tags()
                .iter()
                .map(String::as_str)
                .zip(tags.iter().copied());
            known.record(counter, now_ms, all, named);
        }
        Ok((is_after(entry, all, &tags), counter))
    }
}

/// Deletes an entry found undecodable or invalidated; a failure is left
/// to the next read. Boxed, so that the hit's future does not carry it.
pub(super) fn delete<'a>(
    c: &'a mut RedisConnection,
    rkey: &'a str,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let _: redis::RedisResult<i64> = c.del(rkey).await;
    })
}

/// The entry's bytes (`None` for none, or a key of another type) and the
/// counter (`None` when unset or not a number) from an `MGET` reply,
/// without copying either.
pub(super) fn entry_and_counter(
    reply: redis::RedisResult<Value>,
) -> Result<(Option<Vec<u8>>, Option<u64>), StoreError> {
    let reply = reply.map_err(redis_error)?;
    let Value::Array(items) = reply else {
        return Err(match reply.extract_error() {
            Err(error) => redis_error(error),
            Ok(other) => StoreError::Backend(format!("unexpected reply to MGET: {other:?}").into()),
        });
    };
    let mut items = items.into_iter();
    let raw = match items.next() {
        Some(Value::BulkString(raw)) => Some(raw),
        _ => None,
    };
    let counter = match items.next() {
        Some(Value::BulkString(raw)) => counter(&raw),
        _ => None,
    };
    Ok((raw, counter))
}

/// The entry's bytes and the counter as [`entry_and_counter`] gives them,
/// from a `GET` of each sent at once, to the two slots' nodes. An entry
/// key of another type reads as none, a counter key of another type as
/// unset.
async fn entry_and_counter_apart(
    c: &RedisConnection,
    rkey: &str,
    version_key: &str,
) -> Result<(Option<Vec<u8>>, Option<u64>), StoreError> {
    let (mut ce, mut cv) = (c.clone(), c.clone());
    let (get_entry, get_counter) = (redis::Cmd::get(rkey), redis::Cmd::get(version_key));
    let (raw, count) = futures_util::join!(
        get_entry.query_async::<Value>(&mut ce),
        get_counter.query_async::<Value>(&mut cv)
    );
    let bulk = |reply: redis::RedisResult<Value>| match reply {
        Ok(Value::BulkString(raw)) => Ok(Some(raw)),
        Ok(_) => Ok(None),
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
        Err(e) => Err(redis_error(e)),
    };
    let raw = bulk(raw)?;
    let count = bulk(count)?.and_then(|raw| counter(&raw));
    Ok((raw, count))
}

/// Whether the namespace-wide version `all` or one of `tags` is after
/// `entry`'s version.
pub(super) fn is_after(entry: &Entry, all: Stamp, tags: &[Stamp]) -> bool {
    let version = entry.version().unwrap_or(0);
    all.into_iter()
        .chain(tags.iter().flatten().copied())
        .any(|v| v > version)
}

/// The namespace's counter as a script or `MGET` replies it: `None` when
/// unset or not a number.
pub(super) fn counter(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// An invalidation version as a script replies it: `None` for `''` (none
/// set); anything that is not a number (`'?'` for another type at the
/// key, garbage) is [`u64::MAX`], which invalidates everything, since
/// what it held is unknown.
pub(super) fn stamp(raw: &[u8]) -> Stamp {
    if raw.is_empty() {
        return None;
    }
    Some(counter(raw).unwrap_or(u64::MAX))
}
