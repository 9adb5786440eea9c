use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::{ReadThroughLayer, ResponseFuture};
use crate::codec::JsonCodec;
use crate::codec::{CacheKey, Codec, key_in};
use crate::store::{SharedStore, Store};
use crate::{CacheStatus, Fetched, Fill, Loaded};

/// A loader service behind a read-through cache. Built by
/// [`ReadThroughLayer`].
#[derive(Clone)]
pub struct ReadThrough<S, St = SharedStore, C = JsonCodec> {
    pub(super) inner: S,
    pub(super) layer: ReadThroughLayer<St, C>,
}

impl<S: std::fmt::Debug, St, C> std::fmt::Debug for ReadThrough<S, St, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThrough")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, St, C> ReadThrough<S, St, C> {
    /// The wrapped loader.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn is_not_found<V: 'static>(
    negative: &Option<Arc<dyn std::any::Any + Send + Sync>>,
    value: &V,
    bytes: &[u8],
) -> bool {
    match negative
        .as_ref()
        .and_then(|f| f.downcast_ref::<Arc<dyn Fn(&V) -> bool + Send + Sync>>())
    {
        Some(f) => f(value),
        None => bytes == b"null",
    }
}

impl<S, K, St, C> Service<K> for ReadThrough<S, St, C>
where
    S: Service<K> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    K: CacheKey + Send + 'static,
    St: Store + Clone,
    C: Codec<S::Response>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, key: K) -> Self::Future {
        let lookup = self.start(key);
        ResponseFuture {
            inner: Box::pin(async move { lookup.await.map(|(value, _)| value) }),
        }
    }
}

impl<S, St, C> ReadThrough<S, St, C> {
    /// Reads `key` like [`Service::call`], and also tells how the cache
    /// answered (for an `X-Cache` header). Waits for the loader to be
    /// ready first.
    pub async fn lookup<K>(&mut self, key: K) -> Result<(S::Response, CacheStatus), tower::BoxError>
    where
        S: Service<K> + Clone + Send + 'static,
        S::Response: Send + 'static,
        S::Error: Into<tower::BoxError>,
        S::Future: Send + 'static,
        K: CacheKey + Send + 'static,
        St: Store + Clone,
        C: Codec<S::Response>,
    {
        std::future::poll_fn(|cx| self.inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        self.start(key).await
    }

    fn start<K>(
        &mut self,
        key: K,
    ) -> impl std::future::Future<Output = Result<(S::Response, CacheStatus), tower::BoxError>>
    + Send
    + 'static
    where
        S: Service<K> + Clone + Send + 'static,
        S::Response: Send + 'static,
        S::Error: Into<tower::BoxError>,
        S::Future: Send + 'static,
        K: CacheKey + Send + 'static,
        St: Store + Clone,
        C: Codec<S::Response>,
    {
        // The ready service goes to this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        async move {
            let cache_key = key_in(&layer.namespace, &key);
            let codec = layer.codec.clone();
            let negative = layer.negative.clone();
            let load = move || async move {
                let value = inner.call(key).await.map_err(Into::into)?;
                Ok::<_, tower::BoxError>(match codec.encode(&value) {
                    Ok(bytes) => {
                        let mut fill = Fill::new(bytes);
                        fill.negative = is_not_found(&negative, &value, &fill.value);
                        Loaded::Store(fill)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "value not cached: it does not encode");
                        Loaded::Pass(value)
                    }
                })
            };
            let mut decoded = None;
            let codec = &layer.codec;
            let check = |entry: &crate::Entry| match codec.decode(&entry.value) {
                Ok(v) => {
                    decoded = Some(v);
                    true
                }
                Err(_) => false,
            };
            let fetched = layer
                .cache
                .fetch_checked(&cache_key, &layer.profile, check, load)
                .await
                .map_err(|e| e.into_box_error())?;
            let status = fetched.status();
            let value = match fetched {
                Fetched::Passed(value) => value,
                Fetched::Hit(entry) | Fetched::Stale(entry) | Fetched::Miss(entry) => match decoded
                {
                    Some(value) => value,
                    None => codec.decode(&entry.value)?,
                },
            };
            Ok((value, status))
        }
    }
}
