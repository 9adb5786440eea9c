//! The one connection type every Redis command of the store goes through: a single node or a Redis Cluster, and the scripts run on either.

use futures_util::future::{join_all, try_join_all};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, ServerErrorKind, Value};

/// A handle on the store's connection: one multiplexed connection to a
/// single Redis ([`ConnectionManager`]), or redis-rs's async cluster
/// client ([`ClusterConnection`]), which routes each command to the master
/// of its key's slot and follows `MOVED`/`ASK` redirects and failovers.
///
/// Cheap to clone; every clone shares the same connection. It implements
/// redis-rs's [`ConnectionLike`], so any command or pipeline runs on it;
/// on a cluster, a pipeline's commands must all be in one slot.
#[derive(Clone)]
pub enum RedisConnection {
    /// A single Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConnection::Single(_) => "RedisConnection::Single",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConnection {
    /// Whether this is a cluster connection.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }

    /// Runs `steps` and replies one value per step, in order. On a single
    /// node they go in one pipeline (one round trip, run in order), and so
    /// they do on a cluster when they are all in one slot
    /// ([`Spread::OneSlot`]); otherwise each goes to its own slot's node,
    /// all at once ([`Spread::AtOnce`]). The first error fails the whole. A script the
    /// node does not know (`NOSCRIPT`)
    /// is sent again in full (`EVAL`) to the same node, so a promoted
    /// replica or a restarted node learns it where it is needed, without a
    /// `SCRIPT LOAD` that would have to reach every master.
    pub(super) async fn run(
        &mut self,
        calls: &[Step<'_>],
        spread: Spread,
    ) -> RedisResult<Vec<Value>> {
        match (self, spread) {
            (RedisConnection::Single(c), _) => pipelined(c, calls).await,
            (RedisConnection::Cluster(c), Spread::OneSlot) => pipelined(c, calls).await,
            (RedisConnection::Cluster(c), Spread::AtOnce) => {
                try_join_all(calls.iter().map(|call| {
                    let mut c = c.clone();
                    async move { call.invoke(&mut c).await }
                }))
                .await
            }
        }
    }
}

impl RedisConnection {
    /// Runs `first`, then `after` (single-key commands), and replies
    /// `first`'s value and one result per command of `after`: a command
    /// that fails (a key of another type) fails alone. On a single node
    /// they go in one pipeline (one round trip, run in order); on a
    /// cluster `after` is sent once `first` has answered, all at once.
    /// `first` is sent again in full (`EVAL`) on `NOSCRIPT`, as in
    /// [`run`](Self::run).
    pub(super) async fn run_then(
        &mut self,
        first: &LuaCall<'_>,
        after: &[Cmd],
    ) -> RedisResult<(Value, Vec<RedisResult<Value>>)> {
        match self {
            RedisConnection::Single(c) => {
                let pipe = |full: bool| {
                    let mut pipe = redis::pipe();
                    pipe.add_command(first.cmd(full));
                    for cmd in after {
                        pipe.add_command(cmd.clone());
                    }
                    pipe.ignore_errors();
                    pipe
                };
                let mut replies: Vec<RedisResult<Value>> = pipe(false).query_async(c).await?;
                if matches!(replies.first(), Some(Err(e)) if is_noscript(e)) {
                    replies = pipe(true).query_async(c).await?;
                }
                let mut replies = replies.into_iter();
                let head = replies.next().unwrap_or(Ok(Value::Nil))?;
                Ok((head, replies.collect()))
            }
            RedisConnection::Cluster(c) => {
                let head = first.invoke(c).await?;
                let rest = join_all(after.iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<Value>(&mut c).await }
                }))
                .await;
                Ok((head, rest))
            }
        }
    }
}

/// One command of [`RedisConnection::run`]: a plain one or a script.
#[derive(Debug)]
pub(super) enum Step<'a> {
    /// A command of Redis's own.
    Plain(Cmd),
    /// A call of one of the store's scripts.
    Script(LuaCall<'a>),
}

impl Step<'_> {
    /// The command to send (for a script, `EVAL` with its text when `full`,
    /// else `EVALSHA`).
    fn cmd(&self, full: bool) -> Cmd {
        match self {
            Step::Plain(cmd) => cmd.clone(),
            Step::Script(call) => call.cmd(full),
        }
    }

    async fn invoke(&self, c: &mut (impl ConnectionLike + Send)) -> RedisResult<Value> {
        match self {
            Step::Plain(cmd) => cmd.query_async(c).await,
            Step::Script(call) => call.invoke(c).await,
        }
    }
}

impl<'a> From<LuaCall<'a>> for Step<'a> {
    fn from(call: LuaCall<'a>) -> Self {
        Step::Script(call)
    }
}

impl From<Cmd> for Step<'_> {
    fn from(cmd: Cmd) -> Self {
        Step::Plain(cmd)
    }
}

/// Where the steps given to [`RedisConnection::run`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spread {
    /// All in one slot.
    OneSlot,
    /// In several slots, in any order.
    AtOnce,
}

/// `calls` in one pipeline, `EVALSHA` first and, on `NOSCRIPT`, again
/// with `EVAL` (a script that ran twice does no harm: each is idempotent or, for an invalidation, only moves a version further).
async fn pipelined(
    c: &mut (impl ConnectionLike + Send),
    calls: &[Step<'_>],
) -> RedisResult<Vec<Value>> {
    let pipe = |full: bool| {
        let mut pipe = redis::pipe();
        for call in calls {
            pipe.add_command(call.cmd(full));
        }
        pipe
    };
    match pipe(false).query_async(c).await {
        Err(e) if is_noscript(&e) => pipe(true).query_async(c).await,
        other => other,
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript)
}

/// A Lua script the store runs, by its SHA-1 (`EVALSHA`) first.
#[derive(Debug)]
pub(super) struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    pub(super) fn new(code: &'static str) -> Self {
        Lua {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// A call of this script with `key` as its first key (the one that
    /// routes it on a cluster; every other key must share its slot).
    pub(super) fn key(&self, key: impl redis::ToRedisArgs) -> LuaCall<'_> {
        let mut call = LuaCall {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        };
        call.key(key);
        call
    }
}

/// One call of a [`Lua`] script: its keys (all in one slot) and arguments.
#[derive(Debug)]
pub(super) struct LuaCall<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl LuaCall<'_> {
    pub(super) fn key(&mut self, key: impl redis::ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub(super) fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// `EVALSHA`, or `EVAL` with the script's text when `full`.
    fn cmd(&self, full: bool) -> Cmd {
        let mut cmd = if full {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(self.lua.code);
            cmd
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&self.lua.hash);
            cmd
        };
        cmd.arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(key.as_slice());
        }
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }

    /// Runs the call: `EVALSHA`, then `EVAL` on `NOSCRIPT`, both routed by
    /// the first key (so to the same node on a cluster).
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        c: &mut (impl ConnectionLike + Send),
    ) -> RedisResult<T> {
        match self.cmd(false).query_async(c).await {
            Err(e) if is_noscript(&e) => self.cmd(true).query_async(c).await,
            other => other,
        }
    }
}
