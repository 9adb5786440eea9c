//! Where entries live: the [`Store`] trait and its implementations.
//!
//! - [`MemoryStore`]: the in-process L1, on moka, bounded in bytes.
//! - [`RedisStore`]: the shared L2 (feature `redis`).
//! - [`TieredStore`]: L1 in front of L2, with cross-instance L1 invalidation
//!   through Redis pub/sub and fail-open when Redis is away (feature `redis`).
//! - [`RedisQueue`]: not a store but the durable write-behind log, a Redis
//!   Stream (feature `redis`).
//!
//! Only `redis/` (the store, its scripts, the circuit breaker, the replay
//! queue and the durable log) and `tiered/` use the redis crate; nothing
//! else in the crate does.
//!
//! A store is byte-level: it keeps [`Entry`] values under string keys and
//! knows nothing of HTTP or serde. It can be used as a generic parameter
//! (static dispatch, no allocation per call) or behind [`SharedStore`]
//! (a handle on `Arc<dyn DynStore>`) when the concrete type is chosen at
//! run time.
//!
//! ```
//! use tower_cache::store::{MemoryStore, SharedStore, Store};
//! use tower_cache::Entry;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = SharedStore::new(MemoryStore::new(64 * 1024 * 1024));
//! store.put("greeting", Entry::new("hello")).await.unwrap();
//! let hit = store.get("greeting").await.unwrap().expect("hit");
//! assert_eq!(&hit.value()[..], b"hello");
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::entry::Entry;

mod hot;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod tiered;

pub use hot::{
    DEFAULT_HOT_KEYS, DEFAULT_HOT_MAX_BYTES, DEFAULT_HOT_MIN_READS, DEFAULT_HOT_TTL, HotKeys,
    HotKeysBuilder,
};
pub use memory::{
    DEFAULT_MAX_BYTES, ENTRY_OVERHEAD_BYTES, Footprint, MemoryStats, MemoryStore,
    MemoryStoreBuilder, Resident,
};
#[cfg(feature = "redis")]
pub use redis::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FAILURE_THRESHOLD, DEFAULT_HOT_KEY_MIN_RATE,
    DEFAULT_MAX_LOAD_TIME, DEFAULT_MAX_PENDING_INVALIDATIONS, DEFAULT_MAX_TTL, DEFAULT_OP_TIMEOUT,
    DEFAULT_PREFIX, DEFAULT_RETRY_INTERVAL, RedisConnection, RedisQueue, RedisStore,
    RedisStoreBuilder,
};
#[cfg(feature = "redis")]
pub use tiered::{
    DEFAULT_L1_TTL, DEFAULT_MAX_UNSYNCED, TieredStats, TieredStore, TieredStoreBuilder,
};

/// What a store can fail with. The engine treats every error as "the cache
/// is unavailable" and goes to the origin: a store error never reaches the
/// caller of a cached service.
///
/// New kinds may be added (Redis Cluster's, say): match with a catch-all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend did not answer within the configured timeout.
    #[error("cache store timed out")]
    Timeout,
    /// The backend is known to be unavailable: its circuit breaker is
    /// open, or the connection was refused, reset or closed.
    #[error("cache store unavailable")]
    Unavailable,
    /// The backend returned an error (its own is the
    /// [`source`](std::error::Error::source)).
    #[error("cache store backend error: {0}")]
    Backend(#[source] tower::BoxError),
    /// The store was configured with a value it cannot work with.
    #[error("invalid cache store configuration: {0}")]
    Config(String),
}

/// What [`Store::lease`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lease {
    /// The lease is the caller's: it loads the key, then
    /// [`release`](Store::release)s it.
    Granted,
    /// The lease is the caller's, and the key has a value in the store:
    /// one a holder stored (releasing its lease in the same write) after
    /// the caller last read the key, or a stale one being refreshed. The
    /// caller reads the key again before it loads, and serves a fresh
    /// value it finds (releasing the lease) instead of loading it twice.
    GrantedOverValue,
    /// Another holder has it (a load of the key in flight on another
    /// instance): wait for its value.
    Taken,
    /// The store is not shared between instances, so no lease is needed:
    /// the in-process single flight is one load per key already.
    Local,
}

