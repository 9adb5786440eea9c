//! The read path of the Redis store: one script reads an entry with the invalidation versions that decide whether it may be served.

use std::future::Future;

use bytes::Bytes;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{RedisStore, redis_error};
use crate::clock;
use crate::entry::Entry;
use crate::store::StoreError;

impl RedisStore {
    /// Whether a tag invalidation or a namespace-wide one (`all`, read
    /// with the entry) was made at a version after the entry's. One
    /// pipeline of single-key `GET`s, so no command spans two cluster slots.
    async fn invalidated(
        &self,
        c: &mut ConnectionManager,
        entry: &Entry,
        all: Option<u64>,
    ) -> Result<bool, StoreError> {
        let version = entry.version().unwrap_or(0);
        if all.is_some_and(|v| v > version) {
            return Ok(true);
        }
        if entry.tags().is_empty() {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        for tag in entry.tags() {
            pipe.get(self.tag_key(tag));
        }
        let stamps: Vec<Option<Vec<u8>>> = pipe.query_async(c).await.map_err(redis_error)?;
        Ok(stamps
            .iter()
            .flatten()
            .filter_map(|raw| stamp(raw))
            .any(|v| v > version))
    }

    /// One round trip: a script reads the entry, the namespace-wide
    /// invalidation version and its tags' versions; an invalidated or
    /// undecodable entry is deleted. All of it runs under one
    /// [`RedisStoreBuilder::op_timeout`].
    pub(crate) async fn get_direct(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.read_direct(key).await.map(|(entry, _)| entry)
    }

    /// [`get_direct`](Self::get_direct), with the namespace's invalidation
    /// version counter read in the same script (`None` when it is unset
    /// or garbage).
    pub(crate) fn read_direct<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(Option<Entry>, Option<u64>), StoreError>> + Send + 'a {
        let rkey = self.entry_key(key);
        self.timed(async move {
            let mut c = self.connection();
            let mut reply: Vec<Vec<u8>> = self
                .inner
                .read
                .key(&rkey)
                .key(self.all_key())
                .key(self.version_key())
                .arg(self.tag_prefix())
                .invoke_async(&mut c)
                .await
                .map_err(redis_error)?;
            // A counter that is not a number reads as none (the version
            // script seeds it again).
            let counter = reply
                .first()
                .and_then(|raw| std::str::from_utf8(raw).ok()?.parse::<u64>().ok());
            if reply.len() < 3 {
                return Ok((None, counter));
            }
            let stamps: Vec<Option<u64>> = reply.drain(2..).map(|b| stamp(&b)).collect();
            let (all, tag_stamps) = (stamps[0], &stamps[1..]);
            let raw = reply.swap_remove(1);
            let entry = match Entry::decode(&rkey, Bytes::from(raw)) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(key = %rkey, %error, "dropping undecodable cache entry");
                    metrics::counter!("tower_cache_store_corrupt_total").increment(1);
                    let _: redis::RedisResult<i64> = c.del(&rkey).await;
                    return Ok((None, counter));
                }
            };
            if !entry.is_servable_at(clock::now_ms()) {
                return Ok((None, counter));
            }
            let version = entry.version().unwrap_or(0);
            let invalidated = if tag_stamps.len() == entry.tags().len() {
                all.into_iter()
                    .chain(tag_stamps.iter().flatten().copied())
                    .any(|v| v > version)
            } else {
                self.invalidated(&mut c, &entry, all).await?
            };
            if invalidated {
                let _: redis::RedisResult<i64> = c.del(&rkey).await;
                return Ok((None, counter));
            }
            Ok((Some(entry), counter))
        })
    }

    /// [`read_direct`](Self::read_direct) with a version always: a counter
    /// the read did not find is read (and seeded) by the version script.
    pub(crate) async fn get_versioned_direct(
        &self,
        key: &str,
    ) -> Result<(Option<Entry>, u64), StoreError> {
        match self.read_direct(key).await? {
            (entry, Some(version)) => Ok((entry, version)),
            (entry, None) => Ok((entry, self.version_direct().await?)),
        }
    }
}

/// An invalidation version as the read script returns it: `None` for
/// `''` (none set); anything that is not a number (another type at the
/// key, garbage) invalidates everything, since what it held is unknown.
fn stamp(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() {
        return None;
    }
    Some(
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX),
    )
}
