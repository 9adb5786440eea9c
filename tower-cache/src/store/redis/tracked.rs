//! A single node's hit as one `GET`: a connection of the store's own, in
//! RESP3, on which Redis tracks the namespace's invalidation counter
//! (`CLIENT TRACKING ON OPTIN`, Redis's client-side caching), so that the
//! counter need not be read beside every entry.
//!
//! # Why one `GET` decides as the `MGET` did
//!
//! A hit on the store's main connection reads the entry and the counter
//! in one `MGET` (see `read.rs`): the counter tells whether the
//! invalidation versions known in process are those Redis holds. On the
//! tracked connection the counter is read once, as `CLIENT CACHING yes`
//! then `GET counter`, and Redis then sends an invalidation message on
//! this same connection the next time anything changes the counter key
//! (an invalidation, a delete, an expiry, an eviction, a flush). Redis
//! appends that message to the connection's output as soon as the
//! command that changed the key ends, so before the reply to any command
//! that runs after that change; redis-rs hands each message to the
//! store's callback, in the order they came, before it hands on any reply
//! that came after it. So, with `epoch` the number of messages seen on
//! the connection:
//!
//! - a `GET` of the entry whose reply arrives while `epoch` is still the
//!   one the counter was read at (no message came in between) ran while
//!   the counter held the value read: the entry is decided on that value,
//!   as if the `MGET` had brought it back;
//! - any message ends that: the counter read is forgotten (the key is no
//!   longer tracked either, until read again) and the next read sends
//!   `CLIENT CACHING yes`, `GET counter`, `GET entry` in one pipeline,
//!   which reads the counter again and serves the read in the same round
//!   trip (the counter is tracked from its `GET` on, so a change before
//!   the entry's `GET` sends a message before the entry's reply, and the
//!   counter read is then not used);
//! - a read whose reply comes after a message is decided as one that
//!   found no counter: the versions are read again.
//!
//! While the connection is not up (not made yet, broken, or refused by a
//! server without RESP3 or client tracking), reads go through the main
//! connection's `MGET`. The connection is remade in the background.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::read::counter;
use super::redis_error;
use crate::store::StoreError;

/// Bits of the armed word that hold the epoch the counter was read at.
const EPOCH_BITS: u32 = 10;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
/// The largest counter the armed word holds (2^53 - 1: Redis's clock in
/// microseconds until the year 2255).
const MAX_ARMED_COUNTER: u64 = (1 << (63 - EPOCH_BITS)) - 1;

/// The tracked connection of one store, remade in the background while
/// the store lives.
pub(super) struct Tracker {
    link: ArcSwapOption<Link>,
    wake: Arc<Notify>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Wakes the keeper, which finds the tracker gone and ends.
        self.wake.notify_one();
    }
}

/// One tracked connection and what its messages say.
pub(super) struct Link {
    conn: MultiplexedConnection,
    state: Arc<LinkState>,
}

#[derive(Debug, Default)]
struct LinkState {
    /// Messages seen on the connection.
    epoch: AtomicU64,
    /// The counter read at an epoch, packed as `counter << 11 | epoch
    /// << 1 | 1`; 0 while none is known.
    armed: AtomicU64,
    /// Set once the connection is closed.
    dead: AtomicBool,
}

