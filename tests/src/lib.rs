//! Test harness for tower-cache's integration tests.
//!
//! [`RedisServer`] starts a private `redis-server` on a free loopback port,
//! with no persistence, and kills it when dropped. Each test starts its own,
//! so tests share no state and never touch a Redis on the standard port.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn spawn(port: u16) -> std::io::Result<Child> {
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
            &std::env::temp_dir().to_string_lossy(),
            "--enable-debug-command",
            "yes",
            "--protected-mode",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl RedisServer {
    /// Starts a `redis-server` on a free port and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not on `PATH` (with a message saying so), or
    /// when it does not come up within 10 s.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer { port, child: None };
            if server.try_start() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn try_start(&mut self) -> bool {
        let child = match spawn(self.port) {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`redis-server` was not found on PATH; the integration tests start their own \
                 Redis. Install it (Debian/Ubuntu: `apt-get install redis-server`) or run `.ci/run`."
            ),
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if answers_ping(self.port) {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false; // exited: port taken in the meantime
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
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

    /// Starts the server again on the same port, empty.
    ///
    /// # Panics
    /// When it does not come up within 10 s.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_start() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// A blocking redis-rs connection, for inspecting or corrupting state.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("valid URL")
            .get_connection()
            .expect("connect to the test redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
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