/// A byte-level, asynchronous key-value store of [`Entry`] values.
///
/// Invalidations are ordered by **versions, not clocks**: every tag (and
/// namespace-wide) invalidation moves the store's invalidation
/// [`version`](Store::version) forward, and an entry records the version
/// read before its value was read from the origin ([`Entry::version`]).
/// An entry is invalid when one of its tags was invalidated at a later
/// version, whatever the clocks of the instances that loaded it and
/// invalidated it say.
///
/// Implementations must:
/// - never return an entry whose stale window has ended
///   ([`Entry::stale_until`]), nor one invalidated by a tag;
/// - read whatever they cannot decode or check as a miss (and drop it);
/// - never lose a remove or tag invalidation: one that cannot be applied
///   now is kept and applied before the store serves again (then the call
///   may answer `Ok`), and a write that fails never leaves an older value
///   to be served;
/// - be safe to call from many tasks at once.
///
/// A store shared by several instances (an L2) also orders **key removes
/// against loads**: a [`remove`](Store::remove) moves the invalidation
/// version forward and leaves a tombstone of that version under the key,
/// and a [`put`](Store::put) of an entry whose [`Entry::version`] is older
/// than the key's tombstone (a value read from the origin before the
/// remove, by whichever instance) is refused. And it hands out
/// [`lease`](Store::lease)s, so that one instance loads a key while the
/// others wait for its value. A store held by one process alone
/// ([`MemoryStore`]) needs neither: the engine orders both within a
/// process.
pub trait Store: Send + Sync + 'static {
    /// Reads the entry stored under `key`.
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send + 'a;

    /// Stores `entry` under `key`, replacing what was there. The store keeps
    /// it at most until [`Entry::stale_until`].
    ///
    /// A shared store refuses (answering `Ok`) an entry whose
    /// [`Entry::version`] is older than the tombstone a
    /// [`remove`](Store::remove) of `key` left: it was read from the origin
    /// before that remove.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Removes the entry under `key`, if any. A shared store moves its
    /// invalidation [`version`](Store::version) forward, leaves a tombstone
    /// of it under `key` (which refuses the [`put`](Store::put) of a value
    /// loaded before this call, for as long as the store keeps tombstones)
    /// and drops the key's [`lease`](Store::lease), so that an instance
    /// waiting for the value loads it anew.
    fn remove<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Invalidates every entry carrying `tag` that was stored before this
    /// call, and every entry whose [`Entry::version`] was read before it.
    /// Entries loaded afterwards are unaffected.
    fn remove_tag<'a>(
        &'a self,
        tag: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// The store's current invalidation version: read it before reading a
    /// value from its origin and record it in [`Entry::version`], and an
    /// invalidation that happens while the value is being read makes the
    /// entry invalid. Never moves backwards.
    ///
    /// Default: `0`, for a store that keeps no version (the engine orders
    /// invalidations within one process by itself).
    fn version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send + '_ {
        std::future::ready(Ok(0))
    }

    /// [`Store::get`], with the store's invalidation
    /// [`version`](Store::version) read in the same call: what a caller
    /// about to load on a miss records, without a second trip to the
    /// store. The version may be older than the store's latest (that only
    /// refuses more), never newer.
    ///
    /// Default: `get`, then `version`.
    fn get_versioned<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(Option<Entry>, u64), StoreError>> + Send + 'a {
        async move {
            let entry = self.get(key).await?;
            Ok((entry, self.version().await?))
        }
    }

    /// The entry under `key` when this process holds it and can read it
    /// without waiting: the hit path, which needs no future. `now_ms` is
    /// the time of the read on the cache's clock ([`now_ms`](crate::now_ms)),
    /// which the caller has read already. `None` when the entry is not
    /// held here (it may still be in the store: ask [`Store::get`]). What
    /// it returns obeys the rules of `get`.
    ///
    /// Default: `None`, for a store that holds nothing in process.
    fn resident(&self, key: &str, now_ms: u64) -> Option<Resident> {
        let _ = (key, now_ms);
        None
    }

    /// Takes the lease on loading `key` for at most `ttl`, under `token`
    /// (random per load): [`Lease::Granted`] when the caller now holds it
    /// ([`Lease::GrantedOverValue`] when `key` also has a value stored),
    /// [`Lease::Taken`] when another does. A lease ends when its holder
    /// [`release`](Store::release)s it, when `ttl` runs out (its holder
    /// died), or at a [`remove`](Store::remove) of `key`.
    ///
    /// Default: [`Lease::Local`], for a store not shared between instances.
    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send + 'a {
        let _ = (key, token, ttl);
        std::future::ready(Ok(Lease::Local))
    }

    /// Gives up the lease on `key` if `token` still holds it (a lease that
    /// expired and was taken by another is left to its new holder): what
    /// a load that stores nothing (it failed, timed out, or its value is
    /// not cacheable) does when it is done.
    ///
    /// Default: nothing to do.
    fn release<'a>(
        &'a self,
        key: &'a str,
        token: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        let _ = (key, token);
        std::future::ready(Ok(()))
    }

    /// [`put`](Store::put), then [`release`](Store::release) of the lease
    /// `token` holds: what a load that held `key`'s lease stores. The
    /// lease is released whether or not the write was taken.
    ///
    /// Default: `put`, then `release`; a shared store does both in one
    /// round trip.
    fn put_released<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
        token: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        async move {
            let put = self.put(key, entry).await;
            self.release(key, token).await?;
            put
        }
    }
}

