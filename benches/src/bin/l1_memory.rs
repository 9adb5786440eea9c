//! Resident memory of the L1.
//!
//! With no argument: resident memory after 1,000,000 distinct 1 KiB
//! entries, against the L1's configured byte capacity. `L1_MAX_BYTES`
//! (default 256 MiB), `ENTRIES` (default 1,000,000).
//!
//! `l1_memory per-entry [VARIANT...]`: resident bytes per 1 KiB entry,
//! each variant in a child process of its own (this binary run again), so
//! that no allocator state carries over from one to the next. `ENTRIES`
//! (default 200,000) distinct entries, keys like `key:00000042`, under a
//! capacity large enough that nothing is evicted. The variants (default
//! `moka store`):
//!
//! - `moka`: a plain `moka::future::Cache<String, Bytes>` bounded in bytes
//!   as a user would write it (weigher = key + value length,
//!   `time_to_live(1 h)`);
//! - `store`: `MemoryStore` through the `Store` trait;
//! - `moka` followed by `+`-joined changes, each one step towards what
//!   `MemoryStore` configures: `arc` (`Arc<str>` keys), `entry` (an
//!   `Entry` and its expiry instant as the value), `expire` (`expire_after`
//!   instead of `time_to_live`), `inval` (`support_invalidation_closures`),
//!   `listener` (an eviction listener that counts), `lru` (LRU instead of
//!   `TinyLFU`); for example `moka+entry+expire`.
//!
//! Prints one line per variant and, for each, its ratio to the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::{EvictionPolicy, Expiry};
use tower_cache::Entry;
use tower_cache::store::{MemoryStore, Store};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(i: u64) -> String {
    format!("key:{i:08}")
}

fn value(i: u64) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; 1024])
}

const TTL: Duration = Duration::from_secs(3600);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None => budget().await,
        Some("per-entry") => per_entry(&args[2..]),
        Some("child") => child(&args[2]).await,
        Some(other) => {
            eprintln!("usage: l1_memory [per-entry [VARIANT...]] (unknown argument {other:?})");
            std::process::exit(2);
        }
    }
}

/// Resident memory after `ENTRIES` writes into an L1 of `L1_MAX_BYTES`.
async fn budget() {
    let max = env_u64("L1_MAX_BYTES", 256 * 1024 * 1024);
    let entries = env_u64("ENTRIES", 1_000_000);
    let before = rss_bytes();
    let store = MemoryStore::builder().max_bytes(max).lru().build();
    for i in 0..entries {
        let entry = Entry::new(value(i)).with_ttl(TTL);
        let _ = store.put(&key(i), entry).await;
    }
    let stats = store.stats().await;
    let after = rss_bytes();
    let resident = after.saturating_sub(before);
    println!(
        "l1_memory max_bytes={max} entries_written={entries} entries_held={} weighted_bytes={} evictions={} rss_delta={resident} ratio={:.3}",
        stats.entries,
        stats.bytes,
        stats.evictions,
        resident as f64 / max as f64
    );
}

/// Runs each variant in a child process and compares their bytes per entry.
fn per_entry(variants: &[String]) {
    let defaults = ["moka".to_owned(), "store".to_owned()];
    let variants = if variants.is_empty() {
        &defaults[..]
    } else {
        variants
    };
    let exe = std::env::current_exe().expect("own path");
    let mut first: Option<f64> = None;
    for variant in variants {
        let out = std::process::Command::new(&exe)
            .args(["child", variant])
            .output()
            .expect("run child");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let per_entry: f64 = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("bytes_per_entry="))
            .and_then(|v| v.parse().ok())
            .expect("child reports bytes_per_entry");
        let base = *first.get_or_insert(per_entry);
        println!("{line} ratio_to_{}={:.3}", variants[0], per_entry / base);
    }
}

