use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::WriteThrough;
use crate::codec::JsonCodec;
use crate::store::SharedStore;
use crate::{Cache, Policy, Profile};

/// Applies [`WriteThrough`] to a writer service. See the
/// [module docs](crate::layer::write_through).
pub struct WriteThroughLayer<St = SharedStore, C = JsonCodec> {
    pub(super) cache: Cache<St>,
    pub(super) profile: Profile,
    pub(super) codec: C,
    pub(super) namespace: Arc<str>,
    pub(super) timeout: Option<Duration>,
}

impl<St, C: Clone> Clone for WriteThroughLayer<St, C> {
    fn clone(&self) -> Self {
        WriteThroughLayer {
            cache: self.cache.clone(),
            profile: self.profile.clone(),
            codec: self.codec.clone(),
            namespace: self.namespace.clone(),
            timeout: self.timeout,
        }
    }
}

impl<St, C> std::fmt::Debug for WriteThroughLayer<St, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteThroughLayer")
            .field("profile", &self.profile)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<St> WriteThroughLayer<St, JsonCodec> {
    /// A layer over `cache`, named `name` (the metrics label); stored
    /// values get `policy`'s TTL and stale window.
    pub fn new(cache: Cache<St>, name: impl Into<String>, policy: Policy) -> Self {
        WriteThroughLayer {
            cache,
            profile: Profile::new(name, policy),
            codec: JsonCodec,
            namespace: Arc::from(""),
            timeout: None,
        }
    }
}

impl<St, C> WriteThroughLayer<St, C> {
    /// Prefix of every key, the same as the read layer's. Default: empty.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Arc::from(namespace.into());
        self
    }

    /// Encodes values with `codec` instead of JSON (use the read layer's).
    pub fn codec<C2>(self, codec: C2) -> WriteThroughLayer<St, C2> {
        WriteThroughLayer {
            cache: self.cache,
            profile: self.profile,
            codec,
            namespace: self.namespace,
            timeout: self.timeout,
        }
    }

    /// A write taking longer fails with [`WriteTimedOut`](super::WriteTimedOut)
    /// and removes the key, since the writer may still apply it. Default:
    /// no timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The profile: name, policy and counters.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
}

impl<S, St, C: Clone> Layer<S> for WriteThroughLayer<St, C> {
    type Service = WriteThrough<S, St, C>;

    fn layer(&self, inner: S) -> Self::Service {
        WriteThrough {
            inner,
            layer: self.clone(),
        }
    }
}
