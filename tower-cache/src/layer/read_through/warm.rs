//! Warming a read-through cache: keys loaded through it before traffic.

use tower::ServiceExt;
use tower_service::Service;

use super::ReadThrough;
use crate::WarmReport;
use crate::codec::{CacheKey, key_in};
use crate::engine::Warmed;
use crate::store::Store;

impl<S, St: Store, C> ReadThrough<S, St, C> {
    /// Reads each of `keys` through this cache, so that a miss loads and
    /// stores it; a key whose entry is stored and fresh is skipped. At
    /// most [`CacheBuilder::warm_concurrency`](crate::CacheBuilder::warm_concurrency)
    /// (default 16) at once; a key whose load fails is logged and counted,
    /// and warming goes on. Progress is logged at `info` every
    /// [`WARM_LOG_EVERY`](crate::engine::WARM_LOG_EVERY) keys and at the
    /// end.
    pub async fn warm<K>(&self, keys: impl IntoIterator<Item = K>) -> WarmReport
    where
        Self: Service<K, Error = tower::BoxError> + Clone,
        K: CacheKey,
    {
        let layer = &self.layer;
        let name = layer.profile.name();
        let warm = |key: K| {
            let svc = self.clone();
            async move {
                let cache_key = key_in(&layer.namespace, &key);
                if layer.cache.holds_fresh(&cache_key).await {
                    return Warmed::Cached;
                }
                match svc.oneshot(key).await {
                    Ok(_) => Warmed::Loaded,
                    Err(error) => {
                        tracing::warn!(cache = %name, key = %cache_key, %error, "warming: load failed");
                        Warmed::Failed
                    }
                }
            }
        };
        layer.cache.warm_each(name, keys, warm).await
    }
}
