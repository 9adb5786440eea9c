//! A durable write log on a Redis Stream with a consumer group, for
//! write-behind.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::Value;
use tower::BoxError;

use super::connection::Lua;
use super::{RedisConnection, RedisStore, StoreError};
use crate::layer::write_behind::{Claimed, DurableLog, EntryId, LogEntry};

/// Appends an entry and puts it straight into this consumer's pending list
/// (creating the group if it is missing), in one step: no entry ever sits
/// in the stream without an owner.
const PUSH: &str = r"
local id = redis.call('XADD', KEYS[1], '*', 'w', ARGV[3])
local claimed = redis.pcall('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'FORCE', 'JUSTID')
if type(claimed) == 'table' and claimed.err then
  redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'FORCE', 'JUSTID')
end
return id
";

/// Resets the idle time of this consumer's entries that have been pending
/// for at least ARGV[3] ms, so that no other consumer takes them while this
/// one is alive.
const TOUCH: &str = r"
local start = '-'
local touched = 0
while true do
  local page = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], start, '+', 500, ARGV[2])
  if #page == 0 then break end
  local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
  for _, entry in ipairs(page) do table.insert(claim, entry[1]) end
  table.insert(claim, 'JUSTID')
  redis.call(unpack(claim))
  touched = touched + #page
  start = '(' .. page[#page][1]
end
return touched
";

/// Replaces groups of this consumer's pending entries, each with one new
/// entry of its own: ARGV[3] is the number of groups, then per group the
/// number of its entries, their ids, and the new entry's payload. Checks
/// every entry first and changes nothing unless all are this consumer's;
/// then appends each new entry into this consumer's pending list and
/// acknowledges and deletes the group's entries. Returns the new ids.
const REPLACE: &str = r"
local groups = {}
local at = 4
for g = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[at])
  local ids = {}
  for i = 1, n do
    local id = ARGV[at + i]
    local entry = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    if #entry == 0 or entry[1][2] ~= ARGV[2] then
      return redis.error_reply('NOTOWNED entry ' .. id .. ' is not pending for this consumer')
    end
    ids[i] = id
  end
  groups[g] = {ids, ARGV[at + n + 1]}
  at = at + n + 2