/// Fills one variant and prints its resident bytes per entry.
async fn child(variant: &str) {
    let entries = env_u64("ENTRIES", 200_000);
    // Room for every entry with its bookkeeping weight: nothing is evicted,
    // and the weighted size stays below half the capacity, where moka would
    // start its frequency sketch.
    let capacity = entries * 8 * 1024;
    let before = rss_bytes();
    let (held, after) = if variant == "store" {
        let store = MemoryStore::builder().max_bytes(capacity).build();
        for i in 0..entries {
            let entry = Entry::new(value(i)).with_ttl(TTL);
            store.put(&key(i), entry).await.expect("put");
        }
        (store.stats().await.entries, rss_bytes())
    } else if let Some(changes) = variant.strip_prefix("moka") {
        let changes: Vec<&str> = changes.split('+').filter(|c| !c.is_empty()).collect();
        let has = |c: &str| changes.contains(&c);
        match (has("arc"), has("entry")) {
            (false, false) => fill::<String, Bytes>(&has, entries, capacity).await,
            (true, false) => fill::<Arc<str>, Bytes>(&has, entries, capacity).await,
            (false, true) => fill::<String, Slot>(&has, entries, capacity).await,
            (true, true) => fill::<Arc<str>, Slot>(&has, entries, capacity).await,
        }
    } else {
        eprintln!("unknown variant {variant:?}");
        std::process::exit(2);
    };
    assert_eq!(held, entries, "{variant}: nothing may be evicted");
    let resident = after.saturating_sub(before);
    println!(
        "l1_memory_per_entry variant={variant} entries={entries} rss_delta={resident} bytes_per_entry={:.0}",
        resident as f64 / entries as f64
    );
}

/// What `MemoryStore` keeps as its value: the entry and when it leaves.
#[derive(Clone)]
struct Slot {
    entry: Entry,
    #[expect(dead_code, reason = "present for its size only")]
    evict_at: u64,
}

trait Key: std::hash::Hash + Eq + Send + Sync + 'static {
    fn make(s: String) -> Self;
    fn weight(&self) -> usize;
}

impl Key for String {
    fn make(s: String) -> Self {
        s
    }
    fn weight(&self) -> usize {
        str::len(self)
    }
}

impl Key for Arc<str> {
    fn make(s: String) -> Self {
        Arc::from(s)
    }
    fn weight(&self) -> usize {
        str::len(self)
    }
}

trait Value: Clone + Send + Sync + 'static {
    fn make(i: u64) -> Self;
    fn weight(&self) -> usize;
}

impl Value for Bytes {
    fn make(i: u64) -> Self {
        value(i)
    }
    fn weight(&self) -> usize {
        self.len()
    }
}

impl Value for Slot {
    fn make(i: u64) -> Self {
        let entry = Entry::new(value(i)).with_ttl(TTL);
        Slot {
            evict_at: entry.stale_until(),
            entry,
        }
    }
    fn weight(&self) -> usize {
        self.entry.weight()
    }
}

struct OneHour;

impl<K, V> Expiry<K, V> for OneHour {
    fn expire_after_create(&self, _: &K, _: &V, _: Instant) -> Option<Duration> {
        Some(TTL)
    }
}

/// Fills a moka cache configured as `has` says; returns the entries held
/// and the resident memory with them.
async fn fill<K: Key, V: Value>(
    has: &dyn Fn(&str) -> bool,
    entries: u64,
    capacity: u64,
) -> (u64, u64) {
    let mut builder = Cache::builder()
        .max_capacity(capacity)
        .weigher(|k: &K, v: &V| u32::try_from(k.weight() + v.weight()).unwrap_or(u32::MAX));
    builder = if has("expire") {
        builder.expire_after(OneHour)
    } else {
        builder.time_to_live(TTL)
    };
    if has("inval") {
        builder = builder.support_invalidation_closures();
    }
    if has("listener") {
        let evictions = Arc::new(AtomicU64::new(0));
        builder = builder.eviction_listener(move |_, _, cause| {
            if cause == RemovalCause::Size {
                evictions.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    if has("lru") {
        builder = builder.eviction_policy(EvictionPolicy::lru());
    }
    let cache: Cache<K, V> = builder.build();
    for i in 0..entries {
        cache.insert(K::make(key(i)), V::make(i)).await;
    }
    cache.run_pending_tasks().await;
    (cache.entry_count(), rss_bytes())
}
