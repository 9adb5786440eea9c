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
//!
//! # No timer per read
//!
//! A read on this connection starts no timer of its own. The task that
//! keeps the connection looks at it every half operation timeout: when a
//! request sent two looks ago is still unanswered (replies come in the
//! order requests went), the connection is dropped at once, which fails
//! every request waiting on it, and reads go to the main connection, where
//! the operation timeout and the circuit breaker apply. So no read waits
//! on a stalled Redis much longer than one operation timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

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
    /// The task that writes and reads the connection's socket.
    driver: AbortHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.driver.abort();
    }
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
    /// Set when it is given up for a request unanswered too long: the
    /// reads it fails timed out.
    stalled: AtomicBool,
    /// Requests sent, and answered (or given up by their callers).
    sent: AtomicU64,
    answered: AtomicU64,
}

/// One request on the connection, counted answered when dropped.
struct Pending<'a>(&'a LinkState);

impl<'a> Pending<'a> {
    fn start(state: &'a LinkState) -> Self {
        state.sent.fetch_add(1, Ordering::Relaxed);
        Pending(state)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
    }
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

    /// The connection is given up: no read uses it any more.
    fn close(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.armed.store(0, Ordering::SeqCst);
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
    /// A tracker for the single node `client` connects to over TCP,
    /// making its connection in the background (within the current Tokio
    /// runtime; none outside one, nor for TLS or a Unix socket).
    pub(super) fn start(
        client: &Client,
        connect_timeout: Duration,
        op_timeout: Duration,
    ) -> Option<Arc<Tracker>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let info = client.get_connection_info();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let target = Target {
            host: host.clone(),
            port: *port,
            nodelay: info.tcp_settings().nodelay(),
            settings: info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3),
            connect_timeout,
            op_timeout,
        };
        let tracker = Arc::new(Tracker {
            link: ArcSwapOption::empty(),
            wake: Arc::new(Notify::new()),
        });
        runtime.spawn(keep(Arc::downgrade(&tracker), target));
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
    /// A read on a connection given up as stalled fails with
    /// [`StoreError::Timeout`].
    pub(super) async fn read(&self, rkey: &str, counter_key: &str) -> Result<Read, StoreError> {
        let read = self.read_now(rkey, counter_key).await;
        match read {
            Err(_) if self.state.stalled.load(Ordering::SeqCst) => Err(StoreError::Timeout),
            read => read,
        }
    }

    async fn read_now(&self, rkey: &str, counter_key: &str) -> Result<Read, StoreError> {
        let mut conn = self.conn.clone();
        let state = &self.state;
        let _pending = Pending::start(state);
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

/// Where the tracked connection goes, and its timeouts.
struct Target {
    host: String,
    port: u16,
    nodelay: bool,
    settings: redis::RedisConnectionInfo,
    connect_timeout: Duration,
    op_timeout: Duration,
}

/// Makes the tracker's connection, and again whenever it closes or
/// stalls, until the tracker is dropped; gives up for good on a server
/// that refuses RESP3 or client tracking.
async fn keep(tracker: Weak<Tracker>, target: Target) {
    const FIRST_DELAY: Duration = Duration::from_millis(50);
    const MAX_DELAY: Duration = Duration::from_secs(1);
    let mut delay = FIRST_DELAY;
    loop {
        let Some(wake) = tracker.upgrade().map(|t| Arc::clone(&t.wake)) else {
            return;
        };
        match open(&target, &wake).await {
            Ok(link) => {
                let state = Arc::clone(&link.state);
                let driver = link.driver.clone();
                let Some(live) = tracker.upgrade() else {
                    return;
                };
                live.link.store(Some(Arc::new(link)));
                drop(live);
                delay = FIRST_DELAY;
                let closed = watch(&tracker, &state, &wake, target.op_timeout).await;
                // Fails at once whatever still waits on the connection.
                driver.abort();
                if !closed {
                    return;
                }
                if let Some(live) = tracker.upgrade() {
                    // Dropping the last handle on the link stops its driver.
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

/// Watches a live connection until it closes (true) or the tracker is
/// dropped (false): every half operation timeout, a request sent two
/// looks ago and still unanswered means the connection stalled, and it
/// is given up.
async fn watch(
    tracker: &Weak<Tracker>,
    state: &LinkState,
    wake: &Notify,
    op_timeout: Duration,
) -> bool {
    let look = (op_timeout / 2).max(Duration::from_millis(1));
    // `sent` at the last two looks, the older first.
    let mut marks: VecDeque<u64> = VecDeque::with_capacity(3);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(look) => {}
        }
        if tracker.strong_count() == 0 {
            return false;
        }
        if state.dead.load(Ordering::SeqCst) {
            return true;
        }
        let answered = state.answered.load(Ordering::Relaxed);
        if marks.len() == 2 && marks.front().is_some_and(|&sent| answered < sent) {
            tracing::debug!("the tracked Redis connection stalled; reads go to the main one");
            state.stalled.store(true, Ordering::SeqCst);
            state.close();
            return true;
        }
        if marks.len() == 2 {
            marks.pop_front();
        }
        marks.push_back(state.sent.load(Ordering::Relaxed));
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
/// are tracked). The connection's driver runs in a task of its own, which
/// dropping the link stops.
async fn open(target: &Target, wake: &Arc<Notify>) -> Result<Link, Open> {
    let timeout = target.connect_timeout;
    let state = Arc::new(LinkState::default());
    let on_message = {
        let state = Arc::clone(&state);
        let wake = Arc::clone(wake);
        move |info: PushInfo| -> Result<(), std::convert::Infallible> {
            state.message(&info.kind, &wake);
            Ok(())
        }
    };
    // No response timeout: the keeper watches the connection instead.
    let config = AsyncConnectionConfig::new()
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
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|_| Open::Failed)?;
        // As redis-rs sets its own connections' sockets (Nagle's
        // algorithm on unless the URL's settings turn it off): the
        // commands of concurrent reads go out together.
        let _ = stream.set_nodelay(target.nodelay);
        let (mut conn, driver) =
            MultiplexedConnection::new_with_config(&target.settings, stream, config)
                .await
                .map_err(classify)?;
        let driver = tokio::spawn(driver).abort_handle();
        let link_driver = driver.clone();
        // Stops the driver if what follows fails or times out.
        let guard = AbortOnDrop(Some(driver));
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("OPTIN")
            .query_async::<()>(&mut conn)
            .await
            .map_err(classify)?;
        guard.defuse();
        Ok((conn, link_driver))
    };
    let (conn, driver) = tokio::time::timeout(timeout, on)
        .await
        .unwrap_or(Err(Open::Failed))?;
    Ok(Link {
        conn,
        state,
        driver,
    })
}

/// Aborts a task when dropped, unless defused.
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
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
