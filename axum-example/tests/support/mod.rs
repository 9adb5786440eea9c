//! The example app, started as a real process on a real TCP port: the
//! harness of the tests in this folder.

// Each test file uses its own part of it.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;

/// A running `axum-example` process.
pub struct App {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    env: Vec<(String, String)>,
    /// A client with room for hundreds of connections.
    pub client: Client,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl App {
    pub async fn start(env: &[(&str, &str)]) -> App {
        let mut app = App {
            child: None,
            port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client: Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap(),
        };
        app.spawn().await;
        app
    }

    pub async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_axum-example"))
            .env("BIND", format!("127.0.0.1:{}", self.port))
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(self.url("/health")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the app did not come up on port {}", self.port);
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn stop_gracefully(&mut self) {
        self.stop_with("-TERM").await;
    }

    /// `signal` (as `kill` names it), and wait for a clean exit.
    pub async fn stop_with(&mut self, signal: &str) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(exit.success(), "clean exit: {exit:?}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, String, Value) {
        send(req).await
    }

    /// The text of the page at `path`.
    pub async fn text(&self, path: &str) -> String {
        let res = self.client.get(self.url(path)).send().await.unwrap();
        res.text().await.unwrap()
    }

    /// The value of the `/metrics` line that starts with `series `, or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let prefix = format!("{series} ");
        self.text("/metrics")
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    /// `origin_queries_total` for `route` from `/metrics`.
    pub async fn origin_queries(&self, route: &str) -> u64 {
        let series = format!("origin_queries_total{{route=\"{route}\"}}");
        self.metric(&series).await as u64
    }

    /// `GET path`: `X-Cache`, and `Age` in seconds (none on a miss).
    pub async fn cache_headers(&self, path: &str) -> (String, Option<u64>) {
        let res = self.client.get(self.url(path)).send().await.unwrap();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let age = header("age").map(|a| a.parse().unwrap());
        (header("x-cache").unwrap_or_default(), age)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn stampede(app: &App, path: &str, n: usize) -> Vec<(StatusCode, String, Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(send(app.client.get(app.url(path)))))
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, String, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let x_cache = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, x_cache, res.json().await.unwrap_or(Value::Null))
}

/// Two instances over one SQLite file and one Redis: the file's
/// directory, removed when dropped.
pub struct SharedDb {
    dir: std::path::PathBuf,
    url: String,
}

impl SharedDb {
    /// A fresh SQLite file named after `name` and this process.
    pub fn new(name: &str) -> SharedDb {
        let dir = std::env::temp_dir().join(format!("tower-cache-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("shared.db").display());
        SharedDb { dir, url }
    }

    /// Starts two instances over this file and the Redis at `redis_url`.
    pub async fn two_instances(&self, redis_url: &str) -> (App, App) {
        let env = [
            ("REDIS_URL", redis_url),
            ("DATABASE_URL", self.url.as_str()),
        ];
        (App::start(&env).await, App::start(&env).await)
    }
}

impl Drop for SharedDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
