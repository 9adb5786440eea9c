//! One hot key on a Redis Cluster, read with and without hot-key
//! replicas: the rate reached and the Redis time each master spent.
//!
//! ```sh
//! bash benches/load/hot_key.sh            # starts a 3-master cluster, runs both
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002 \
//!   target/release/hot_key 5 64 3         # seconds, concurrency, replicas
//! ```
//!
//! The URLs must name every master (the statistics are read from each).
//! After a warm-up (long enough for the key to become hot), it resets
//! every master's statistics, reads one key from `concurrency` tasks for
//! `seconds`, and prints the reads a second the client reached and, per
//! master, the commands it ran and the CPU time its process used (`INFO
//! cpu`, network included). The busiest master's CPU time per read bounds
//! the key's rate: one Redis core serves at most 1 s / that many reads a
//! second, which is the figure to compare (two cores here run the client
//! and every master, so the rate reached is the client's).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tower_cache::Entry;
use tower_cache::store::{RedisStore, Store};

const KEY: &str = "products/1";

/// A master's CPU time so far, in microseconds (`used_cpu_sys` +
/// `used_cpu_user`).
fn cpu_us(url: &str) -> f64 {
    let client = redis::Client::open(url).expect("a valid URL");
    let mut conn = client.get_connection().expect("a master");
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query(&mut conn)
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum::<f64>()
        * 1e6
}

/// A master's `cmdstat_` lines: (calls, usec) summed over commands.
fn commandstats(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).expect("a valid URL");
    let mut conn = client.get_connection().expect("a master");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("INFO");
    let field = |stats: &str, name: &str| -> u64 {
        stats
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.parse().ok())
            .unwrap_or(0)
    };
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(':'))
        .fold((0, 0), |(calls, usec), (_, stats)| {
            (calls + field(stats, "calls="), usec + field(stats, "usec="))
        })
}

fn reset(url: &str) {
    let client = redis::Client::open(url).expect("a valid URL");
    let mut conn = client.get_connection().expect("a master");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .expect("CONFIG RESETSTAT");
}

async fn read_for(store: &RedisStore, concurrency: usize, time: Duration) -> u64 {
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (store, reads, stop) = (store.clone(), reads.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let hit = store.get(KEY).await.expect("a read");
                    assert!(hit.is_some(), "the hot key is there");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a reader");
    }
    reads.load(Ordering::Relaxed)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let replicas: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let urls: Vec<String> = std::env::var("REDIS_CLUSTER_URLS")
        .expect("REDIS_CLUSTER_URLS: the masters' URLs, comma-separated")
        .split(',')
        .map(str::to_owned)
        .collect();
    let store = RedisStore::cluster_builder(urls.clone())
        .hot_key_replicas(replicas)
        .build()
        .expect("a cluster store");
    let value = Bytes::from(vec![b'x'; 1024]);
    store
        .put(KEY, Entry::new(value).with_ttl(Duration::from_secs(600)))
        .await
        .expect("the key written");
    // Long enough for a counting window to end and the copies to fill.
    read_for(&store, concurrency, Duration::from_secs(3)).await;
    for url in &urls {
        reset(url);
    }
    let cpu_before: Vec<f64> = urls.iter().map(|u| cpu_us(u)).collect();
    let start = Instant::now();
    let reads = read_for(&store, concurrency, Duration::from_secs(seconds)).await;
    let took = start.elapsed().as_secs_f64();
    println!(
        "replicas {replicas}: {reads} reads in {took:.1} s, {:.0} reads/s (client-bound here); read from copies: {:?}",
        reads as f64 / took,
        store.replicated_keys()
    );
    let mut busiest = 0.0_f64;
    for (url, before) in urls.iter().zip(cpu_before) {
        let (calls, usec) = commandstats(url);
        let cpu = cpu_us(url) - before;
        let per_read = cpu / reads.max(1) as f64;
        busiest = busiest.max(per_read);
        println!(
            "  {url}: {calls} commands ({usec} us in commands), {:.0} ms of CPU, {per_read:.2} us of CPU per read",
            cpu / 1e3
        );
    }
    println!(
        "  busiest master {busiest:.2} us of CPU per read: at most {:.0} reads/s of this key before one master's core is full",
        1e6 / busiest.max(f64::EPSILON)
    );
}
