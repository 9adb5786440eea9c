use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;

use tower_service::Service;

use super::layer::ReadAbsent;
use super::{ReadThroughLayer, ResponseFuture};
use crate::codec::JsonCodec;
use crate::codec::{CacheKey, Codec, key_in};
use crate::store::{SharedStore, Store};
use crate::{Fetched, Fill, LoadError, Loaded};

/// A loader service behind a read-through cache. Built by
/// [`ReadThroughLayer`].
pub struct ReadThrough<S, St = SharedStore, C = JsonCodec> {
    pub(super) inner: S,
    pub(super) layer: ReadThroughLayer<St, C>,
}

impl<S: Clone, St, C: Clone> Clone for ReadThrough<S, St, C> {
    fn clone(&self) -> Self {
        ReadThrough {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
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

/// A loaded value with the bytes stored for it.
type Slot<V> = Mutex<Option<(Bytes, V)>>;

impl<S, K, St, C> Service<K> for ReadThrough<S, St, C>
where
    S: Service<K> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    K: CacheKey + Send + 'static,
    St: Store,
    C: Codec<S::Response>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, key: K) -> Self::Future {
        let lookup = self.start(key, |_| ());
        ResponseFuture::new(Box::pin(
            async move { lookup.await.map(|(value, ())| value) },
        ))
    }
}

impl<S, St, C> ReadThrough<S, St, C> {
    /// Reads `key` like [`Service::call`], and also tells how the cache
    /// answered (for an `X-Cache` header). Waits for the loader to be
    /// ready first.
    ///
    /// # Errors
    ///
    /// As [`Service::call`]: the loader's error, or the engine's
    /// [`LoadError`] (timeout, a failed load this call waited for).
    #[cfg(feature = "http")]
    pub async fn lookup<K>(
        &mut self,
        key: K,
    ) -> Result<(S::Response, crate::CacheStatus), tower::BoxError>
    where
        S: Service<K> + Clone + Send + 'static,
        S::Response: Send + 'static,
        S::Error: Into<tower::BoxError>,
        S::Future: Send + 'static,
        K: CacheKey + Send + 'static,
        St: Store,
        C: Codec<S::Response>,
    {
        std::future::poll_fn(|cx| self.inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        self.start(key, |fetched| crate::CacheStatus::from(fetched))
            .await
    }

    /// Reads `key`; `status` tells what the caller wants to know of how
    /// the cache answered.
    fn start<K, T: Send + 'static>(
        &mut self,
        key: K,
        status: fn(&Fetched<S::Response>) -> T,
    ) -> impl std::future::Future<Output = Result<(S::Response, T), tower::BoxError>> + Send + 'static
    where
        S: Service<K> + Clone + Send + 'static,
        S::Response: Send + 'static,
        S::Error: Into<tower::BoxError>,
        S::Future: Send + 'static,
        K: CacheKey + Send + 'static,
        St: Store,
        C: Codec<S::Response>,
    {
        // The ready service goes to this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        async move {
            let cache_key = key_in(&layer.namespace, &key);
            // With an existence filter, the entry is read first: a key the
            // store holds nothing for may be ruled out before any load.
            let absent = layer
                .absent
                .as_ref()
                .and_then(|a| a.downcast_ref::<ReadAbsent<K, S::Response>>());
            let found = match absent {
                Some(absent) => {
                    let cached = layer.cache.read_entry(&cache_key, &layer.profile).await;
                    let item = &cache_key[layer.namespace.len()..];
                    if cached.is_none()
                        && layer
                            .cache
                            .rules_out(&layer.profile, &absent.filter, item)
                            .await
                    {
                        let passed = Fetched::Passed((absent.not_found)(&key));
                        let status = status(&passed);
                        let Fetched::Passed(value) = passed else {
                            unreachable!("built as passed")
                        };
                        return Ok((value, status));
                    }
                    Some(cached)
                }
                None => None,
            };
            let codec = layer.codec.clone();
            // The loaded value with the bytes stored for it, for the caller
            // whose loader ran: it is not decoded back.
            let loaded: Arc<Slot<S::Response>> = Arc::default();
            let slot = loaded.clone();
            let load = move || async move {
                let value = inner.call(key).await.map_err(Into::into)?;
                let bytes = match codec.encode(&value) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        tracing::warn!(%error, "value not cached: it does not encode");
                        return Ok(Loaded::Pass(value));
                    }
                };
                if let Err(error) = codec.decode(&bytes) {
                    // Stored, it would fail every later read.
                    tracing::warn!(%error, "value not cached: its encoding does not decode");
                    return Ok(Loaded::Pass(value));
                }
                let mut fill = Fill::new(bytes);
                fill.negative = codec.is_not_found(&value, &fill.value);
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((fill.value.clone(), value));
                Ok::<_, tower::BoxError>(Loaded::Store(fill))
            };
            // What the check decoded, with its buffer, so that a hit is
            // decoded once and an older entry is never taken for the one
            // returned.
            let mut decoded: Option<(Bytes, S::Response)> = None;
            let codec = &layer.codec;
            let check = |entry: &crate::Entry| match codec.decode(&entry.value) {
                Ok(v) => {
                    decoded = Some((entry.value.clone(), v));
                    true
                }
                Err(_) => false,
            };
            let fetched = if let Some(cached) = found {
                layer
                    .cache
                    .fetch_checked_found(&cache_key, &layer.profile, cached, check, load)
                    .await
            } else {
                layer
                    .cache
                    .fetch_checked(&cache_key, &layer.profile, check, load)
                    .await
            };
            let fetched = fetched.map_err(LoadError::into_box_error)?;
            let status = status(&fetched);
            let value = match fetched {
                Fetched::Passed(value) => value,
                Fetched::Hit(entry) | Fetched::Stale(entry) | Fetched::Miss(entry) => {
                    let same = |b: &Bytes| {
                        b.as_ptr() == entry.value.as_ptr() && b.len() == entry.value.len()
                    };
                    let own = loaded
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take();
                    match (decoded, own) {
                        (Some((bytes, value)), _) if same(&bytes) => value,
                        (_, Some((bytes, value))) if same(&bytes) => value,
                        _ => codec.decode(&entry.value)?,
                    }
                }
            };
            Ok((value, status))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use crate::codec::CodecError;
    use crate::store::MemoryStore;
    use crate::{Cache, Policy, ReadThroughLayer};

