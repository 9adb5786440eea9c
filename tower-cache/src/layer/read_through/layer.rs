use std::sync::Arc;

use tower_layer::Layer;

use super::ReadThrough;
use crate::codec::{JsonCodec, NotFoundWhen};
use crate::filter::ExistenceFilter;
use crate::store::SharedStore;
use crate::{Cache, Policy, Profile};

/// Applies [`ReadThrough`] to a loader service. See the
/// [module docs](crate::layer::read_through).
///
/// `C` is the [`Codec`](crate::codec::Codec) values are stored with: JSON
/// unless [`codec`](Self::codec) says otherwise, wrapped in a
/// [`NotFoundWhen`] by [`not_found_when`](Self::not_found_when).
pub struct ReadThroughLayer<St = SharedStore, C = JsonCodec> {
    pub(super) cache: Cache<St>,
    pub(super) profile: Profile,
    pub(super) codec: C,
    pub(super) namespace: Arc<str>,
    /// The existence filter asked on misses, with the "not found" value
    /// for a key it rules out: a [`ReadAbsent`] of the loader's key and
    /// value types.
    pub(super) absent: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// An existence filter and the value answered for a key it rules out.
pub(super) struct ReadAbsent<K, V> {
    pub(super) filter: ExistenceFilter,
    pub(super) not_found: Box<dyn Fn(&K) -> V + Send + Sync>,
}

impl<St, C: Clone> Clone for ReadThroughLayer<St, C> {
    fn clone(&self) -> Self {
        ReadThroughLayer {
            cache: self.cache.clone(),
            profile: self.profile.clone(),
            codec: self.codec.clone(),
            namespace: self.namespace.clone(),
            absent: self.absent.clone(),
        }
    }
}

impl<St, C> std::fmt::Debug for ReadThroughLayer<St, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThroughLayer")
            .field("profile", &self.profile)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl<St> ReadThroughLayer<St, JsonCodec> {
    /// A layer over `cache`, named `name` (the metrics label), with
    /// `policy`, the JSON codec and an empty namespace.
    pub fn new(cache: Cache<St>, name: impl Into<String>, policy: Policy) -> Self {
        ReadThroughLayer {
            cache,
            profile: Profile::new(name, policy),
            codec: JsonCodec,
            namespace: Arc::from(""),
            absent: None,
        }
    }

    /// Stores values with `codec` instead of JSON.
    pub fn codec<C2>(self, codec: C2) -> ReadThroughLayer<St, C2> {
        self.map_codec(|_| codec)
    }
}

impl<St, C, V> ReadThroughLayer<St, NotFoundWhen<C, V>> {
    /// Stores values with `codec` instead of JSON; the values
    /// [`not_found_when`](ReadThroughLayer::not_found_when) picks are still
    /// the ones cached for the negative TTL.
    pub fn codec<C2>(self, codec: C2) -> ReadThroughLayer<St, NotFoundWhen<C2, V>> {
        self.map_codec(|not_found| not_found.with_codec(codec))
    }
}

impl<St, C> ReadThroughLayer<St, C> {
    /// Prefix of every key this layer stores (for example `"user:"`), so
    /// layers sharing a store do not collide. Default: empty.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Arc::from(namespace.into());
        self
    }

    fn map_codec<C2>(self, f: impl FnOnce(C) -> C2) -> ReadThroughLayer<St, C2> {
        ReadThroughLayer {
            cache: self.cache,
            profile: self.profile,
            codec: f(self.codec),
            namespace: self.namespace,
            absent: self.absent,
        }
    }