impl LinkState {
    /// A message came: whatever was read before it may have changed.
    fn message(&self, kind: &PushKind, wake: &Notify) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.armed.store(0, Ordering::SeqCst);
        if *kind == PushKind::Disconnection {
            self.dead.store(true, Ordering::SeqCst);
            wake.notify_one();
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The counter read at `epoch`, when it is the current one.
    fn armed_at(&self, epoch: u64) -> Option<u64> {
        let armed = self.armed.load(Ordering::SeqCst);
        (armed & 1 == 1 && (armed >> 1) & EPOCH_MASK == epoch & EPOCH_MASK)
            .then_some(armed >> (EPOCH_BITS + 1))
    }

    /// Records `counter` as read at `epoch`. One stored late (after a
    /// message cleared the word) carries an epoch that is no longer the
    /// current one, and the next message clears it again, so it never
    /// decides a read.
    fn arm(&self, counter: u64, epoch: u64) {
        if counter <= MAX_ARMED_COUNTER {
            let word = counter << (EPOCH_BITS + 1) | (epoch & EPOCH_MASK) << 1 | 1;
            self.armed.store(word, Ordering::SeqCst);
        }
    }
}

/// What a read on the tracked connection brings back: the entry's bytes
/// (none for no key, or a key of another type) and the counter's value at
/// the instant the entry was read, when that is known.
pub(super) type Read = (Option<Vec<u8>>, Option<u64>);

impl Tracker {
    /// A tracker for the single node `client` connects to, making its
    /// connection in the background (within the current Tokio runtime;
    /// none outside one).
    pub(super) fn start(client: &Client, connect_timeout: Duration) -> Option<Arc<Tracker>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings)).ok()?;
        let tracker = Arc::new(Tracker {
            link: ArcSwapOption::empty(),
            wake: Arc::new(Notify::new()),
        });
        runtime.spawn(keep(Arc::downgrade(&tracker), client, connect_timeout));
        Some(tracker)
    }

    /// The connection, while it is up.
    pub(super) fn link(&self) -> Option<Arc<Link>> {
        let link = self.link.load_full()?;
        (!link.state.dead.load(Ordering::Relaxed)).then_some(link)
    }
}

impl Link {
    /// Reads the entry at `rkey` and the counter at `counter_key` as at
    /// one instant (see the module docs): one `GET` while the counter is
    /// known, else one pipeline that reads it again.
    pub(super) async fn read(&self, rkey: &str, counter_key: &str) -> Result<Read, StoreError> {
        let mut conn = self.conn.clone();
        let state = &self.state;
        let epoch = state.epoch();
        if let Some(known) = state.armed_at(epoch) {
            let mut get = redis::Cmd::with_capacity(2, 3 + rkey.len());
            get.arg("GET").arg(rkey);
            let raw = entry(conn.send_packed_command(&get).await)?;
            let counter = (state.epoch() == epoch).then_some(known);
            return Ok((raw, counter));
        }
        Box::pin(self.read_arming(&mut conn, rkey, counter_key, epoch)).await
    }

    /// `CLIENT CACHING yes`, `GET counter`, `GET entry`: the read, and the
    /// counter tracked again.
    async fn read_arming(
        &self,
        conn: &mut MultiplexedConnection,
        rkey: &str,
        counter_key: &str,
        epoch: u64,
    ) -> Result<Read, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
        pipe.cmd("GET").arg(counter_key);
        pipe.cmd("GET").arg(rkey);
        pipe.ignore_errors();
        let replies: Vec<redis::RedisResult<Value>> =
            pipe.query_async(conn).await.map_err(redis_error)?;
        let mut replies = replies.into_iter();
        let count = match replies.next() {
            Some(Ok(Value::BulkString(raw))) => counter(&raw),
            _ => None,
        };
        let raw = entry(replies.next().unwrap_or(Ok(Value::Nil)))?;
        if self.state.epoch() != epoch {
            return Ok((raw, None));
        }
        if let Some(count) = count {
            self.state.arm(count, epoch);
        }
        Ok((raw, count))
    }
}

/// The entry's bytes from a `GET` reply: none for no key or a key of
/// another type.
fn entry(reply: redis::RedisResult<Value>) -> Result<Option<Vec<u8>>, StoreError> {
    match reply {
        Ok(Value::BulkString(raw)) => Ok(Some(raw)),
        Ok(_) => Ok(None),
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
        Err(e) => Err(redis_error(e)),
    }
}

