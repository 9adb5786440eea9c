//! Refresh-ahead: a key read regularly is reloaded in the background
//! before it expires, so that no read after the first waits for the
//! loader.
//!
//! ```text
//! cargo run -p tower-cache --example refresh_ahead
//! ```
//!
//! A report that takes half a second to compute is cached for 10 s behind
//! a [`RefreshAheadLayer`] at 0.8: a read of an entry older than 8 s is
//! answered from the cache and starts a reload, which replaces the entry
//! before it expires. The program reads the report every second for two
//! minutes and checks that only the first read missed while the report
//! was computed again every few seconds. It runs on tokio's clock,
//! paused (`start_paused`, from tokio's `test-util` feature), so the two
//! minutes pass at once; an application leaves the clock running and
//! needs nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower::{Layer, ServiceExt, service_fn};
use tower_cache::store::{MemoryStore, SharedStore};
use tower_cache::{Cache, Policy, ReadThroughLayer, RefreshAheadLayer};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), tower::BoxError> {
    let computed = Arc::new(AtomicU64::new(0));
    let report = {
        let computed = computed.clone();
        service_fn(move |name: String| {
            let run = computed.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await; // a slow query
                Ok::<_, std::io::Error>(format!("{name}, computation {run}"))
            }
        })
    };
    let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    let reads = ReadThroughLayer::new(cache, "reports", Policy::ttl(Duration::from_secs(10)));
    let layer = RefreshAheadLayer::new(reads, 0.8);
    let profile = layer.read_layer().profile().clone();
    let reports = layer.layer(report);

    for second in 0..120 {
        let top = reports.clone().oneshot("top products".to_owned()).await?;
        if second % 20 == 0 {
            println!("{second:>3} s: {top}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stats = profile.stats();
    let computed = computed.load(Ordering::SeqCst);
    println!(
        "120 reads: {} miss, {} hits, {computed} computations, {} of them in the background",
        stats.misses, stats.hits, stats.refreshes
    );
    assert_eq!(
        (stats.misses, stats.stale),
        (1, 0),
        "only the first read waited"
    );
    assert!(stats.refreshes >= 10, "{stats:?}");
    assert_eq!(computed, stats.refreshes + 1);
    Ok(())
}

#[cfg(test)]
#[test]
fn runs() -> Result<(), tower::BoxError> {
    main()
}
