//! Caching middleware for [tower](https://docs.rs/tower) services.
//!
//! tower-cache puts a cache in front of any `tower::Service` (an axum
//! route, a tonic service, a repository) and lets each route choose its
//! strategy in code. Underneath is one byte-level [`Store`]
//! trait with an in-process L1 on moka ([`MemoryStore`](store::MemoryStore)),
//! a shared L2 on Redis ([`RedisStore`](store::RedisStore)) and a
//! [`TieredStore`](store::TieredStore) that combines them, keeps every
//! instance's L1 coherent through Redis pub/sub and keeps serving from L1
//! when Redis goes away.
//!
//! # The store in use
//!
//! ```
//! use std::time::Duration;
//! use tower_cache::store::{MemoryStore, Store};
//! use tower_cache::Entry;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let l1 = MemoryStore::new(64 * 1024 * 1024); // bounded in bytes
//! let entry = Entry::new("{\"id\":1}")
//!     .with_ttl(Duration::from_secs(30))     // fresh for 30 s
//!     .with_stale(Duration::from_secs(300))  // then servable stale for 5 min
//!     .with_tags(["product:1"]);
//! l1.put("GET /products/1", entry).await.unwrap();
//! assert!(l1.get("GET /products/1").await.unwrap().is_some());
//!
//! l1.remove_tag("product:1").await.unwrap(); // everything tagged is gone
//! assert!(l1.get("GET /products/1").await.unwrap().is_none());
//! # }
//! ```
//!
//! With Redis, build a [`TieredStore`](store::TieredStore) from a
//! `MemoryStore` and a [`RedisStore`](store::RedisStore); it is used the
//! same way.
//!
//! # Examples
//!
//! The crate's `examples/` directory holds one small program per idea.
//! The first six check what they show and exit (the HTTP ones serve an
//! axum app on a free port and send it their own requests), and
//! `cargo test` runs them. Run one with
//! `cargo run -p tower-cache --example cache_aside`.
//!
//! | example | what it shows |
//! |---|---|
//! | `cache_aside` | an axum route behind `CacheAsideLayer`: `MISS`, then `HIT`; a `PUT` invalidates; a stampede makes one load (Redis as L2 with `REDIS_URL`) |
//! | `read_through` | a typed repository behind [`ReadThroughLayer`], held in an axum state as `ReadThrough<UserRepo>`; not-found answers cached |
//! | `write_through` | [`WriteThroughLayer`] and [`ReadThroughLayer`] over one repository: the read after a write is a hit with the new value |
//! | `write_behind` | [`WriteBehindLayer`]: writes answered `202` at once, cached, and delivered as one coalesced batch |
//! | `refresh_ahead` | [`RefreshAheadLayer`]: a key read every second never expires into a miss (on tokio's paused clock) |
//! | `tonic_service` | a unary tonic method cached with `CacheAsideLayer::tonic_method` (feature `tonic`), called twice over TCP |
//! | `quick_start` | README's quick start: a product route behind `CacheAsideLayer`, served on `127.0.0.1:3000` |
//! | `reverse_proxy` | a caching reverse proxy in the shared-cache mode (RFC 9111) in front of one upstream |
//!
//! # Which `Cache`
//!
//! Every type with a store parameter defaults it to
//! [`SharedStore`](store::SharedStore): build the cache with
//! `Cache::new(SharedStore::new(store))` and name the layers without it
//! (`ReadThrough<UserRepo>`, `WriteBehind<u64, i64>`). A cache over a
//! concrete store, `Cache::new(MemoryStore::default())`, is a
//! `Cache<MemoryStore>`, and every layer built from it carries
//! `MemoryStore` in its type (see [`Cache::new`]).
//!
//! # Keys that exist nowhere, and a warm start
//!
//! An [`ExistenceFilter`](filter::ExistenceFilter) (a Bloom filter of the
//! keys that exist, built from a key source at start-up and optionally
//! shared through Redis) lets [`CacheAsideLayer::existence_filter`] and
//! [`ReadThroughLayer::existence_filter`] answer a random missing id
//! without the origin. [`Cache::warm`], [`CacheAsideLayer::warm`] and
//! [`ReadThrough::warm`] load a list of keys before traffic.
//!
//! # Metrics
//!
//! Layers and stores report through the [`metrics`](https://docs.rs/metrics)
//! facade: requests per route by how they were answered (hit, stale, miss,
//! coalesced, bypass), loads, L1 and L2 hits, the Redis circuit breaker,
//! pending invalidations, the write-behind queue. Each is described and
//! reads 0 from the moment its layer or store is built; [`metrics`]
//! lists them all.
//!
//! # Feature flags
//!
//! - `redis` (default): [`RedisStore`](store::RedisStore),
//!   [`TieredStore`](store::TieredStore) and the durable write-behind log
//!   [`RedisQueue`](store::RedisQueue). Only `store/redis/` and
//!   `store/tiered/` use the redis crate.
//! - `http` (default): the HTTP adapter.
//! - `tonic`: `CacheAsideLayer::tonic_method`, which caches a unary
//!   method of a tonic service in one call (implies `http`).
//! - `fuzzing`: entry points into the decoders, the `Cache-Control` parser
//!   and the key builder for the fuzz targets under `fuzz/`; not for use
//!   in applications.

mod clock;
pub mod codec;
pub mod engine;
pub mod entry;
pub mod filter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "http")]
pub mod http;
pub mod layer;
#[cfg(any(feature = "http", feature = "redis"))]
mod memo;
pub mod metrics;
pub mod store;
mod sync;
#[cfg(test)]
mod test_support;

pub use clock::now_ms;
pub use engine::{
    Cache, CacheBuilder, Fetched, Fill, JoinedError, LoadError, Loaded, Loader, PendingFill,
    Policy, Profile, ProfileStats, WarmReport,
};
pub use entry::{DecodeError, Entry};
#[cfg(feature = "http")]
pub use http::{CacheStatus, RequestClass};
#[cfg(feature = "http")]
pub use layer::cache_aside::{CacheAside, CacheAsideLayer};
pub use layer::read_through::{ReadThrough, ReadThroughLayer};
pub use layer::refresh_ahead::{RefreshAhead, RefreshAheadLayer};
pub use layer::write::Write;
pub use layer::write_behind::{WriteBehind, WriteBehindHandle, WriteBehindLayer};
pub use layer::write_through::{WriteThrough, WriteThroughLayer};
pub use store::{Store, StoreError};
