//! Read-through caching for typed loader services.
//!
//! [`ReadThroughLayer`] wraps any `Service<K, Response = V>` (a repository
//! that reads a database, a client of another API) and is itself a
//! `Service<K, Response = V>`: the application asks the cache, and the
//! cache asks the loader when it has to. `V` is stored through a
//! [`Codec`](crate::codec::Codec) (JSON by default), under the key
//! `namespace + key`.
//!
//! Every [`Policy`](crate::Policy) option applies: concurrent misses on one
//! key make one loader call, stale entries can be served while a reload
//! runs, and a value the store cannot decode is reloaded. A `V` the layer
//! considers "not found" (by default: one that encodes to JSON `null`,
//! such as `Option::None`; or what a function given to
//! [`not_found_when`](ReadThroughLayer::not_found_when) picks) is cached
//! for the policy's negative TTL.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_cache::{Cache, Policy, ReadThroughLayer};
//! use tower_cache::store::{MemoryStore, SharedStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! let cache = Cache::new(SharedStore::new(MemoryStore::default()));
//! let users = ServiceBuilder::new()
//!     .layer(
//!         ReadThroughLayer::new(cache, "users", Policy::ttl(Duration::from_secs(30)))
//!             .namespace("user:"),
//!     )
//!     .service(service_fn(|id: u64| async move {
//!         // a database query in a real application
//!         Ok::<_, std::io::Error>(Some(format!("User {id}")))
//!     }));
//! let name = users.oneshot(7).await?;
//! assert_eq!(name.as_deref(), Some("User 7"));
//! # Ok(()) }
//! ```
//!
//! # In an axum state
//!
//! Every type with a store parameter defaults it to
//! [`SharedStore`](crate::store::SharedStore) (and its codec to JSON), so
//! with a cache built over a `SharedStore` an application state names the
//! cached service `ReadThrough<UserRepo>`:
//!
//! ```
//! use std::time::Duration;
//! use axum::extract::{Path, State};
//! use axum::http::StatusCode;
//! use axum::{Router, routing::get};
//! use tower::{Layer, ServiceExt};
//! use tower_cache::store::{MemoryStore, SharedStore};
//! use tower_cache::{Cache, Policy, ReadThrough, ReadThroughLayer};
//!
//! /// Reads users from the database.
//! #[derive(Clone)]
//! struct UserRepo;
//! # impl tower::Service<u64> for UserRepo {
//! #     type Response = Option<String>;
//! #     type Error = std::io::Error;
//! #     type Future = std::future::Ready<Result<Option<String>, std::io::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//! #         std::task::Poll::Ready(Ok(()))
//! #     }
//! #     fn call(&mut self, id: u64) -> Self::Future {
//! #         std::future::ready(Ok((id < 100).then(|| format!("User {id}"))))
//! #     }
//! # }
//!
//! #[derive(Clone)]
//! struct AppState {
//!     users: ReadThrough<UserRepo>, // a `SharedStore`, JSON values
//! }
//!
//! async fn user(State(state): State<AppState>, Path(id): Path<u64>) -> Result<String, StatusCode> {
//!     let user = state.users.oneshot(id).await.map_err(|_| StatusCode::BAD_GATEWAY)?;
//!     user.ok_or(StatusCode::NOT_FOUND)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! let cache = Cache::new(SharedStore::new(MemoryStore::default()));
//! let users = ReadThroughLayer::new(cache, "users", Policy::ttl(Duration::from_secs(30)))
//!     .namespace("user:")
//!     .layer(UserRepo);
//! let app = Router::new()
//!     .route("/users/{id}", get(user))
//!     .with_state(AppState { users });
//! let request = axum::http::Request::get("/users/7").body(axum::body::Body::empty())?;
//! assert_eq!(app.oneshot(request).await?.status(), StatusCode::OK);
//! # Ok(()) }
//! ```

mod layer;
mod service;
mod warm;

pub use layer::ReadThroughLayer;
pub use service::ReadThrough;

/// Response future of [`ReadThrough`].
pub type ResponseFuture<V> = super::future::ResponseFuture<
    futures_util::future::BoxFuture<'static, Result<V, tower::BoxError>>,
