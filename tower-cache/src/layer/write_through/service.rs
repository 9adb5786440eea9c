use std::task::{Context, Poll};

use tower_service::Service;

use super::{ResponseFuture, WriteThroughLayer};
use crate::codec::{CacheKey, Codec, JsonCodec, key_in};
use crate::layer::write::Write;
use crate::store::{SharedStore, Store};
use crate::{Cache, Fill};

/// A writer service whose successful writes set the cache. Built by
/// [`WriteThroughLayer`].
pub struct WriteThrough<S, St = SharedStore, C = JsonCodec> {
    pub(super) inner: S,
    pub(super) layer: WriteThroughLayer<St, C>,
}

impl<S: Clone, St, C: Clone> Clone for WriteThrough<S, St, C> {
    fn clone(&self) -> Self {
        WriteThrough {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: std::fmt::Debug, St, C> std::fmt::Debug for WriteThrough<S, St, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteThrough")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// The write took longer than [`WriteThroughLayer::timeout`]; whether the
/// writer applied it is unknown, so the key was removed from the cache.
#[derive(Debug, thiserror::Error)]
#[error("write timed out; its outcome is unknown and the cached value was removed")]
pub struct WriteTimedOut;

/// Removes the key when dropped while armed: the write's outcome is then
/// unknown (the caller went away mid-write).
struct UnknownOutcome<St: Store> {
    cache: Cache<St>,
    key: Option<String>,
}

impl<St: Store> UnknownOutcome<St> {
    fn disarm(&mut self) -> Option<String> {
        self.key.take()
    }
}

impl<St: Store> Drop for UnknownOutcome<St> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Dropped outside a runtime (the runtime is gone): no task can
            // remove the key any more.
            if tokio::runtime::Handle::try_current().is_err() {
                tracing::warn!(
                    key,
                    "write abandoned outside a Tokio runtime; the cached value could not be removed"
                );
                return;
            }
            tracing::debug!(key, "write abandoned mid-flight; removing the cached value");
            let cache = self.cache.clone();
            self.cache
                .spawn("write_through_unknown_outcome", async move {
                    cache.remove(&key).await;
                });
        }
    }
}

impl<S, K, V, St, C> Service<Write<K, V>> for WriteThrough<S, St, C>
where
    S: Service<Write<K, V>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
    K: CacheKey + Send + 'static,
    V: Send + 'static,
    St: Store,
    C: Codec<V>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, write: Write<K, V>) -> Self::Future {
        // The ready service goes to this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let key = key_in(&self.layer.namespace, &write.key);
        let encoded = self.layer.codec.encode(&write.value);
        let cache = self.layer.cache.clone();
        let profile = self.layer.profile.clone();
        let timeout = self.layer.timeout;
        // Armed until the writer's outcome is known.
        let mut guard = UnknownOutcome {
            cache: cache.clone(),
            key: Some(key),
        };
        let written = inner.call(write);
        ResponseFuture::new(Box::pin(async move {
            let result: Option<Result<S::Response, tower::BoxError>> = match timeout {
                Some(limit) => tokio::time::timeout(limit, written)
                    .await
                    .ok()
                    .map(|result| result.map_err(Into::into)),
                None => Some(written.await.map_err(Into::into)),
            };
            let Some(result) = result else {
                // Removed before the caller hears of it, so a read
                // after the error never sees the old value.
                if let Some(key) = guard.disarm() {
                    cache.remove(&key).await;
                }
                return Err(WriteTimedOut.into());
            };
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    // The writer said no: the cache keeps what it had.
                    guard.disarm();
                    return Err(error);
                }
            };
            // Still armed while the cache is set: a caller that goes
            // away now leaves the key removed, never the old value.
            let key = guard.key.clone().unwrap_or_default();
            match encoded {
                Ok(bytes) => cache.put(&key, &profile, Fill::new(bytes)).await,
                Err(error) => {
                    tracing::warn!(key, %error, "written value does not encode; removing the cached one");
                    cache.remove(&key).await;
                }
            }
            guard.disarm();
            Ok(response)
        }))
    }
}
