//! A durable write log on a Redis Stream, for write-behind.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;

use super::{RedisStore, StoreError};

/// A write-ahead log on one Redis Stream: each acknowledged write is
/// appended (`XADD`) before it is acknowledged and deleted (`XDEL`) once the
/// writer has it, so what a crash leaves behind is read back
/// (`XRANGE`) when the queue starts again.
///
/// One log belongs to one instance at a time: name it after the instance
/// (a pod or host name that survives restarts). Delivery is at least once:
/// a crash between the writer's success and the delete delivers those
/// writes again, so the writer must be idempotent.
///
/// Used through [`WriteBehindLayer::durable`](crate::WriteBehindLayer::durable).
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    key: String,
    op_timeout: Duration,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("key", &self.key)
            .finish()
    }
}

impl RedisQueue {
    /// The log named `name`, stored under `{prefix}q:{name}` on `store`'s
    /// Redis, with its connection and timeout.
    pub fn new(store: &RedisStore, name: &str) -> Self {
        RedisQueue {
            conn: store.connection(),
            key: format!("{}q:{}", store.prefix(), name),
            op_timeout: store.op_timeout(),
        }
    }

    /// The Redis key of the stream.
    pub fn key(&self) -> &str {
        &self.key
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.op_timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Backend(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Appends `payload`; returns its entry id.
    pub async fn push(&self, payload: Bytes) -> Result<String, StoreError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.key).arg("*").arg("w").arg(payload.as_ref());
        self.run(cmd).await
    }

    /// Up to `count` entries after `after` (`"-"` for the start), oldest
    /// first.
    pub async fn read_after(
        &self,
        after: &str,
        count: usize,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        let start = if after == "-" {
            "-".to_owned()
        } else {
            format!("({after}")
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let reply: StreamRangeReply = self.run(cmd).await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| {
                let payload = entry.get::<Vec<u8>>("w").unwrap_or_default();
                (entry.id, Bytes::from(payload))
            })
            .collect())
    }

    /// Deletes delivered entries.
    pub async fn remove(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(&self.key).arg(ids);
        self.run::<i64>(cmd).await.map(drop)
    }

    /// Whether the log is empty.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        self.len().await.map(|n| n == 0)
    }

    /// Entries in the log.
    pub async fn len(&self) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(&self.key);
        self.run(cmd).await
    }
}
