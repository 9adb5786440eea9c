use tower_layer::Layer;

use super::RefreshAhead;

/// A read layer whose policy can be given a refresh-ahead fraction:
/// [`CacheAsideLayer`](crate::CacheAsideLayer) and
/// [`ReadThroughLayer`](crate::ReadThroughLayer).
pub trait ReadLayer {
    /// This layer, reloading entries in the background past `fraction` of
    /// their TTL.
    #[must_use]
    fn with_refresh_ahead(self, fraction: f64) -> Self;
}

#[cfg(feature = "http")]
impl<St, G> ReadLayer for crate::CacheAsideLayer<St, G> {
    fn with_refresh_ahead(self, fraction: f64) -> Self {
        self.refresh_ahead_at(fraction)
    }
}

impl<St, C> ReadLayer for crate::ReadThroughLayer<St, C> {
    fn with_refresh_ahead(self, fraction: f64) -> Self {
        self.refresh_ahead_at(fraction)
    }
}

/// A read layer with a refresh-ahead policy: a decorator over
/// [`ReadThroughLayer`](crate::ReadThroughLayer) or
/// [`CacheAsideLayer`](crate::CacheAsideLayer) that sets
/// [`Policy::refresh_ahead_at`](crate::Policy::refresh_ahead_at) on it and
/// does nothing else. See the [module docs](crate::layer::refresh_ahead).
#[derive(Clone, Debug)]
pub struct RefreshAheadLayer<L> {
    read: L,
}

impl<L: ReadLayer> RefreshAheadLayer<L> {
    /// `read`, reloading entries in the background once a read finds them
    /// past `fraction` of their TTL (clamped to `0.0..=1.0`; 0.8 is a good
    /// start).
    pub fn new(read: L, fraction: f64) -> Self {
        RefreshAheadLayer {
            read: read.with_refresh_ahead(fraction),
        }
    }

    /// The configured read layer.
    pub fn read_layer(&self) -> &L {
        &self.read
    }
}

impl<S, L> Layer<S> for RefreshAheadLayer<L>
where
    L: Layer<S>,
{
    type Service = RefreshAhead<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        RefreshAhead {
            inner: self.read.layer(inner),
        }
    }
}
