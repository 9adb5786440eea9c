//! What a [`Cache`](super::Cache) runs on a miss: the [`Loader`] trait.

use std::fmt;
use std::future::Future;

use super::Loaded;
use crate::entry::Entry;

/// Reads a value from its origin on a miss: what
/// [`Cache::fetch`](super::Cache::fetch) runs at most once per key at a
/// time.
///
/// Implemented for every `FnOnce() -> impl Future<Output = Result<Loaded<T>, E>>`
/// closure, and for types of one's own, whose associated types then name
/// the value and the error once, so no call needs a turbofish:
///
/// ```
/// use std::time::Duration;
/// use futures_util::future::{BoxFuture, FutureExt};
/// use tower_cache::{Cache, Fetched, Fill, Loaded, Loader, Policy, Profile};
/// use tower_cache::store::MemoryStore;
///
/// /// Reads one user from the database.
/// struct LoadUser(u64);
///
/// impl Loader for LoadUser {
///     type Value = ();
///     type Error = std::io::Error;
///     type Future = BoxFuture<'static, Result<Loaded<()>, std::io::Error>>;
///
///     fn load(self) -> Self::Future {
///         async move { Ok(Loaded::Store(Fill::new(format!("user {}", self.0)))) }.boxed()
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::new(MemoryStore::default());
/// let users = Profile::new("users", Policy::ttl(Duration::from_secs(30)));
/// let got = cache.fetch("user:1", &users, LoadUser(1)).await.unwrap();
/// assert!(matches!(got, Fetched::Miss(_)));
/// let again = cache.fetch("user:1", &users, LoadUser(1)).await.unwrap();
/// assert!(matches!(again, Fetched::Hit(_)));
/// assert_eq!(&again.entry().unwrap().value()[..], b"user 1");
/// # }
/// ```
pub trait Loader: Send + 'static {
    /// What the caller whose loader ran gets when the value is not stored
    /// ([`Loaded::Pass`], [`Loaded::Failed`]) or before it is
    /// ([`Loaded::Streaming`]); `()` when it always is stored whole.
    type Value: Send + 'static;
    /// The loader's error. Callers that waited for this load receive its
    /// message ([`LoadError::Joined`](super::LoadError::Joined)), hence
    /// `Display`: the one bound every error type, `tower::BoxError`
    /// included, meets.
    type Error: fmt::Display + Send + 'static;

    /// The future [`load`](Loader::load) returns.
    type Future: Future<Output = Result<Loaded<Self::Value>, Self::Error>> + Send + 'static;

    /// Reads the value. Runs on a task of its own, so that the caller that
    /// started it going away does not cancel it for the others.
    fn load(self) -> Self::Future;

    /// Called before [`load`](Loader::load) when the store holds an entry
    /// for the key that is being reloaded: stale, past its
    /// refresh-ahead point, kept for revalidation
    /// ([`Fill::with_keep`](crate::Fill::with_keep)), or refused by the
    /// caller. A loader that can ask its origin whether that entry is
    /// still current (an HTTP conditional request with its `ETag`) keeps
    /// what it needs, and may answer with the entry's value, refreshed,
    /// without reading it whole again. Default: ignores it.
    fn revalidate(&mut self, stale: &Entry) {
        let _ = stale;
    }

    /// Whether [`revalidate`](Loader::revalidate) does anything: a reload
    /// that skips the stored entry ([`Cache::reload`](super::Cache::reload))
    /// reads it for the loader only then. Default: `false`.
    fn can_revalidate(&self) -> bool {
        false
    }
}

impl<F, Fut, T, E> Loader for F
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type Value = T;
    type Error = E;
    type Future = Fut;

    fn load(self) -> Fut {
        self()
    }
}