end
local replaced = {}
for g, group in ipairs(groups) do
  local id = redis.call('XADD', KEYS[1], '*', 'w', group[2])
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'FORCE', 'JUSTID')
  local ids = group[1]
  for from = 1, #ids, 500 do
    local chunk = {unpack(ids, from, math.min(from + 499, #ids))}
    redis.call('XACK', KEYS[1], ARGV[1], unpack(chunk))
    redis.call('XDEL', KEYS[1], unpack(chunk))
  end
  replaced[g] = id
end
return replaced
";

/// A write-ahead log on one Redis Stream, read through a consumer group.
///
/// Each write-behind process is one consumer of the group. A write is
/// appended (`XADD`) and put in this consumer's pending list (`XCLAIM …
/// FORCE`) before it is acknowledged; once the writer has it, the entry is
/// acknowledged (`XACK`) and deleted (`XDEL`). What a process leaves
/// pending when it dies is taken over by a live one:
///
/// - at start, a consumer first reads its own pending entries
///   (`XREADGROUP … 0`): a process restarted under the same
///   [`consumer`](RedisQueue::consumer) name delivers them at once;
/// - at start and then periodically, it claims the entries of other
///   consumers that have been idle for
///   [`claim_after`](RedisQueue::claim_after) (`XPENDING` + `XCLAIM`);
/// - while alive, it keeps its own pending entries fresh, so that they are
///   not claimed from under it.
///
/// Several processes may share one queue (give them the same name and
/// distinct consumer names). Delivery is at least once: a crash between
/// the writer's success and the `XACK` delivers those writes again, and a
/// consumer cut off from Redis for longer than `claim_after` may see its
/// writes delivered by another as well. Each delivered write carries the
/// stream ids of the writes it stands for
/// ([`Write::log_ids`](crate::Write::log_ids)), the same on every delivery,
/// so a writer that records them applies each write exactly once (see
/// [`WriteBehindLayer::durable`](crate::WriteBehindLayer::durable)). A
/// write coalescing several entries is first appended as one entry in
/// their place (a script checks that they are all still this consumer's,
/// appends it and deletes them), so that it is never delivered split
/// differently.
///
/// The log is one key, so that every command and script on it touches one
/// slot: on a Redis Cluster ([`RedisStore::cluster`]) it lives on the
/// master of that slot and follows it through a failover. A write is
/// acknowledged once that master has it; as with a single Redis, one the
/// master had not yet passed to its replica when it died is lost with it
/// (Redis replicates asynchronously).
///
/// Used through [`WriteBehindLayer::durable`](crate::WriteBehindLayer::durable),
/// as its [`DurableLog`].
#[derive(Clone)]
pub struct RedisQueue {
    conn: RedisConnection,
    key: String,
    group: String,
    consumer: String,
    op_timeout: Duration,
    claim_after: Duration,
    push: Arc<Lua>,
    touch: Arc<Lua>,
    replace: Arc<Lua>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("key", &self.key)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("claim_after", &self.claim_after)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Default consumer group: `tower-cache`.
    pub const DEFAULT_GROUP: &'static str = "tower-cache";

    /// Default idle time after which a dead consumer's entries are claimed
    /// by another: 30 s.
    pub const DEFAULT_CLAIM_AFTER: Duration = Duration::from_secs(30);

    /// The log named `name`, a stream stored under `{prefix}q:{name}` on
    /// `store`'s Redis (with its connection and timeout), read by the group
    /// [`DEFAULT_GROUP`](RedisQueue::DEFAULT_GROUP) as a consumer of its own (by default a name unique
    /// to this process, see [`consumer`](RedisQueue::consumer)).
    #[must_use]
    pub fn new(store: &RedisStore, name: &str) -> Self {
        RedisQueue {
            conn: store.connection(),
            key: format!("{}q:{}", store.prefix(), name),
            group: Self::DEFAULT_GROUP.to_owned(),
            consumer: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            op_timeout: store.op_timeout(),
            claim_after: Self::DEFAULT_CLAIM_AFTER,
            push: Arc::new(Lua::new(PUSH)),
            touch: Arc::new(Lua::new(TOUCH)),
            replace: Arc::new(Lua::new(REPLACE)),
        }
    }

    /// This process's consumer name in the group. Give a name that
    /// survives restarts (a pod or host name) and is never used by two live
    /// processes at once: a restarted process then delivers what it left
    /// pending as soon as it starts, instead of after `claim_after`.
    /// Default: the process id and a random suffix.
    #[must_use]
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }

    /// The consumer group. Default: [`DEFAULT_GROUP`](RedisQueue::DEFAULT_GROUP) (`tower-cache`).
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// How long another consumer's entries must have been idle before this
    /// one claims them; also sets how often the queue looks for such entries
    /// (half of it) and keeps its own fresh (a quarter of it). Keep it well
    /// above Redis's worst pause. Default: [`DEFAULT_CLAIM_AFTER`](RedisQueue::DEFAULT_CLAIM_AFTER) (30 s).
    #[must_use]
    pub fn claim_after(mut self, idle: Duration) -> Self {
        self.claim_after = idle.max(Duration::from_millis(4));
        self
    }

    /// The Redis key of the stream.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This process's consumer name.
    #[must_use]
    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// The idle time after which entries are claimed from another consumer.
    #[must_use]
    pub fn claim_after_idle(&self) -> Duration {
        self.claim_after
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Backend(Box::new(e))),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.timed(cmd.query_async::<T>(&mut conn)).await
    }

    /// Creates the group (and the stream) if they do not exist yet.
    async fn create_group(&self) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.key)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM");
        match self.run::<()>(cmd).await {
            Err(StoreError::Backend(e)) if e.to_string().contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Appends `payload` into this consumer's pending list; returns its
    /// entry id.
    async fn push(&self, payload: Bytes) -> Result<EntryId, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.push.key(&self.key);
        invocation
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(payload.as_ref());
        self.timed(invocation.invoke::<String>(&mut conn))
            .await
            .map(EntryId::new)
    }

    /// Up to `count` of this consumer's own pending entries after `after`
    /// (`None` for the start), oldest first.
    async fn own_pending(
        &self,
        after: Option<&EntryId>,
        count: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(after.map_or("0", EntryId::as_str));
        let reply: Value = self.run(cmd).await?;
        // [[key, [[id, [field, value]] | [id, nil], ...]]]
        let entries = match reply {
            Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                Value::Array(mut pair) if pair.len() == 2 => pair.swap_remove(1),
                _ => Value::Nil,
            },
            _ => Value::Nil,
        };
        Ok(parse_entries(entries))
    }

    /// Claims up to `count` entries that other consumers have left idle for
    /// at least [`claim_after`](RedisQueue::claim_after), after `after`
    /// (`None` for the start). Returns the claimed entries and where to
    /// continue (`None` when the pending list was read to its end).
    async fn claim_abandoned(
        &self,
        after: Option<&EntryId>,
        count: usize,
    ) -> Result<Claimed, StoreError> {
        let idle = self.claim_after.as_millis().to_string();
        let start = match after {
            Some(id) => format!("({id}"),
            None => "-".to_owned(),
        };
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.key)
            .arg(&self.group)
            .arg("IDLE")
            .arg(&idle)
            .arg(start)
            .arg("+")
            .arg(count);
        // [[id, consumer, idle, deliveries], ...]
        let page: Vec<(String, String, u64, u64)> = self.run(cmd).await?;
        let next = match page.last() {
            Some((last, ..)) if page.len() >= count => Some(EntryId::new(last.clone())),
            _ => None,
        };
        let ids: Vec<&String> = page
            .iter()
            .filter(|(_, consumer, ..)| *consumer != self.consumer)
            .map(|(id, ..)| id)
            .collect();
        if ids.is_empty() {
            return Ok(Claimed {
                entries: Vec::new(),
                next,
            });
        }
        // XCLAIM checks the idle time again, so two consumers never both
        // take an entry.
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(&idle)
            .arg(ids);
        let reply: Value = self.run(cmd).await?;
        Ok(Claimed {
            entries: parse_entries(reply),
            next,
        })
    }

    /// Marks delivered entries done: acknowledged in the group and deleted
    /// from the stream, in one transaction.
    async fn ack(&self, ids: &[EntryId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ids.iter().map(EntryId::as_str).collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(&self.key)
            .arg(&self.group)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.key)
            .arg(&ids)
            .ignore();
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// Replaces each group of this consumer's pending entries with one new
    /// entry holding the group's payload, in one script; returns the new
    /// ids. Fails, changing nothing, unless every entry is this consumer's.
    async fn replace_groups(
        &self,
        groups: &[(Vec<EntryId>, Bytes)],
    ) -> Result<Vec<EntryId>, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.replace.key(&self.key);
        invocation
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(groups.len());
        for (ids, payload) in groups {
            invocation.arg(ids.len());
            for id in ids {
                invocation.arg(id.as_str());
            }
            invocation.arg(payload.as_ref());
        }
        let ids: Vec<String> = self.timed(invocation.invoke(&mut conn)).await?;
        Ok(ids.into_iter().map(EntryId::new).collect())
    }

    /// Resets the idle time of this consumer's entries pending for a
    /// quarter of `claim_after` or more; returns how many.
    async fn touch(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.touch.key(&self.key);
        invocation
            .arg(&self.group)
            .arg(&self.consumer)
            .arg((self.claim_after / 4).as_millis().to_string());
        self.timed(invocation.invoke::<u64>(&mut conn)).await
    }

    /// Entries in the stream: appended and not yet delivered.
    ///
    /// # Errors
    ///
    /// [`StoreError::Timeout`] when Redis does not answer within the
    /// operation timeout, [`StoreError::Unavailable`] when it cannot be
    /// reached, [`StoreError::Backend`] when it answers with an error.
    pub async fn len(&self) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(&self.key);
        self.run(cmd).await
    }

    /// Whether the stream is empty.
    ///
    /// # Errors
    ///
    /// [`StoreError::Timeout`] when Redis does not answer within the
    /// operation timeout, [`StoreError::Unavailable`] when it cannot be
    /// reached, [`StoreError::Backend`] when it answers with an error.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        self.len().await.map(|n| n == 0)
    }

    /// The id of the oldest entry in the stream (`XRANGE - + COUNT 1`), or
    /// `None` when the stream is empty. Ids grow with time, and an entry
    /// leaves the stream only once it is acknowledged, so every entry with
    /// a smaller id is done: a writer that records applied ids can use it
    /// to forget old ones (with a margin: an entry that replaced others
    /// carries their ids, older than its own).
    ///
    /// # Errors
    ///
    /// [`StoreError::Timeout`] when Redis does not answer within the
    /// operation timeout, [`StoreError::Unavailable`] when it cannot be
    /// reached, [`StoreError::Backend`] when it answers with an error.
    pub async fn oldest(&self) -> Result<Option<EntryId>, StoreError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.key).arg("-").arg("+").arg("COUNT").arg(1);
        // [[id, [field, value, …]]]
        let reply: Vec<(String, Value)> = self.run(cmd).await?;
        Ok(reply.into_iter().next().map(|(id, _)| EntryId::new(id)))
    }

    /// Entries pending in the group, across every consumer: taken by a
    /// consumer and not yet acknowledged (`XPENDING` summary). Zero when the
    /// group does not exist yet.
    ///
    /// # Errors
    ///
    /// [`StoreError::Timeout`] when Redis does not answer within the
    /// operation timeout, [`StoreError::Unavailable`] when it cannot be
    /// reached, [`StoreError::Backend`] when it answers with an error.
    pub async fn pending(&self) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.key).arg(&self.group);
        match self.run::<Value>(cmd).await {
            Ok(Value::Array(summary)) => match summary.first() {
                Some(Value::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
                _ => Ok(0),
            },
            Ok(_) => Ok(0),
            Err(StoreError::Backend(e)) if e.to_string().contains("NOGROUP") => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl DurableLog for RedisQueue {
    /// Creates the consumer group (and the stream) if they do not exist.
    fn open(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { Ok(self.create_group().await?) })
    }

    /// `XADD`, then `XCLAIM … FORCE` into this consumer's pending list, in
    /// one script (creating the group if it is missing).
    fn append(&self, payload: Bytes) -> BoxFuture<'_, Result<EntryId, BoxError>> {
        Box::pin(async move { Ok(self.push(payload).await?) })
    }

    /// `XREADGROUP … <after>` as this consumer: its pending entries.
    fn own_pending<'a>(
        &'a self,
        after: Option<&'a EntryId>,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, BoxError>> {
        Box::pin(async move { Ok(RedisQueue::own_pending(self, after, count).await?) })
    }

    /// `XPENDING … IDLE <claim_after>`, then `XCLAIM` of what other
    /// consumers hold (which checks the idle time again).
    fn claim_abandoned<'a>(
        &'a self,
        after: Option<&'a EntryId>,
        count: usize,
    ) -> BoxFuture<'a, Result<Claimed, BoxError>> {
        Box::pin(async move { Ok(RedisQueue::claim_abandoned(self, after, count).await?) })
    }

    /// One script: checks that every entry is this consumer's (`XPENDING`),
    /// then per group `XADD`s the new entry, `XCLAIM … FORCE`s it into this
    /// consumer's pending list, and `XACK`s and `XDEL`s the group's entries.
    fn replace<'a>(
        &'a self,
        groups: &'a [(Vec<EntryId>, Bytes)],
    ) -> BoxFuture<'a, Result<Vec<EntryId>, BoxError>> {
        Box::pin(async move { Ok(self.replace_groups(groups).await?) })
    }

    /// `XACK` and `XDEL`, in one transaction.
    fn acknowledge<'a>(&'a self, ids: &'a [EntryId]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { Ok(self.ack(ids).await?) })
    }

    /// Resets the idle time of this consumer's entries pending for a
    /// quarter of `claim_after` or more.
    fn heartbeat(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { Ok(self.touch().await.map(drop)?) })
    }

    /// [`claim_after`](RedisQueue::claim_after).
    fn claim_after_idle(&self) -> Duration {
        self.claim_after
    }
}

/// `[[id, [field, value, …]], …]` into entries; an entry whose message was
/// deleted (`[id, nil]`, or `nil`) is skipped.
fn parse_entries(value: Value) -> Vec<LogEntry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = match pair.pop()? {
                Value::BulkString(id) => String::from_utf8(id).ok()?,
                Value::SimpleString(id) => id,
                _ => return None,
            };
            let Value::Array(fields) = fields else {
                return None;
            };
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if let (Value::BulkString(name), Value::BulkString(value)) = (name, value)
                    && name == b"w"
                {
                    return Some(LogEntry {
                        id: EntryId::new(id),
                        payload: Bytes::from(value),
                    });
                }
            }
            None
        })
        .collect()
}