    use super::*;

    /// Writes what it cannot read back.
    #[derive(Clone)]
    struct WriteOnly;

    impl Codec<u64> for WriteOnly {
        fn encode(&self, value: &u64) -> Result<Bytes, CodecError> {
            Ok(Bytes::from(value.to_string()))
        }
        fn decode(&self, _: &[u8]) -> Result<u64, CodecError> {
            Err(CodecError::new("not this format"))
        }
    }

    fn counting() -> (
        Arc<AtomicU64>,
        impl tower_service::Service<
            u64,
            Response = u64,
            Error = std::io::Error,
            Future = impl Send + 'static,
        > + Clone
        + Send
        + 'static,
    ) {
        let calls = Arc::new(AtomicU64::new(0));
        let loader = {
            let calls = calls.clone();
            service_fn(move |id: u64| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok::<_, std::io::Error>(id * 100 + n) }
            })
        };
        (calls, loader)
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_whose_encoding_does_not_decode_is_answered_not_failed() {
        let (calls, loader) = counting();
        let cache = Cache::new(MemoryStore::default());
        let svc = ReadThroughLayer::new(cache.clone(), "w", Policy::default())
            .codec(WriteOnly)
            .layer(loader);
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 101);
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 102, "reloaded");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(cache.store().get("1").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_reload_after_the_ttl_answers_the_new_value() {
        let (_, loader) = counting();
        let svc = ReadThroughLayer::new(
            Cache::new(MemoryStore::default()),
            "r",
            Policy::ttl(Duration::from_secs(1))
                .jitter(0.0)
                .stale_if_error(Duration::from_secs(60)),
        )
        .layer(loader);
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 101);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 102);
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 102, "a hit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_the_filter_rules_out_is_not_found_without_the_loader() {
        let (calls, loader) = counting();
        let filter = crate::filter::ExistenceFilter::builder()
            .expected_items(100)
            .build();
        filter
            .load((1..=10u64).map(|id| id.to_string()))
            .await
            .unwrap();
        let layer =
            ReadThroughLayer::new(Cache::new(MemoryStore::default()), "r", Policy::default())
                .namespace("n:")
                .existence_filter(filter.clone(), |id: &u64| id + 1_000_000);
        let profile = layer.profile().clone();
        let svc = layer.layer(loader);
        assert!(!filter.contains_local("5000"));
        assert_eq!(svc.clone().oneshot(5000).await.unwrap(), 1_005_000);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the loader was not called");
        assert_eq!(profile.stats().filtered, 1);
        assert_eq!(svc.clone().oneshot(3).await.unwrap(), 301);
        assert_eq!(svc.clone().oneshot(3).await.unwrap(), 301, "a hit");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        filter.insert("5000").await.unwrap();
        assert_eq!(svc.clone().oneshot(5000).await.unwrap(), 500_002);
    }

    #[tokio::test(start_paused = true)]
    async fn warmed_keys_are_hits_and_are_not_loaded_twice() {
        let (calls, loader) = counting();
        let svc = ReadThroughLayer::new(Cache::new(MemoryStore::default()), "r", Policy::default())
            .namespace("n:")
            .layer(loader);
        let report = svc.warm(1..=20u64).await;
        assert_eq!((report.loaded, report.cached, report.failed), (20, 0, 0));
        assert_eq!(calls.load(Ordering::SeqCst), 20);
        assert_eq!(svc.clone().oneshot(7).await.unwrap() / 100, 7, "warmed");
        assert_eq!(calls.load(Ordering::SeqCst), 20, "a hit");
        let again = svc.warm(15..=25u64).await;
        assert_eq!((again.loaded, again.cached), (5, 6));
        assert_eq!(calls.load(Ordering::SeqCst), 25);
    }
}
