//! The durable view counter, with the app killed for real (`kill -9`) over
//! and over while clients count views, and restarted over the same SQLite
//! file and the same Redis: the database ends with exactly the views that
//! were acknowledged.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use tower_cache::store::{RedisQueue, RedisStore};
use tower_cache_tests::{PATIENCE, RedisServer, free_port};

/// Concurrent clients; each counts views of products of its own.
const CLIENTS: u64 = 16;
/// Products per client: client `c` counts products `c * RANGE + 1 ..`.
const RANGE: u64 = 600;
/// Views each product gets in a row before the client moves on, so that
/// several land in one batch and are coalesced.
const PER_PRODUCT: u64 = 4;
/// Kills, each followed by a restart.
const ROUNDS: usize = 5;

/// A number in `0..n`, different on every call.
fn random_below(n: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n
}

/// A running app, killed if the test stops before it does.
struct Running(Option<Child>);

impl Running {
    /// `kill -9`, and waits for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the app in durable mode on `db` and `redis`, and waits until it
/// answers.
async fn start(http: &Client, db: &str, redis: &RedisServer) -> (Running, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_axum-example"))
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", db)
        .env("REDIS_URL", redis.url())
        .env("VIEWS_DURABLE", "1")
        // The same consumer every run: a restart delivers what the killed
        // run left at once.
        .env("VIEWS_CONSUMER", "views-test")
        // Many small batches: many moments between a batch's commit and
        // its acknowledgement in the log for a kill to fall into.
        .env("VIEWS_FLUSH_MS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let child = Running(Some(child));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the app did not come up on port {port}");
}

/// What one client saw, per product.
#[derive(Default)]
struct Seen {
    /// Views answered 202.
    acked: HashMap<u64, u64>,
    /// Views sent whose answer never came (or was not 202): they may or
    /// may not have been counted.
    unanswered: HashMap<u64, u64>,
}

/// Client `c` counts views, going on from its `sent`-th, until the app
/// stops answering; returns how many it sent.
async fn count_views(
    http: Client,
    base: String,
    c: u64,
    mut sent: u64,
    seen: &mut Seen,
    acked: Arc<AtomicU64>,
) -> u64 {
    loop {
        let product = c * RANGE + 1 + (sent / PER_PRODUCT) % RANGE;
        sent += 1;
        let answer = http
            .post(format!("{base}/products/{product}/views"))
            .send()
            .await;
        match answer {
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                *seen.acked.entry(product).or_default() += 1;
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => *seen.unanswered.entry(product).or_default() += 1,
            Err(_) => {
                // The app was killed: this one was in flight, or never left.
                *seen.unanswered.entry(product).or_default() += 1;
                return sent;
            }
        }
    }
}

fn views_in(db_file: &Path) -> HashMap<u64, u64> {
    let conn = rusqlite::Connection::open(db_file).unwrap();
    let mut q = conn
        .prepare("SELECT id, views FROM products WHERE id <= ?1")
        .unwrap();
    q.query_map([(CLIENTS * RANGE) as i64], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_view_and_counts_none_twice() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!(
        "tower-cache-durable-views-{}-{:08x}",
        std::process::id(),
        random_below(u64::from(u32::MAX))
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db_file = dir.join("catalog.db");
    let db = format!("sqlite://{}?mode=rwc", db_file.display());
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let mut seen: Vec<Seen> = (0..CLIENTS).map(|_| Seen::default()).collect();
    let mut sent = vec![0u64; CLIENTS as usize];
    for round in 0..ROUNDS {
        let (mut app, base) = start(&http, &db, &redis).await;
        let acked = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = std::mem::take(&mut seen)
            .into_iter()
            .zip(sent.iter().copied())
            .enumerate()
            .map(|(c, (mut seen, from))| {
                let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
                tokio::spawn(async move {
                    let sent = count_views(http, base, c as u64, from, &mut seen, acked).await;
                    (seen, sent)
                })
            })
            .collect();
        // A point chosen at random, once views are flowing.
        let kill_after = 100 + random_below(700);
        let deadline = Instant::now() + PATIENCE;
        while acked.load(Ordering::SeqCst) < kill_after {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} views acknowledged",
                acked.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        app.kill();
        for (c, client) in clients.into_iter().enumerate() {
            let (client_seen, client_sent) = client.await.unwrap();
            seen.push(client_seen);
            sent[c] = client_sent;
        }
    }

    // A last run delivers what the last kill left; once the log is empty
    // everything acknowledged is in the database (killed once more, idle).
    let (mut app, _) = start(&http, &db, &redis).await;
    let l2 = RedisStore::builder(redis.url())
        .prefix("catalog:")
        .build()
        .unwrap();
    let log = RedisQueue::new(&l2, "views");
    let settled = tower_cache_tests::wait_until(Duration::from_secs(120), || async {
        log.len().await.is_ok_and(|n| n == 0) && log.pending().await.is_ok_and(|n| n == 0)
    })
    .await;
    assert!(settled.is_some(), "the durable log was not drained");
    app.kill();

    let views = views_in(&db_file);
    let (mut acked_total, mut unanswered_total, mut applied_unanswered) = (0, 0, 0);
    let mut wrong = Vec::new();
    for (c, client) in seen.iter().enumerate() {
        for n in 0..RANGE {
            let product = c as u64 * RANGE + 1 + n;
            let acked = client.acked.get(&product).copied().unwrap_or(0);
            let unanswered = client.unanswered.get(&product).copied().unwrap_or(0);
            let counted = views.get(&product).copied().unwrap_or(0);
            acked_total += acked;
            unanswered_total += unanswered;
            // Exact where nothing is in doubt; a view whose answer never
            // came may or may not have been counted, never twice.
            if counted < acked || counted > acked + unanswered {
                wrong.push((product, acked, unanswered, counted));
            }
            applied_unanswered += counted.saturating_sub(acked);
        }
    }
    eprintln!(
        "{acked_total} views acknowledged over {ROUNDS} kills, {unanswered_total} unanswered \
         ({applied_unanswered} of them counted)"
    );
    assert!(
        wrong.is_empty(),
        "products whose count is not what was acknowledged (product, acknowledged, unanswered, \
         counted): {wrong:?}"
    );
    assert!(acked_total >= 100 * ROUNDS as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn durable_views_without_redis_fail_at_start_with_a_clear_error() {
    for (value, says) in [
        ("1", "VIEWS_DURABLE=1 needs REDIS_URL"),
        ("yes", "use 1 (durable) or 0"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_axum-example"))
            .env("BIND", format!("127.0.0.1:{}", free_port()))
            .env("VIEWS_DURABLE", value)
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "VIEWS_DURABLE={value} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "VIEWS_DURABLE={value}: {stderr}");
    }
}