    /// Values for which `is_not_found` returns true are cached for the
    /// policy's negative TTL. `V` is the loader's response type: a function
    /// of another type does not compile. Default: values the codec calls
    /// not found ([`Codec::is_not_found`](crate::codec::Codec::is_not_found):
    /// for JSON, those that encode to `null`, such as `Option::None`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{ServiceExt, service_fn};
    /// use tower_cache::{Cache, Policy, ReadThroughLayer};
    /// use tower_cache::store::{MemoryStore, SharedStore};
    /// use tower::Layer;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
    /// let policy = Policy::ttl(Duration::from_secs(60)).negative_ttl(Duration::from_secs(5));
    /// // A price of -1 means the product does not exist.
    /// let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    /// let prices = ReadThroughLayer::new(cache, "prices", policy)
    ///     .not_found_when(|price: &i64| *price < 0)
    ///     .layer(service_fn(|id: u64| async move { Ok::<_, std::io::Error>(if id < 100 { 250 } else { -1 }) }));
    /// assert_eq!(prices.oneshot(7).await?, 250);
    /// # Ok(()) }
    /// ```
    ///
    /// A function of the wrong type is a compile error, not a silent
    /// fallback:
    ///
    /// ```compile_fail
    /// # use tower::{ServiceExt, service_fn};
    /// # use tower_cache::{Cache, Policy, ReadThroughLayer};
    /// # use tower_cache::store::MemoryStore;
    /// # use tower::Layer;
    /// # async fn run() {
    /// let prices = ReadThroughLayer::new(Cache::new(MemoryStore::default()), "prices", Policy::default())
    ///     .not_found_when(|price: &Option<i64>| price.is_none()) // the loader answers `i64`
    ///     .layer(service_fn(|id: u64| async move { Ok::<i64, std::io::Error>(id as i64) }));
    /// let _ = prices.oneshot(7).await;
    /// # }
    /// ```
    pub fn not_found_when<V>(
        self,
        is_not_found: impl Fn(&V) -> bool + Send + Sync + 'static,
    ) -> ReadThroughLayer<St, NotFoundWhen<C, V>> {
        self.map_codec(|codec| NotFoundWhen::new(codec, is_not_found))
    }

    /// Guards the loader with an existence filter: a key (as the layer
    /// writes it, without the namespace: `"42"` for `42u64`) that the store
    /// holds no entry for and that `filter` says exists nowhere is
    /// answered with `not_found(&key)` without calling the loader, and
    /// nothing is stored. The filter is asked only on a miss, never on a
    /// hit. `K` and `V` are the loader's key and response types; a filter
    /// given for other types is not consulted. Answers are counted in
    /// `tower_cache_filtered_total`. Default: no filter.
    ///
    /// ```
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_cache::filter::ExistenceFilter;
    /// use tower_cache::{Cache, Policy, ReadThroughLayer, store::{MemoryStore, SharedStore}};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
    /// let users = ExistenceFilter::default();
    /// users.load(["1", "2"]).await?;
    /// let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    /// let repo = ReadThroughLayer::new(cache, "users", Policy::default())
    ///     .existence_filter(users, |_: &u64| None::<String>)
    ///     .layer(service_fn(|id: u64| async move {
    ///         Ok::<_, std::io::Error>(Some(format!("user {id}")))
    ///     }));
    /// assert_eq!(repo.clone().oneshot(1).await?, Some("user 1".to_owned()));
    /// assert_eq!(repo.oneshot(99).await?, None); // the loader was not called
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn existence_filter<K: 'static, V: 'static>(
        mut self,
        filter: ExistenceFilter,
        not_found: impl Fn(&K) -> V + Send + Sync + 'static,
    ) -> Self {
        self.absent = Some(Arc::new(ReadAbsent {
            filter,
            not_found: Box::new(not_found),
        }));
        self
    }

    /// Reloads entries in the background once they are past `fraction` of
    /// their TTL (see [`Policy::refresh_ahead_at`]).
    #[must_use]
    pub fn refresh_ahead_at(mut self, fraction: f64) -> Self {
        self.profile = self.profile.map_policy(|p| p.refresh_ahead_at(fraction));
        self
    }

    /// The profile: name, policy and counters.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
}

impl<S, St, C: Clone> Layer<S> for ReadThroughLayer<St, C> {
    type Service = ReadThrough<S, St, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadThrough {
            inner,
            layer: self.clone(),
        }
    }
}
