//! Write-through for typed writer services.
//!
//! [`WriteThroughLayer`] wraps the source of truth, a writer
//! `Service<Write<K, V>>` (a repository that writes a database). A write
//! calls the writer first; only when it succeeds is the cache entry set to
//! the new value, before the caller gets the answer, so that a read right
//! after the write is a hit with the new value.
//!
//! - When the writer fails, the cache keeps what it had and the caller
//!   gets the error.
//! - When the outcome is unknown (the write timed out, see
//!   [`WriteThroughLayer::timeout`], or the caller went away while the
//!   writer was running), the key is removed rather than left possibly
//!   wrong.
//!
//! Give it the same [`Cache`](crate::Cache), namespace and codec as the
//! read layer that serves the key ([`ReadThroughLayer`](crate::ReadThroughLayer)).
//! For HTTP, [`CacheAsideLayer::write_through`](crate::CacheAsideLayer::write_through)
//! stores the representation a successful `PUT`/`PATCH` answers with.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_cache::store::{MemoryStore, SharedStore};
//! use tower_cache::{Cache, Policy, ReadThroughLayer, Write, WriteThroughLayer};
//! use tower_layer::Layer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! let cache = Cache::new(SharedStore::new(MemoryStore::default()));
//! let policy = Policy::ttl(Duration::from_secs(60));
//! let prices = WriteThroughLayer::new(cache.clone(), "prices", policy.clone())
//!     .namespace("price:")
//!     .layer(service_fn(|w: Write<u64, i64>| async move {
//!         // UPDATE products SET price_cents = w.value WHERE id = w.key
//!         Ok::<_, std::io::Error>(())
//!     }));
//! prices.oneshot(Write::new(7, 1_999)).await?;
//!
//! let reads = ReadThroughLayer::new(cache, "prices", policy).namespace("price:");
//! let mut price = reads.layer(service_fn(|_id: u64| async { Ok::<i64, std::io::Error>(0) }));
//! let (value, status) = price.lookup(7).await?;
//! assert_eq!((value, status.as_str()), (1_999, "HIT"));
//! # Ok(()) }
//! ```

mod layer;
mod service;

pub use layer::WriteThroughLayer;
pub use service::{WriteThrough, WriteTimedOut};

/// Response future of [`WriteThrough`].
pub type ResponseFuture<T> = super::future::ResponseFuture<
    futures_util::future::BoxFuture<'static, Result<T, tower::BoxError>>,
>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use crate::store::{MemoryStore, Store};
    use crate::{Cache, CacheStatus, Policy, ReadThroughLayer, Write, WriteThroughLayer};

    fn setup() -> (Cache<MemoryStore>, Arc<AtomicUsize>) {
        (
            Cache::new(MemoryStore::default()),
            Arc::new(AtomicUsize::new(0)),
        )
    }

    /// A price read-through over a "database" answering 100, counting loads.
    async fn read_price(
        cache: &Cache<MemoryStore>,
        loads: &Arc<AtomicUsize>,
    ) -> (i64, CacheStatus) {
        let loads = loads.clone();
        let mut svc = ReadThroughLayer::new(cache.clone(), "prices", Policy::default())
            .namespace("price:")
            .layer(service_fn(move |_: u64| {
                loads.fetch_add(1, Ordering::SeqCst);
                async { Ok::<i64, std::io::Error>(100) }
            }));
        svc.lookup(1).await.unwrap()
    }

    fn writer_layer(cache: &Cache<MemoryStore>) -> WriteThroughLayer<MemoryStore> {
        WriteThroughLayer::new(cache.clone(), "prices", Policy::default()).namespace("price:")
    }

    #[tokio::test]
    async fn read_after_write_is_a_hit_with_the_new_value() {
        let (cache, loads) = setup();
        assert_eq!(read_price(&cache, &loads).await, (100, CacheStatus::Miss));
        let svc = writer_layer(&cache).layer(service_fn(|_: Write<u64, i64>| async {
            Ok::<_, std::io::Error>(())
        }));
        svc.oneshot(Write::new(1, 250)).await.unwrap();
        assert_eq!(read_price(&cache, &loads).await, (250, CacheStatus::Hit));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn writer_failure_leaves_the_cache_unchanged() {
        let (cache, loads) = setup();
        read_price(&cache, &loads).await;
        let svc = writer_layer(&cache).layer(service_fn(|_: Write<u64, i64>| async {
            Err::<(), _>(std::io::Error::other("constraint violated"))
        }));
        let err = svc.oneshot(Write::new(1, 250)).await.unwrap_err();
        assert_eq!(err.to_string(), "constraint violated");
        assert_eq!(read_price(&cache, &loads).await, (100, CacheStatus::Hit));
    }

    #[test]
    fn a_write_dropped_outside_a_runtime_does_not_panic() {
        let (cache, _) = setup();
        let mut svc = writer_layer(&cache).layer(service_fn(|_: Write<u64, i64>| async {
            Ok::<_, std::io::Error>(())
        }));
        // Built and dropped with no runtime: the unknown outcome cannot be
        // cleaned up, but it must not take the thread down.
        let pending = tower::Service::call(&mut svc, Write::new(1, 250));
        drop(pending);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_outcome_removes_the_key() {
        let (cache, loads) = setup();
        read_price(&cache, &loads).await;
        let slow = service_fn(|_: Write<u64, i64>| async {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            Ok::<_, std::io::Error>(())
        });
        // The caller goes away mid-write.
        let abandoned = tokio::spawn(writer_layer(&cache).layer(slow).oneshot(Write::new(1, 250)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        abandoned.abort();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(cache.store().get("price:1").await.unwrap().is_none());

        // A write that times out.
        read_price(&cache, &loads).await;
        let err = writer_layer(&cache)
            .timeout(Duration::from_secs(1))
            .layer(slow)
            .oneshot(Write::new(1, 250))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        // Removed before the caller heard of the timeout.
        assert!(cache.store().get("price:1").await.unwrap().is_none());
        assert_eq!(read_price(&cache, &loads).await, (100, CacheStatus::Miss));
    }
}
