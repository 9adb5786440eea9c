//! Refresh-ahead: keep regularly read keys warm.
//!
//! [`RefreshAheadLayer`] goes around one of the read layers
//! ([`CacheAsideLayer`](crate::CacheAsideLayer) or
//! [`ReadThroughLayer`](crate::ReadThroughLayer)). Reads are served from
//! the cache as usual; when a read finds an entry past `fraction` of its
//! TTL (for example 0.8), the engine reloads it in the background (one
//! reload per key, bounded like every background refresh), so that a key
//! that is read regularly never expires into a miss. A key that is not
//! read is left to expire.
//!
//! The engine does the work: refresh-ahead is a [`Policy`](crate::Policy)
//! option ([`Policy::refresh_ahead_at`](crate::Policy::refresh_ahead_at)).
//! [`RefreshAheadLayer`] is a decorator that names the strategy in a
//! [`ServiceBuilder`](tower::ServiceBuilder) stack: it sets that option on
//! the read layer it is given and builds that layer's service, wrapped in
//! a [`RefreshAhead`] that only delegates to it.
//! `RefreshAheadLayer::new(read, 0.8)` caches exactly like
//! `read.refresh_ahead_at(0.8)`.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_cache::store::{MemoryStore, SharedStore};
//! use tower_cache::{Cache, Policy, ReadThroughLayer, RefreshAheadLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! let cache = Cache::new(SharedStore::new(MemoryStore::default()));
//! let reports = ReadThroughLayer::new(cache, "reports", Policy::ttl(Duration::from_secs(5)));
//! let svc = ServiceBuilder::new()
//!     .layer(RefreshAheadLayer::new(reports, 0.8))
//!     .service(service_fn(|name: String| async move {
//!         Ok::<_, std::io::Error>(vec![format!("{name}: top 10")])
//!     }));
//! let top = svc.oneshot("top".to_owned()).await?;
//! assert_eq!(top, ["top: top 10"]);
//! # Ok(()) }
//! ```

mod layer;
mod service;

/// Response future of [`RefreshAhead`]: the read service's own future.
pub use super::future::ResponseFuture;
pub use layer::{ReadLayer, RefreshAheadLayer};
pub use service::RefreshAhead;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use crate::store::MemoryStore;
    use crate::{Cache, Policy, ReadThroughLayer, RefreshAheadLayer};

    /// Reads a key every second for a minute; returns the read layer's
    /// counters.
    async fn read_for_a_minute(refresh_ahead: bool) -> crate::ProfileStats {
        let calls = Arc::new(AtomicUsize::new(0));
        let loader = {
            let calls = calls.clone();
            service_fn(move |_: u64| {
                let calls = calls.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, std::io::Error>(calls.fetch_add(1, Ordering::SeqCst))
                }
            })
        };
        let read = ReadThroughLayer::new(
            Cache::new(MemoryStore::default()),
            "reports",
            Policy::ttl(Duration::from_secs(10)).jitter(0.0),
        );
        let (svc, profile) = if refresh_ahead {
            let layer = RefreshAheadLayer::new(read, 0.8);
            let profile = layer.read_layer().profile().clone();
            (layer.layer(loader).boxed_clone(), profile)
        } else {
            let profile = read.profile().clone();
            (read.layer(loader).boxed_clone(), profile)
        };
        for _ in 0..60 {
            svc.clone().oneshot(1).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        profile.stats()
    }

    #[tokio::test(start_paused = true)]
    async fn a_regularly_read_key_never_expires_into_a_miss() {
        let with = read_for_a_minute(true).await;
        assert_eq!(with.misses, 1, "only the first read misses: {with:?}");
        assert!(with.refreshes >= 5, "{with:?}");
        let without = read_for_a_minute(false).await;
        assert!(
            without.misses >= 5,
            "without refresh-ahead it expires: {without:?}"
        );
    }
}
