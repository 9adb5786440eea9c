//! Single-flight: one load per key at a time, its outcome shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::JoinedError;
use crate::entry::Entry;

/// The loads in flight, by key.
pub(crate) type FlightMap = Mutex<HashMap<Box<str>, Arc<Flight>>>;

/// The outcome of a load, as every waiter sees it.
#[derive(Clone)]
pub(crate) enum Shared {
    Stored(Entry),
    /// Not cacheable: each waiter loads for itself.
    Pass,
    Failed(JoinedError),
    Timeout,
    Aborted,
}

/// One load in flight. Waiters hold an `Arc` and wait on the channel.
pub(crate) struct Flight {
    tx: watch::Sender<Option<Shared>>,
}

impl Flight {
    pub(crate) fn new() -> Self {
        Flight {
            tx: watch::Sender::new(None),
        }
    }

    /// Waits for the outcome. Returns at once when it is already known.
    pub(crate) async fn wait(&self) -> Shared {
        let mut rx = self.tx.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.as_ref().cloned().unwrap_or(Shared::Aborted),
            Err(_) => Shared::Aborted,
        }
    }
}

/// Held by whoever runs the load. Publishing the outcome or being dropped
/// (the load panicked or its task was stopped) wakes the waiters and frees
/// the key.
pub(crate) struct FlightGuard {
    map: Arc<FlightMap>,
    key: Box<str>,
    flight: Arc<Flight>,
    finished: bool,
}

impl FlightGuard {
    pub(crate) fn new(map: Arc<FlightMap>, key: &str, flight: Arc<Flight>) -> Self {
        FlightGuard {
            map,
            key: key.into(),
            flight,
            finished: false,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Publishes the outcome to every waiter and frees the key.
    pub(crate) fn finish(&mut self, outcome: Shared) {
        self.flight.tx.send_replace(Some(outcome));
        self.finished = true;
        self.release();
    }

    fn release(&self) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            map.remove(&self.key);
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.flight.tx.send_replace(Some(Shared::Aborted));
            self.release();
        }
    }
}
