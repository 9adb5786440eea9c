//! Resident memory of the L1 after 1,000,000 distinct 1 KiB entries,
//! against its configured byte capacity.
//!
//! `L1_MAX_BYTES` (default 256 MiB), `ENTRIES` (default 1,000,000).

use std::time::Duration;

use bytes::Bytes;
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

#[tokio::main]
async fn main() {
    let max: u64 = std::env::var("L1_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 * 1024 * 1024);
    let entries: u64 = std::env::var("ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let before = rss_bytes();
    let store = MemoryStore::builder().max_bytes(max).lru().build();
    for i in 0..entries {
        let value = Bytes::from(vec![(i % 251) as u8; 1024]);
        let entry = Entry::new(value).with_ttl(Duration::from_secs(3600));
        let _ = store.put(&format!("key:{i:08}"), entry).await;
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
