use std::any::Any;
use std::sync::Arc;

use tower_layer::Layer;

use super::ReadThrough;
use crate::codec::JsonCodec;
use crate::store::SharedStore;
use crate::{Cache, Policy, Profile};

/// Applies [`ReadThrough`] to a loader service. See the
/// [module docs](crate::layer::read_through).
#[derive(Clone)]
pub struct ReadThroughLayer<St = SharedStore, C = JsonCodec> {
    pub(super) cache: Cache<St>,
    pub(super) profile: Profile,
    pub(super) codec: C,
    pub(super) namespace: Arc<str>,
    /// `Arc<dyn Fn(&V) -> bool>` for the service's `V`, type-erased.
    pub(super) negative: Option<Arc<dyn Any + Send + Sync>>,
}

impl<St, C> std::fmt::Debug for ReadThroughLayer<St, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThroughLayer")
            .field("profile", &self.profile)
            .field("namespace", &self.namespace)
            .finish()
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
            negative: None,
        }
    }
}

impl<St, C> ReadThroughLayer<St, C> {
    /// Prefix of every key this layer stores (for example `"user:"`), so
    /// layers sharing a store do not collide. Default: empty.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Arc::from(namespace.into());
        self
    }

    /// Stores values with `codec` instead of JSON.
    pub fn codec<C2>(self, codec: C2) -> ReadThroughLayer<St, C2> {
        ReadThroughLayer {
            cache: self.cache,
            profile: self.profile,
            codec,
            namespace: self.namespace,
            negative: self.negative,
        }
    }

    /// Values for which `is_not_found` returns true are cached for the
    /// policy's negative TTL. Default: values that encode to JSON `null`.
    pub fn not_found_when<V: 'static>(
        mut self,
        is_not_found: impl Fn(&V) -> bool + Send + Sync + 'static,
    ) -> Self {
        let f: Arc<dyn Fn(&V) -> bool + Send + Sync> = Arc::new(is_not_found);
        self.negative = Some(Arc::new(f));
        self
    }

    /// Reloads entries in the background once they are past `fraction` of
    /// their TTL (see [`Policy::refresh_ahead_at`]).
    pub fn refresh_ahead_at(mut self, fraction: f64) -> Self {
        self.profile = self.profile.map_policy(|p| p.refresh_ahead_at(fraction));
        self
    }

    /// The profile: name, policy and counters.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
}

impl<S, St: Clone, C: Clone> Layer<S> for ReadThroughLayer<St, C> {
    type Service = ReadThrough<S, St, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadThrough {
            inner,
            layer: self.clone(),
        }
    }
}
