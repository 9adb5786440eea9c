//! Random missing product ids against the example app, with and without
//! its existence filter: how many database queries 200,000 of them cost.
//!
//! ```sh
//! cargo build --release -p axum-example -p tower-cache-benches
//! target/release/missing_ids            # 200,000 ids, 64 at a time
//! target/release/missing_ids 50000 32   # ids, concurrency
//! ```
//!
//! It starts the `axum-example` binary that sits beside it (same build
//! profile) twice on free ports, once as it runs by default and once with
//! `PRODUCT_FILTER=off`, sends the same ids to `/products/{id}` over TCP
//! (none of them a product: the catalog holds 1..=10,000) and prints the
//! database queries the route made (`origin_queries_total`), the reads
//! the filter answered (`tower_cache_filtered_total`) and the rate.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ROUTE: &str = "/products/{id}";

/// `n` ids past the catalog, spread over 10^12 (xorshift64*, fixed seed,
/// so both runs send the same ids).
fn missing_ids(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            20_000 + x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1_000_000_000_000
        })
        .collect()
}

/// The example app, killed when dropped.
struct App {
    child: Child,
    base: String,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(env: &[(&str, &str)], client: &reqwest::Client) -> App {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe.with_file_name("axum-example");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p axum-example` in the same profile",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&bin)
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("start axum-example");
    let app = App {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{}/health", app.base)).send().await
            && r.status().is_success()
        {
            return app;
        }
        assert!(Instant::now() < deadline, "the app did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the series `series` on `/metrics` (0 when absent).
async fn metric(app: &App, client: &reqwest::Client, series: &str) -> u64 {
    let text = client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Sends every id, `concurrency` at a time; answers the seconds it took.
async fn send_all(
    app: &App,
    client: &reqwest::Client,
    ids: Arc<Vec<u64>>,
    concurrency: usize,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, ids, next, base) =
                (client.clone(), ids.clone(), next.clone(), app.base.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let res = client
                        .get(format!("{base}/products/{id}"))
                        .send()
                        .await
                        .expect("a response");
                    assert_eq!(res.status(), 404, "product {id}");
                    res.bytes().await.expect("a body");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(200_000, |a| a.parse().expect("a number of ids"));
    let concurrency: usize = args
        .next()
        .map_or(64, |a| a.parse().expect("a concurrency"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let ids = Arc::new(missing_ids(n));
    println!("{n} random missing ids, {concurrency} at a time, to {ROUTE}");
    for (label, env) in [
        ("with the filter", &[][..]),
        ("without the filter", &[("PRODUCT_FILTER", "off")][..]),
    ] {
        let app = start(env, &client).await;
        let secs = send_all(&app, &client, ids.clone(), concurrency).await;
        let queries = metric(
            &app,
            &client,
            &format!("origin_queries_total{{route=\"{ROUTE}\"}}"),
        )
        .await;
        let filtered = metric(
            &app,
            &client,
            &format!("tower_cache_filtered_total{{cache=\"{ROUTE}\"}}"),
        )
        .await;
        println!(
            "{label:>20}: {queries:>7} database queries, {filtered:>7} answered by the filter, {:.1} s ({:.0} requests/s)",
            secs,
            n as f64 / secs
        );
    }
}