/// Makes the tracker's connection, and again whenever it closes, until
/// the tracker is dropped; gives up for good on a server that refuses
/// RESP3 or client tracking.
async fn keep(tracker: Weak<Tracker>, client: Client, connect_timeout: Duration) {
    const FIRST_DELAY: Duration = Duration::from_millis(50);
    const MAX_DELAY: Duration = Duration::from_secs(1);
    let mut delay = FIRST_DELAY;
    loop {
        let Some(wake) = tracker.upgrade().map(|t| Arc::clone(&t.wake)) else {
            return;
        };
        match open(&client, connect_timeout, &wake).await {
            Ok(link) => {
                let state = Arc::clone(&link.state);
                let Some(live) = tracker.upgrade() else {
                    return;
                };
                live.link.store(Some(Arc::new(link)));
                drop(live);
                delay = FIRST_DELAY;
                while !state.dead.load(Ordering::SeqCst) {
                    wake.notified().await;
                    if tracker.strong_count() == 0 {
                        return;
                    }
                }
                if let Some(live) = tracker.upgrade() {
                    live.link.store(None);
                }
            }
            Err(Open::Refused(error)) => {
                tracing::info!(%error, "Redis refuses client tracking; L2 hits read the counter beside each entry");
                return;
            }
            Err(Open::Failed) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

enum Open {
    /// The server does not do RESP3 or client tracking.
    Refused(redis::RedisError),
    /// It could not be reached; try again later.
    Failed,
}

/// Connects in RESP3 with a callback for Redis's messages, and turns
/// tracking on (opt-in: only keys read right after `CLIENT CACHING yes`
/// are tracked).
async fn open(client: &Client, timeout: Duration, wake: &Arc<Notify>) -> Result<Link, Open> {
    let state = Arc::new(LinkState::default());
    let on_message = {
        let state = Arc::clone(&state);
        let wake = Arc::clone(wake);
        move |info: PushInfo| -> Result<(), std::convert::Infallible> {
            state.message(&info.kind, &wake);
            Ok(())
        }
    };
    // No response timeout of the connection's own: every read on it runs
    // under the store's operation timeout.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        .set_push_sender(on_message);
    let classify = |e: redis::RedisError| {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            Open::Failed
        } else {
            Open::Refused(e)
        }
    };
    let on = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(classify)?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("OPTIN")
            .query_async::<()>(&mut conn)
            .await
            .map_err(classify)?;
        Ok(conn)
    };
    let conn = tokio::time::timeout(timeout, on)
        .await
        .unwrap_or(Err(Open::Failed))?;
    Ok(Link { conn, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_known_only_at_the_epoch_it_was_read_at() {
        let state = LinkState::default();
        assert_eq!(state.armed_at(0), None);
        state.arm(1_764_000_000_000_000, 0);
        assert_eq!(state.armed_at(0), Some(1_764_000_000_000_000));
        assert_eq!(state.armed_at(1), None);
        state.message(&PushKind::Invalidate, &Notify::new());
        assert_eq!(state.armed_at(state.epoch()), None);
        assert!(!state.dead.load(Ordering::SeqCst));
    }

    #[test]
    fn a_counter_stored_after_a_message_decides_nothing() {
        let state = LinkState::default();
        let read_at = state.epoch();
        state.message(&PushKind::Invalidate, &Notify::new());
        // The read's reply came before the message, its task records late.
        state.arm(7, read_at);
        assert_eq!(state.armed_at(state.epoch()), None);
        for _ in 0..=EPOCH_MASK {
            state.message(&PushKind::Invalidate, &Notify::new());
            assert_eq!(state.armed_at(state.epoch()), None);
        }
    }

    #[test]
    fn a_counter_too_large_to_pack_is_not_kept() {
        let state = LinkState::default();
        state.arm(MAX_ARMED_COUNTER + 1, 0);
        assert_eq!(state.armed_at(0), None);
        state.arm(MAX_ARMED_COUNTER, 0);
        assert_eq!(state.armed_at(0), Some(MAX_ARMED_COUNTER));
    }

    #[test]
    fn a_closed_connection_is_dead() {
        let state = LinkState::default();
        state.arm(3, 0);
        state.message(&PushKind::Disconnection, &Notify::new());
        assert!(state.dead.load(Ordering::SeqCst));
        assert_eq!(state.armed_at(state.epoch()), None);
    }
}
