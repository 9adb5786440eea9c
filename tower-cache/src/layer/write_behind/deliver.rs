//! Delivery of a batch to the writer: retries with backoff, then dead letters.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tower::{BoxError, ServiceExt};
use tower_service::Service;

use super::WriterError;
use super::batch::Batch;
use super::config::Config;
use super::queue::Shared;
use crate::layer::write::Write;

/// The writes of a batch that failed after every retry.
#[derive(Debug)]
pub struct DeadLetter<K, V> {
    /// The coalesced writes, as the writer was given them.
    pub writes: Vec<Write<K, V>>,
    /// The writer's last error.
    pub error: WriterError,
    /// How many times the batch was tried.
    pub attempts: u32,
}

pub(super) type DeadLetterFn<K, V> = Arc<dyn Fn(DeadLetter<K, V>) + Send + Sync>;

/// Hands batches to the writer.
pub(super) struct Delivery<S, K, V> {
    pub writer: S,
    pub config: Config,
    pub dead_letter: Option<DeadLetterFn<K, V>>,
    pub shared: Arc<Shared<V>>,
}

impl<S, K, V> Delivery<S, K, V>
where
    S: Service<Vec<Write<K, V>>>,
    S::Error: Into<BoxError>,
    K: Clone,
    V: Clone,
{
    /// Hands `writes` (what `batch` holds, as the writer is to see it) to
    /// the writer, retrying with backoff; what still fails after
    /// [`Config::max_retries`] goes to the dead-letter handler (by default
    /// an error log line with the keys). Counts both in
    /// [`WriteBehindStats`](super::WriteBehindStats); returns whether the writer took the batch.
    pub async fn deliver(&mut self, writes: Vec<Write<K, V>>, batch: &Batch<K, V>) -> bool {
        let c = &self.shared.counters;
        c.coalesced
            .add(batch.items().saturating_sub(writes.len()) as u64);
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        let outcome = loop {
            // Errors become `BoxError` at once: the writer's need not be `Send`.
            let result: Result<(), BoxError> = match self.writer.ready().await.map_err(Into::into) {
                Ok(ready) => ready
                    .call(writes.clone())
                    .await
                    .map(drop)
                    .map_err(Into::into),
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => break Ok(()),
                Err(error) if attempt >= self.config.max_retries => break Err(error),
                Err(error) => {
                    attempt += 1;
                    c.retries.incr();
                    let wait = self.config.backoff(attempt);
                    tracing::warn!(%error, attempt, ?wait, writes = writes.len(), "write-behind batch failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        match outcome {
            Ok(()) => {
                c.batches.incr();
                c.delivered
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                c.flush_seconds.record(started.elapsed().as_secs_f64());
                true
            }
            Err(error) => {
                let error = WriterError::new(error);
                c.dead_letters.add(writes.len() as u64);
                let keys: Vec<&str> = batch.keys().collect();
                let attempts = attempt + 1;
                if let Some(handler) = &self.dead_letter {
                    tracing::warn!(%error, ?keys, "write-behind batch given to the dead-letter handler");
                    handler(DeadLetter {
                        writes,
                        error,
                        attempts,
                    });
                } else {
                    tracing::error!(
                        %error,
                        ?keys,
                        attempts,
                        "write-behind batch failed after every retry; these writes did not reach the writer"
                    );
                }
                false
            }
        }
    }
}
