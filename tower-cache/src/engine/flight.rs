//! Single-flight: one load per key at a time, its outcome shared.

use std::collections::HashMap;

use tokio::sync::watch;

use super::JoinedError;
use crate::entry::Entry;
use crate::sync::{Arc, Mutex, PoisonError};

/// The loads in flight, by key.
#[derive(Default)]
pub(crate) struct FlightMap {
    map: Mutex<HashMap<Box<str>, Arc<Flight>>>,
}

/// A caller's part in the load of a key.
pub(crate) enum Role {
    /// It runs the load and publishes the outcome.
    Leader(FlightGuard),
    /// Another caller runs it; wait for its outcome.
    Waiter(Arc<Flight>),
}

impl FlightMap {
    /// Joins the load of `key` in flight, or starts one led by the caller.
    pub(crate) fn join_or_lead(flights: &Arc<Self>, key: &str) -> Role {
        let mut map = flights.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = map.get(key) {
            return Role::Waiter(flight.clone());
        }
        let flight = Arc::new(Flight::new());
        map.insert(key.into(), flight.clone());
        drop(map);
        Role::Leader(FlightGuard::new(flights.clone(), key, flight))
    }

    /// Forgets the load of `key` in flight, if any: callers from now on
    /// start a new one instead of waiting for it. Its leader still
    /// publishes to those already waiting.
    pub(crate) fn forget(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

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

    /// Frees the key, unless it was forgotten and another load of it
    /// started since.
    fn release(&self) {
        let mut map = self.map.map.lock().unwrap_or_else(PoisonError::into_inner);
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
