//! The read a load is about to follow: the entry with the namespace's invalidation counter, which the load records, and the versions that decide whether the entry may be served, in one script.

use std::future::Future;

use bytes::Bytes;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::read::{counter, is_after, stamp};
use super::stamps::Stamp;
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
        all: Stamp,
    ) -> Result<bool, StoreError> {
        if is_after(entry, all, &[]) {
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
        let stamps: Vec<Stamp> = stamps.iter().flatten().map(|raw| stamp(raw)).collect();
        Ok(is_after(entry, None, &stamps))
    }

    /// The entry and the namespace's invalidation counter (`None` when it
    /// is unset or garbage), in one script that also reads the
    /// namespace-wide version and the entry's tags' versions (recorded
    /// for the hits that follow, see `read.rs`). An entry key of another
    /// type is deleted; an invalidated or undecodable entry is deleted.
    fn read_versioned<'a>(
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
            let counter = reply.first().and_then(|raw| counter(raw));
            if reply.len() < 3 {
                return Ok((None, counter));
            }
            let stamps: Vec<Stamp> = reply.drain(2..).map(|b| stamp(&b)).collect();
            let (all, tag_stamps) = (stamps[0], &stamps[1..]);
            let raw = reply.swap_remove(1);
            let entry = match Entry::decode(&rkey, Bytes::from(raw)) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(key = %rkey, %error, "dropping undecodable cache entry");
                    self.inner.corrupt.increment(1);
                    let _: redis::RedisResult<i64> = c.del(&rkey).await;
                    return Ok((None, counter));
                }
            };
            if !entry.is_servable_at(clock::now_ms()) {
                return Ok((None, counter));
            }
            let invalidated = if tag_stamps.len() == entry.tags().len() {
                self.record_stamps(counter, &entry, all, tag_stamps);
                is_after(&entry, all, tag_stamps)
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

    /// The entry with the namespace's invalidation version always: a
    /// counter the read did not find is read (and seeded) by the version
    /// script.
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