>;

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tower::{Service, ServiceExt, service_fn};

    use crate::store::{MemoryStore, Store, StoreError};
    use crate::{Cache, Entry, Policy, ReadThroughLayer};
    use tower_layer::Layer;

    fn counting_repo(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<u64, Response = Option<String>, Error = std::io::Error, Future = impl Send>
    + Clone
    + Send
    + 'static {
        service_fn(move |id: u64| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>((id <= 10).then(|| format!("User {id}")))
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn second_read_is_served_from_cache() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = Cache::new(MemoryStore::default());
        let layer = ReadThroughLayer::new(cache, "users", Policy::default()).namespace("user:");
        let svc = layer.layer(counting_repo(calls.clone()));
        assert_eq!(
            svc.clone().oneshot(1).await.unwrap().as_deref(),
            Some("User 1")
        );
        assert_eq!(
            svc.clone().oneshot(1).await.unwrap().as_deref(),
            Some("User 1")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(layer.profile().stats().hits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_is_cached_for_the_negative_ttl() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = Cache::new(MemoryStore::default());
        let policy = Policy::ttl(Duration::from_secs(60)).negative_ttl(Duration::from_secs(1));
        let svc = ReadThroughLayer::new(cache, "users", policy).layer(counting_repo(calls.clone()));
        assert_eq!(svc.clone().oneshot(99).await.unwrap(), None);
        assert_eq!(svc.clone().oneshot(99).await.unwrap(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(svc.clone().oneshot(99).await.unwrap(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A found value keeps the long TTL.
        svc.clone().oneshot(1).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        svc.clone().oneshot(1).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn values_picked_by_not_found_when_are_cached_for_the_negative_ttl() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = Cache::new(MemoryStore::default());
        let policy = Policy::ttl(Duration::from_secs(60)).negative_ttl(Duration::from_secs(1));
        let svc = ReadThroughLayer::new(cache, "users", policy)
            .not_found_when(|user: &Option<String>| user.as_deref() == Some("User 2"))
            .layer(counting_repo(calls.clone()));
        // `None` encodes to `null`, but the function says it is found.
        assert_eq!(svc.clone().oneshot(99).await.unwrap(), None);
        assert_eq!(
            svc.clone().oneshot(2).await.unwrap().as_deref(),
            Some("User 2")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        svc.clone().oneshot(99).await.unwrap();
        svc.clone().oneshot(2).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "only the not-found value expired"
        );
    }

    #[tokio::test]
    async fn undecodable_value_is_reloaded() {
        let calls = Arc::new(AtomicUsize::new(0));
        let store = MemoryStore::default();
        let cache = Cache::new(store.clone());
        store.put("user:1", Entry::new("{not json")).await.unwrap();
        let svc = ReadThroughLayer::new(cache, "users", Policy::default())
            .namespace("user:")
            .layer(counting_repo(calls.clone()));
        assert_eq!(svc.oneshot(1).await.unwrap().as_deref(), Some("User 1"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A store that cannot be cloned.
    struct Unclonable(MemoryStore);

    impl Store for Unclonable {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send + 'a {
            self.0.get(key)
        }
        fn put<'a>(
            &'a self,
            key: &'a str,
            entry: Entry,
        ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
            self.0.put(key, entry)
        }
        fn remove<'a>(
            &'a self,
            key: &'a str,
        ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
            self.0.remove(key)
        }
        fn remove_tag<'a>(
            &'a self,
            tag: &'a str,
        ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
            self.0.remove_tag(tag)
        }
    }

    #[tokio::test]
    async fn layer_and_service_clone_whatever_the_store() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = Cache::new(Unclonable(MemoryStore::default()));
        let layer = ReadThroughLayer::new(cache, "users", Policy::default()).clone();
        let svc = layer.layer(counting_repo(calls.clone()));
        svc.clone().oneshot(1).await.unwrap();
        svc.clone().oneshot(1).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn loader_error_reaches_the_caller_and_is_not_cached() {
        let cache = Cache::new(MemoryStore::default());
        let failing =
            service_fn(|_: u64| async { Err::<String, _>(std::io::Error::other("db down")) });
        let svc = ReadThroughLayer::new(cache.clone(), "users", Policy::default()).layer(failing);
        let err = svc.oneshot(1).await.unwrap_err();
        assert_eq!(err.to_string(), "db down");
        assert!(cache.store().get("1").await.unwrap().is_none());
    }
}
