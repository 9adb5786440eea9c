//! The read a load is about to follow: the entry, and the namespace's invalidation counter (which the load records) with the namespace-wide version, in two slots at once; the entry's tags' versions after, when they are not known at that counter.

use std::future::Future;

use redis::Value;

use super::connection::Spread;
use super::read::{counter, delete, is_after, stamp};
use super::{RedisStore, parse_error, redis_error};
use crate::clock;
use crate::entry::Entry;
use crate::store::StoreError;

impl RedisStore {
    /// The entry and the namespace's invalidation counter (`None` when the
    /// reply holds none), read at once: the entry by a `GET` (an entry key
    /// of another type is deleted) and, on the namespace's slot, the
    /// counter and the namespace-wide version by [`STAMPS`] (one round
    /// trip on a single node, where both go in one pipeline). The
    /// namespace-wide version is recorded for the hits that follow (see
    /// `read.rs`); the entry's tags' versions are those known at that
    /// counter, or read then (one more round trip) and recorded. An
    /// invalidated or undecodable entry is deleted.
    ///
    /// The counter is what the load records as its version. Which of the
    /// two reads Redis runs first does not matter: an invalidation made
    /// before this read started moved the counter first, so its version is
    /// at or below the counter read, and the load (which reads the origin
    /// after this) saw it; one made later has a version above it, and
    /// refuses what the load writes.
    ///
    /// [`STAMPS`]: super::scripts::STAMPS
    fn read_versioned<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(Option<Entry>, Option<u64>), StoreError>> + Send + 'a {
        let rkey = self.entry_key(key);
        self.timed(async move {
            let mut c = self.connection();
            let mut stamps = self.inner.stamps.key(self.version_key());
            stamps.key(self.all_key());
            let steps = [redis::Cmd::get(&rkey).into(), stamps.into()];
            let mut replies = match c.run(&steps, Spread::AtOnce).await {
                Ok(replies) => replies,
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    // Something else than an entry at the entry's key: a
                    // miss, and the key is cleared for the load's write.
                    delete(&mut c, &rkey).await;
                    c.run(&steps[1..], Spread::OneSlot)
                        .await
                        .map_err(redis_error)?
                        .into_iter()
                        .chain([Value::Nil])
                        .rev()
                        .collect()
                }
                Err(e) => return Err(redis_error(e)),
            };
            let stamps: Vec<Vec<u8>> = replies
                .pop()
                .map_or(Ok(Vec::new()), redis::from_redis_value)
                .map_err(parse_error)?;
            let counter = stamps.first().and_then(|raw| counter(raw));
            let all = stamps.get(1).map_or(Some(u64::MAX), |raw| stamp(raw));
            let now = clock::now_ms();
            if let Some(counter) = counter {
                self.inner.known.record(counter, now, all, []);
            }
            let Some(Value::BulkString(raw)) = replies.pop() else {
                return Ok((None, counter));
            };
            let entry = match self.inner.decoded.decode(&rkey, raw) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(key = %rkey, %error, "dropping undecodable cache entry");
                    self.inner.corrupt.increment(1);
                    delete(&mut c, &rkey).await;
                    return Ok((None, counter));
                }
            };
            if !entry.is_servable_at(now) {
                return Ok((None, counter));
            }
            let known = if entry.tags().is_empty() {
                Some(is_after(&entry, all, &[]))
            } else {
                counter.and_then(|counter| self.inner.known.invalidated(&entry, counter, now))
            };
            let invalidated = match known {
                Some(invalidated) => invalidated,
                None => self.read_stamps(&mut c, &entry, now).await?,
            };
            if invalidated {
                delete(&mut c, &rkey).await;
                return Ok((None, counter));
            }
            Ok((Some(entry), counter))
        })
    }

    /// The entry with the namespace's invalidation version always: a
    /// counter the read did not bring back is read (and seeded) by the
    /// version script.
    pub(crate) async fn get_versioned_direct(
        &self,
        key: &str,
    ) -> Result<(Option<Entry>, u64), StoreError> {
        match self.read_versioned(key).await? {
            (entry, Some(version)) => Ok((entry, version)),
            (entry, None) => Ok((entry, self.version_direct().await?)),
        }
    }
}