/// A boxed future returned by [`DynStore`].
pub type BoxStoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The object-safe twin of [`Store`], implemented for every `Store`.
///
/// Use it through [`SharedStore`]; `SharedStore` itself implements `Store`.
pub trait DynStore: Send + Sync + 'static {
    /// See [`Store::get`].
    fn get_dyn<'a>(&'a self, key: &'a str) -> BoxStoreFuture<'a, Option<Entry>>;
    /// See [`Store::put`].
    fn put_dyn<'a>(&'a self, key: &'a str, entry: Entry) -> BoxStoreFuture<'a, ()>;
    /// See [`Store::remove`].
    fn remove_dyn<'a>(&'a self, key: &'a str) -> BoxStoreFuture<'a, ()>;
    /// See [`Store::remove_tag`].
    fn remove_tag_dyn<'a>(&'a self, tag: &'a str) -> BoxStoreFuture<'a, ()>;
    /// See [`Store::version`].
    fn version_dyn(&self) -> BoxStoreFuture<'_, u64>;
    /// See [`Store::get_versioned`].
    fn get_versioned_dyn<'a>(&'a self, key: &'a str) -> BoxStoreFuture<'a, (Option<Entry>, u64)>;
    /// See [`Store::resident`].
    fn resident_dyn(&self, key: &str, now_ms: u64) -> Option<Resident>;
    /// See [`Store::lease`].
    fn lease_dyn<'a>(
        &'a self,
        key: &'a str,
        token: u64,
        ttl: Duration,
    ) -> BoxStoreFuture<'a, Lease>;
    /// See [`Store::release`].
    fn release_dyn<'a>(&'a self, key: &'a str, token: u64) -> BoxStoreFuture<'a, ()>;
    /// See [`Store::put_released`].
    fn put_released_dyn<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
        token: u64,
    ) -> BoxStoreFuture<'a, ()>;
}

