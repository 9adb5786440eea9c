//! Test harness for tower-cache's integration tests.
//!
//! [`RedisServer`] starts a private `redis-server` on a free loopback port
//! (never the standard 6379), in a directory of its own, with no automatic
//! persistence, and kills it when dropped. Each test starts its own, so
//! tests share no state and never touch a Redis on the standard port.
//! [`RedisCluster`] starts a real Redis Cluster of such servers
//! (`--cluster-enabled yes`, joined by `redis-cli --cluster create`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Arguments given to every start after the common ones.
    extra: Vec<String>,
}

/// The standard Redis port, never handed out.
const STANDARD_PORT: u16 = 6379;

/// How long a test waits for something it has set in motion before it
/// fails: generous, so that a loaded machine never fails a test by being
/// slow, only by the awaited thing not happening.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A free loopback port, never the standard Redis one: for a server a
/// test starts.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if port != STANDARD_PORT {
            return port;
        }
    }
}

/// Runs blocking harness work without stalling a Tokio worker: on a
/// multi-threaded runtime the worker hands its other tasks off first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn spawn(port: u16, dir: &Path, extra: &[String]) -> std::io::Result<Child> {
    let log = std::fs::File::create(dir.join("redis.log"))?;
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.to_string_lossy(),
            "--dbfilename",
            "dump.rdb",
            "--enable-debug-command",
            "yes",
            "--protected-mode",
            "no",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// The `process_id` of the server answering on `port`, if one answers.
fn answering_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(200))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

impl RedisServer {
    /// Starts a `redis-server` on a free port and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not on `PATH` (with a message saying so), or
    /// when it does not come up (with its log in the message).
    pub fn start() -> RedisServer {
        Self::start_with(|_| Vec::new())
    }

    /// [`start`](Self::start) with more arguments for `redis-server`
    /// (`["--rename-command", "HELLO", ""]`).
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Self::start_with(move |_| args.clone())
    }

    /// [`start`](Self::start) with more arguments, made from the port
    /// chosen.
    fn start_with(extra: impl Fn(u16) -> Vec<String>) -> RedisServer {
        blocking(|| {
            let mut last_log = String::new();
            for _ in 0..5 {
                let port = free_port();
                let dir = std::env::temp_dir().join(format!(
                    "tower-cache-redis-{}-{port}-{:08x}",
                    std::process::id(),
                    rand_suffix()
                ));
                std::fs::create_dir_all(&dir).expect("create the redis-server directory");
                let mut server = RedisServer {
                    port,
                    dir,
                    child: None,
                    extra: extra(port),
                };
                match server.try_start() {
                    Ok(()) => return server,
                    Err(log) => last_log = log,
                }
            }
            panic!("redis-server did not start on any of 5 free ports; last log:\n{last_log}");
        })
    }

    /// Spawns the server and waits until it answers as itself; `Err` with
    /// its log when it exited or another process answers on the port.
    fn try_start(&mut self) -> Result<(), String> {
        let child = match spawn(self.port, &self.dir, &self.extra) {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`redis-server` was not found on PATH; the integration tests start their own \
                 Redis. Install it (Debian/Ubuntu: `apt-get install redis-server`) or run `.ci/run`."
            ),
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                // Exited: most likely the port was taken in the meantime.
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            match answering_pid(self.port) {
                Some(answering) if answering == pid => return Ok(()),
                Some(other) => {
                    self.stop();
                    return Err(format!(
                        "port {} answered by another redis-server (pid {other}):\n{}",
                        self.port,
                        self.log()
                    ));
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        self.stop();
        Err(format!(
            "did not answer within {} s:\n{}",
            PATIENCE.as_secs(),
            self.log()
        ))
    }

    /// What the server wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes a snapshot of the data (`SAVE`); the next [`restart`]
    /// starts with it instead of empty.
    ///
    /// [`restart`]: RedisServer::restart
    pub fn save(&self) {
        let _: () = redis::cmd("SAVE")
            .query(&mut self.connection())
            .expect("SAVE on the test redis-server");
    }

    /// Starts the server again on the same port: empty, or with the data of
    /// the last [`save`](RedisServer::save).
    ///
    /// # Panics
    /// When it does not come up within [`PATIENCE`] (with its log in the
    /// message).
    pub fn restart(&mut self) {
        blocking(|| {
            self.stop();
            let deadline = Instant::now() + PATIENCE;
            let mut last_log = String::new();
            while Instant::now() < deadline {
                match self.try_start() {
                    Ok(()) => return,
                    Err(log) => last_log = log,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!(
                "redis-server did not restart on port {}; last log:\n{last_log}",
                self.port
            );
        })
    }

    /// Freezes the server (`SIGSTOP`), as a stalled host would: its
    /// connections stay open and nothing answers on them, until
    /// [`resume`](RedisServer::resume).
    ///
    /// # Panics
    /// When the server is not running or the signal cannot be sent.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`paused`](RedisServer::pause) server run again (`SIGCONT`).
    ///
    /// # Panics
    /// When the server is not running or the signal cannot be sent.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running redis-server").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// Zeroes the server's statistics (`CONFIG RESETSTAT`), so that
    /// [`command_calls`] counts from here.
    ///
    /// # Panics
    /// When the server does not answer.
    pub fn reset_stats(&self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut self.connection())
            .expect("CONFIG RESETSTAT");
    }

    /// A blocking redis-rs connection, for inspecting or corrupting state.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("valid URL")
            .get_connection()
            .expect("connect to the test redis-server")
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 5 ms until it returns true or `limit` passes;
/// returns how long it took, or `None` on time-out.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

pub mod origin;

/// How many times `server` ran each of `commands` (lower-case names, as
/// `INFO commandstats` gives them: `get`, `mget`, `evalsha`), in all.
pub fn command_calls(server: &RedisServer, commands: &[&str]) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(':'))
        .filter(|(name, _)| commands.contains(name))
        .filter_map(|(_, stats)| {
            stats
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

mod backend;
mod cluster;
pub use backend::{AnyConnection, Redis, TestRedis};
pub use cluster::RedisCluster;
