//! Write-behind: acknowledge writes at once, deliver them in batches.
//!
//! [`WriteBehindLayer`] wraps a batch writer, a
//! `Service<Vec<Write<K, V>>>` (one call per batch, so a database can apply
//! it in one transaction), and gives a `Service<Write<K, V>>` that answers
//! as soon as the write is queued. A worker task delivers the queue:
//!
//! - **Batching**: a batch goes out when it holds
//!   [`max_batch`](WriteBehindLayer::max_batch) keys or
//!   [`max_delay`](WriteBehindLayer::max_delay) after its first write,
//!   whichever comes first.
//! - **Coalescing**: writes to one key inside a batch collapse to the last
//!   one, or, with [`merge`](WriteBehindLayer::merge), to their merge (1,000
//!   increments become one write of the sum). Writes to one key reach the
//!   writer in the order they were acknowledged. In durable mode, writes
//!   read back from the log after a crash are not coalesced: a key may
//!   then appear several times in a batch, in order.
//! - **Backpressure**: the queue is bounded
//!   ([`queue_capacity`](WriteBehindLayer::queue_capacity)); when it is
//!   full, `poll_ready` is pending until the writer catches up. Memory does
//!   not grow and no write is dropped.
//! - **Failures**: a failed batch is retried with exponential backoff and
//!   jitter, up to [`max_retries`](WriteBehindLayer::max_retries); what
//!   still fails goes to the [`dead_letter`](WriteBehindLayer::dead_letter)
//!   handler (by default an error log line with the keys) and is counted.
//! - **The cache**: without a merge function a write also sets the cache
//!   before it is acknowledged, so a read after it is a hit with the new
//!   value; with one, the cache keeps the writer's value and
//!   [`WriteBehindHandle::pending`] gives what is not delivered yet.
//!
//! # What survives what
//!
//! - **Graceful shutdown** ([`WriteBehindHandle::shutdown`], or dropping
//!   every service and handle): every acknowledged write reaches the writer
//!   (or, after its retries, the dead-letter handler).
//! - **A crash of the process**: without durable mode, the writes already
//!   delivered survive and those still queued in memory are lost (call
//!   [`WriteBehindHandle::flush`] where a write must reach the writer
//!   before you go on). In [durable mode](WriteBehindLayer::durable), every
//!   acknowledged write survives: it is in a [`DurableLog`] until the
//!   writer has it; with a [`RedisQueue`](crate::store::RedisQueue), in a
//!   Redis Stream, in this process's pending list of the stream's consumer
//!   group. A restart under the same consumer name delivers it at
//!   once; otherwise any live process on the same queue claims it once it
//!   has been idle for the log's
//!   [`claim_after_idle`](DurableLog::claim_after_idle).
//!   Delivery is at least once: writes the writer took just before the
//!   crash are delivered again, each with the same
//!   [log ids](crate::Write::log_ids), with which a writer that records
//!   them applies every acknowledged write exactly once (see
//!   [`WriteBehindLayer::durable`]).
//! - **A Redis outage**: without durable mode nothing is lost; the queue is
//!   in process memory and the writer does not go through Redis (only the
//!   cached copy may live in L1 alone until Redis returns). In durable mode
//!   a write that cannot be appended is refused with
//!   [`DurableLogUnavailable`] instead of being acknowledged; what was
//!   acknowledged before is still delivered (its log entry is removed once
//!   Redis is back, or delivered again after a restart). A write refused
//!   because Redis answered too late may still have been appended, and is
//!   then delivered by the next process that recovers the log.
//! - **Losing Redis's data** (a restart without persistence): durable mode
//!   then survives a crash only as well as Redis keeps its data; run Redis
//!   with AOF persistence for the log.
//!
//! # Tasks
//!
//! [`Layer::layer`](tower_layer::Layer::layer) spawns the worker as the
//! task `tower_cache.write_behind` (a tracing span with the layer's name);
//! [`WriteBehindLayer::pair`] hands it back instead, as a
//! [`WriteBehindWorker`] future for you to spawn or poll. Without a merge
//! function, or in durable mode, each write also runs on a short task of
//! its own (`tower_cache.write_behind.write`), so that it is cached and
//! logged even when its caller stops waiting. The queue owns these tasks:
//! [`WriteBehindHandle::shutdown`] returns once every one has finished. In
//! durable mode the worker also sends the log's heartbeats, inside its own
//! task, and stops them when it stops.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceExt, service_fn};
//! use tower_cache::store::{MemoryStore, SharedStore};
//! use tower_cache::{Cache, Policy, Write, WriteBehindLayer};
//! use tower_layer::Layer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower::BoxError> {
//! let cache = Cache::new(SharedStore::new(MemoryStore::default()));
//! let views = WriteBehindLayer::<u64, i64>::new(cache, "views", Policy::default())
//!     .namespace("views:")
//!     .max_batch(500)
//!     .max_delay(Duration::from_millis(250))
//!     .merge(|a, b| a + b)
//!     .layer(service_fn(|batch: Vec<Write<u64, i64>>| async move {
//!         // UPDATE products SET views = views + ? WHERE id = ?, in one transaction
//!         Ok::<_, std::io::Error>(())
//!     }));
//! let handle = views.handle();
//! for _ in 0..3 {
//!     views.clone().oneshot(Write::new(7, 1)).await?; // acknowledged at once
//! }
//! assert_eq!(handle.pending(&7), Some(3));
//! handle.shutdown().await; // everything delivered
//! assert_eq!(handle.pending(&7), None);
//! # Ok(()) }
//! ```

mod batch;
mod config;
mod deliver;
mod durable;
mod error;
mod future;
mod handle;
mod layer;
mod queue;
mod recover;
mod service;
mod worker;

pub use config::{
    DEFAULT_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_BATCH, DEFAULT_MAX_DELAY,
    DEFAULT_MAX_RETRIES, DEFAULT_QUEUE_CAPACITY,
};
pub use deliver::DeadLetter;
pub use durable::{Claimed, DurableLog, EntryId, LogEntry};
pub use error::{DurableLogUnavailable, WriteBehindClosed, WriterError};
pub use future::ResponseFuture;
pub use handle::WriteBehindHandle;
pub use layer::WriteBehindLayer;
pub use queue::WriteBehindStats;
pub use service::WriteBehind;
pub use worker::WriteBehindWorker;

#[cfg(test)]
mod tests;