impl<St: Store> DynStore for St {
    fn resident_dyn(&self, key: &str, now_ms: u64) -> Option<Resident> {
        self.resident(key, now_ms)
    }
    fn get_dyn<'a>(&'a self, key: &'a str) -> BoxStoreFuture<'a, Option<Entry>> {
        Box::pin(self.get(key))
    }
    fn put_dyn<'a>(&'a self, key: &'a str, entry: Entry) -> BoxStoreFuture<'a, ()> {
        Box::pin(self.put(key, entry))
    }
    fn remove_dyn<'a>(&'a self, key: &'a str) -> BoxStoreFuture<'a, ()> {
        Box::pin(self.remove(key))
    }
    fn remove_tag_dyn<'a>(&'a self, tag: &'a str) -> BoxStoreFuture<'a, ()> {
        Box::pin(self.remove_tag(tag))
    }
    fn version_dyn(&self) -> BoxStoreFuture<'_, u64> {
        Box::pin(self.version())
    }
    fn get_versioned_dyn<'a>(&'a self, key: &'a str) -> BoxStoreFuture<'a, (Option<Entry>, u64)> {
        Box::pin(self.get_versioned(key))
    }
    fn lease_dyn<'a>(
        &'a self,
        key: &'a str,
        token: u64,
        ttl: Duration,
    ) -> BoxStoreFuture<'a, Lease> {
        Box::pin(self.lease(key, token, ttl))
    }
    fn release_dyn<'a>(&'a self, key: &'a str, token: u64) -> BoxStoreFuture<'a, ()> {
        Box::pin(self.release(key, token))
    }
    fn put_released_dyn<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
        token: u64,
    ) -> BoxStoreFuture<'a, ()> {
        Box::pin(self.put_released(key, entry, token))
    }
}

/// A store chosen at run time: a cheap-to-clone handle on any [`Store`].
///
/// ```
/// use tower_cache::store::{MemoryStore, SharedStore};
///
/// let store = SharedStore::new(MemoryStore::default());
/// let also = store.clone(); // the same store
/// # let _ = also;
/// ```
#[derive(Clone)]
pub struct SharedStore(Arc<dyn DynStore>);

impl SharedStore {
    /// Wraps `store`.
    pub fn new(store: impl Store) -> Self {
        SharedStore(Arc::new(store))
    }
}

impl From<Arc<dyn DynStore>> for SharedStore {
    fn from(store: Arc<dyn DynStore>) -> Self {
        SharedStore(store)
    }
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStore")
    }
}

impl Store for SharedStore {
    fn resident(&self, key: &str, now_ms: u64) -> Option<Resident> {
        self.0.resident_dyn(key, now_ms)
    }
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send + 'a {
        self.0.get_dyn(key)
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.0.put_dyn(key, entry)
    }
    fn remove<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.0.remove_dyn(key)
    }
    fn remove_tag<'a>(
        &'a self,
        tag: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.0.remove_tag_dyn(tag)
    }
    fn version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send + '_ {
        self.0.version_dyn()
    }
    fn get_versioned<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(Option<Entry>, u64), StoreError>> + Send + 'a {
        self.0.get_versioned_dyn(key)
    }
    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send + 'a {
        self.0.lease_dyn(key, token, ttl)
    }
    fn release<'a>(
        &'a self,
        key: &'a str,
        token: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.0.release_dyn(key, token)
    }
    fn put_released<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
        token: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.0.put_released_dyn(key, entry, token)
    }
}

impl<St: Store> Store for Arc<St> {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send + 'a {
        (**self).get(key)
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        (**self).put(key, entry)
    }
    fn remove<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        (**self).remove(key)
    }
    fn remove_tag<'a>(
        &'a self,
        tag: &'a str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        (**self).remove_tag(tag)
    }
    fn version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send + '_ {
        (**self).version()
    }
    fn get_versioned<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<(Option<Entry>, u64), StoreError>> + Send + 'a {
        (**self).get_versioned(key)
    }
    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send + 'a {
        (**self).lease(key, token, ttl)
    }
    fn release<'a>(
        &'a self,
        key: &'a str,
        token: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        (**self).release(key, token)
    }
    fn put_released<'a>(
        &'a self,
        key: &'a str,
        entry: Entry,
        token: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        (**self).put_released(key, entry, token)
    }
}
