//! Durable recovery: reading back what the log holds for this consumer,
//! claiming what dead consumers abandoned, and the heartbeat that keeps
//! this consumer's own entries.

use std::time::Duration;

use super::config::Config;
use super::durable::Durable;
use super::{EntryId, LogEntry};
use crate::layer::write::Write;

/// Failures of the log tolerated while the worker starts, before it gives
/// up recovering and leaves the rest to later sweeps.
const START_ATTEMPTS: u32 = 5;

/// Reads back, page by page, what the log holds for this consumer: first
/// its own pending entries (left by a previous run under the same consumer
/// identity), then those other consumers abandoned.
pub(super) struct Recovery<K, V> {
    durable: Durable<K, V>,
    config: Config,
    failures: u32,
    /// Own pending entries: where the next page starts; `None` once read.
    #[expect(
        clippy::option_option,
        reason = "`None` once read, `Some(None)` from the start: `take()?` reads both"
    )]
    own: Option<Option<EntryId>>,
}

impl<K, V> Recovery<K, V> {
    pub fn new(durable: Durable<K, V>, config: Config) -> Self {
        Recovery {
            durable,
            config,
            failures: 0,
            own: Some(None),
        }
    }

    /// Opens the log, retrying with backoff while it cannot be reached.
    pub async fn open(&mut self) {
        while let Err(error) = self.durable.log.open().await {
            if self.failures >= START_ATTEMPTS {
                tracing::error!(%error, "cannot open the durable log; what it holds is delivered later");
                return;
            }
            self.failures += 1;
            tracing::warn!(%error, "cannot reach the durable log yet; retrying");
            tokio::time::sleep(self.config.backoff(self.failures)).await;
        }
    }

    /// The next page of this consumer's own pending writes, oldest first;
    /// `None` once they are all read (or the log cannot be read).
    pub async fn own_page(&mut self) -> Option<Vec<(EntryId, Write<K, V>)>> {
        let after = self.own.take()?;
        let page = loop {
            match self
                .durable
                .log
                .own_pending(after.as_ref(), self.config.max_batch)
                .await
            {
                Ok(page) => break page,
                Err(error) if self.failures < START_ATTEMPTS => {
                    self.failures += 1;
                    tracing::warn!(%error, "cannot read the durable log yet; retrying");
                    tokio::time::sleep(self.config.backoff(self.failures)).await;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the durable log; what it holds is delivered later");
                    return None;
                }
            }
        };
        let last = page.last()?.id.clone();
        self.own = Some(Some(last));
        Some(decode(&self.durable, page).await)
    }
}

/// Claims, page by page, the entries other consumers left idle for the
/// log's `claim_after`.
pub(super) struct Claims<K, V> {
    durable: Durable<K, V>,
    page: usize,
    /// Where the next page starts; `None` once the scan is over.
    #[expect(
        clippy::option_option,
        reason = "`None` once over, `Some(None)` from the start: `take()?` reads both"
    )]
    next: Option<Option<EntryId>>,
}

impl<K, V> Claims<K, V> {
    pub fn new(durable: Durable<K, V>, page: usize) -> Self {
        Claims {
            durable,
            page,
            next: Some(None),
        }
    }

    /// The writes of the next page of claimed entries (possibly none, when
    /// every entry of the page is still owned); `None` once the scan is
    /// over, or the log cannot be read (tried again at the next sweep).
    pub async fn next_page(&mut self) -> Option<Vec<(EntryId, Write<K, V>)>> {
        let after = self.next.take()?;
        let claimed = match self
            .durable
            .log
            .claim_abandoned(after.as_ref(), self.page)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot claim abandoned entries of the durable log; trying again later");
                return None;
            }
        };
        self.next = claimed.next.map(Some);
        Some(decode(&self.durable, claimed.entries).await)
    }
}

/// The writes of `entries`; an entry that does not decode is logged and
/// acknowledged, so that it is not read again.
async fn decode<K, V>(
    durable: &Durable<K, V>,
    entries: Vec<LogEntry>,
) -> Vec<(EntryId, Write<K, V>)> {
    let mut writes = Vec::with_capacity(entries.len());
    for entry in entries {
        match (durable.decode)(&entry.payload) {
            Ok(write) => writes.push((entry.id, write)),
            Err(error) => {
                tracing::error!(%error, id = %entry.id, "dropping an undecodable entry of the durable log");
                let _ = durable.log.acknowledge(&[entry.id]).await;
            }
        }
    }
    writes
}

/// Keeps this consumer's entries from being claimed by another while the
/// worker runs: it is polled inside the worker's task and stops with it.
pub(super) async fn heartbeat<K, V>(durable: Durable<K, V>) {
    let every = durable.log.claim_after_idle() / 4;
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = durable.log.heartbeat().await {
            tracing::warn!(%error, "cannot keep this consumer's pending writes; another consumer may deliver them too");
        }
    }
}
