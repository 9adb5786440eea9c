//! The durable log that keeps every acknowledged write until the writer has it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tower::BoxError;

use crate::layer::write::Write;

/// What a write-behind worker needs from a durable log, for
/// [durable mode](super::WriteBehindLayer::durable).
///
/// The log holds entries (opaque payloads, one per acknowledged write), each
/// owned by one consumer (one process) until that consumer acknowledges it.
/// A consumer that stops sending [heartbeats](DurableLog::heartbeat) leaves
/// its entries to be [claimed](DurableLog::claim_abandoned) by a live one
/// after [`claim_after_idle`](DurableLog::claim_after_idle), so every acknowledged
/// write reaches a writer at least once, with the ids of the entries it
/// stands for ([`Write::log_ids`]).
///
/// [`RedisQueue`](crate::store::RedisQueue) (a Redis Stream read by a
/// consumer group) is the implementation this crate ships. The methods are
/// called from the worker, off the per-request path, except
/// [`append`](DurableLog::append), called once per write.
pub trait DurableLog: Send + Sync + 'static {
    /// Makes the log ready to be read and appended to (for Redis, creates
    /// the consumer group and the stream). Called when the worker starts;
    /// succeeds when the log is ready already.
    fn open(&self) -> BoxFuture<'_, Result<(), BoxError>>;

    /// Appends `payload` as an entry owned by this consumer and returns its
    /// id. Once it returns `Ok`, the entry must survive a crash of this
    /// process: the write is acknowledged on the strength of it.
    fn append(&self, payload: Bytes) -> BoxFuture<'_, Result<EntryId, BoxError>>;

    /// Up to `count` entries this consumer owns and has not acknowledged
    /// (those a previous run under the same consumer identity left), oldest
    /// first, strictly after `after` (`None`: from the first).
    fn own_pending<'a>(
        &'a self,
        after: Option<&'a EntryId>,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, BoxError>>;

    /// Takes over entries that other consumers have left unacknowledged for
    /// at least [`claim_after_idle`](DurableLog::claim_after_idle), scanning up to
    /// `count` pending entries strictly after `after` (`None`: from the
    /// first). Two consumers never both take an entry.
    fn claim_abandoned<'a>(
        &'a self,
        after: Option<&'a EntryId>,
        count: usize,
    ) -> BoxFuture<'a, Result<Claimed, BoxError>>;

    /// Replaces each group of entries with one new entry holding the
    /// group's payload, owned by this consumer, and returns the new
    /// entries' ids in the order of `groups`. All or nothing: when an entry
    /// of any group is no longer this consumer's (another consumer claimed
    /// it, or it was acknowledged), nothing changes and it fails; once it
    /// returns `Ok`, no entry of a group is ever handed out again.
    ///
    /// The worker calls it before it hands the writer a write that
    /// coalesces several entries, so that the log holds that write as one
    /// entry, never again split or merged otherwise. When it fails (as the
    /// default does), every entry reaches the writer as a write of its own.
    fn replace<'a>(
        &'a self,
        groups: &'a [(Vec<EntryId>, Bytes)],
    ) -> BoxFuture<'a, Result<Vec<EntryId>, BoxError>> {
        let _ = groups;
        Box::pin(async { Err("this durable log does not replace entries".into()) })
    }

    /// Marks entries done (the writer or the dead-letter handler has them):
    /// they are never handed out again.
    fn acknowledge<'a>(&'a self, ids: &'a [EntryId]) -> BoxFuture<'a, Result<(), BoxError>>;

    /// Tells the log this consumer is alive, so that no other consumer
    /// claims its entries. The worker calls it every quarter of
    /// [`claim_after_idle`](DurableLog::claim_after_idle) while it runs.
    fn heartbeat(&self) -> BoxFuture<'_, Result<(), BoxError>>;

    /// How long an entry stays with a silent consumer before another may
    /// claim it. It also paces the worker: it looks for abandoned entries
    /// every half of it, and sends a heartbeat every quarter.
    fn claim_after_idle(&self) -> Duration;
}

/// The id of an entry in a [`DurableLog`], in the log's own format (for a
/// [`RedisQueue`](crate::store::RedisQueue), a Redis Stream id,
/// `<milliseconds>-<sequence>`). It serializes as that string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EntryId(String);

impl EntryId {
    /// An id as the log wrote it.
    pub fn new(id: impl Into<String>) -> Self {
        EntryId(id.into())
    }

    /// The id as the log wrote it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entry read back from a [`DurableLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its id.
    pub id: EntryId,
    /// What [`DurableLog::append`] was given.
    pub payload: Bytes,
}

/// What [`DurableLog::claim_abandoned`] took over, and where its scan goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The entries now owned by this consumer.
    pub entries: Vec<LogEntry>,
    /// Where the next scan starts (strictly after it); `None` when the
    /// scan reached the end of the pending entries.
    pub next: Option<EntryId>,
}

pub(super) type EncodeFn<K, V> = fn(&Write<K, V>) -> Result<Vec<u8>, BoxError>;
pub(super) type DecodeFn<K, V> = fn(&[u8]) -> Result<Write<K, V>, BoxError>;

/// A durable log and how writes are written to it and read back.
pub(super) struct Durable<K, V> {
    pub log: Arc<dyn DurableLog>,
    pub encode: EncodeFn<K, V>,
    pub decode: DecodeFn<K, V>,
}

/// A write as the log holds it: its key and value, and the ids of the
/// writes it stands for when it replaced them (none for a write appended
/// as it was acknowledged: its id is its entry's).
#[derive(serde::Serialize)]
struct Payload<'a, K, V> {
    key: &'a K,
    value: &'a V,
    #[serde(skip_serializing_if = "<[EntryId]>::is_empty")]
    ids: &'a [EntryId],
}

#[derive(serde::Deserialize)]
struct Decoded<K, V> {
    key: K,
    value: V,
    #[serde(default)]
    ids: Vec<EntryId>,
}

impl<K, V> Durable<K, V>
where
    K: serde::Serialize + serde::de::DeserializeOwned,
    V: serde::Serialize + serde::de::DeserializeOwned,
{
    /// `log`, with writes stored as JSON.
    pub fn json(log: Arc<dyn DurableLog>) -> Self {
        Durable {
            log,
            encode: |write| {
                Ok(serde_json::to_vec(&Payload {
                    key: &write.key,
                    value: &write.value,
                    ids: write.log_ids(),
                })?)
            },
            decode: |bytes| {
                let d: Decoded<K, V> = serde_json::from_slice(bytes)?;
                Ok(Write::new(d.key, d.value).with_log_ids(d.ids))
            },
        }
    }
}

impl<K, V> Clone for Durable<K, V> {
    fn clone(&self) -> Self {
        Durable {
            log: self.log.clone(),
            encode: self.encode,
            decode: self.decode,
        }
    }
}
