//! The invalidation subscriber: applies other instances' notices to this instance's L1.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSub;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::Shared;
use super::channel::{Message, Notice};
use super::unsynced::heartbeat;

/// Subscribes, applies other instances' invalidations to L1, and pings the
/// channel every [`heartbeat`]. On losing it (the connection ends, or a
/// ping goes unanswered) it resubscribes with backoff, marking L1 out of
/// sync every `max_unsynced` for as long as it is cut off; once back, it
/// replays what L2 missed and marks L1 out of sync once more (it may have
/// missed notices meanwhile). Runs until aborted.
///
/// On a Redis Cluster the subscription is a plain `SUBSCRIBE` on one node
/// (a `PUBLISH` on any node reaches every node's subscribers); each
/// attempt after a failure takes the next seed node, so the loss of one
/// node moves the subscription to another.
pub(super) async fn listen(shared: Arc<Shared>, subscribed: watch::Sender<bool>) {
    let beat = heartbeat(shared.max_unsynced);
    // The seed node tried first by the next subscription.
    let mut next = 0;
    let mut ever_subscribed = false;
    // When the channel last answered: from there, L1 may miss notices.
    let mut alive = Instant::now();
    loop {
        let pubsub = subscribe(&shared, alive, &mut next).await;
        shared.counters.subscriptions.incr();
        subscribed.send_replace(true);
        if shared.replay.has_pending()
            && let Err(error) = shared.replay_pending().await
        {
            tracing::debug!(%error, "replaying missed invalidations failed; will retry");
        }
        // L1 may have missed notices while the channel was down: it is
        // marked out of sync once L2 answers again, so that the reads
        // revalidating it find L2 (a reload while L2 is closed to them
        // would only be undone when it opens), and at the latest when
        // the channel has been down `max_unsynced`.
        if ever_subscribed {
            tracing::info!("invalidation channel re-subscribed; L1 entries are revalidated");
        }
        ever_subscribed = true;
        let lost = alive;
        alive = Instant::now();
        let mut owed = !settle(&shared, lost).await;
        let (mut sink, mut messages) = pubsub.split();
        let mut pings = tokio::time::interval_at(alive + beat, beat);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { break };
                    alive = Instant::now();
                    apply(&shared, &msg).await;
                }
                _ = pings.tick() => {
                    if owed {
                        owed = !settle(&shared, lost).await;
                    }
                    match tokio::time::timeout(beat, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => alive = Instant::now(),
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "invalidation channel ping failed");
                            break;
                        }
                        Err(_) => {
                            tracing::debug!("invalidation channel ping unanswered");
                            break;
                        }
                    }
                }
            }
        }
        // Logged once per loss: reconnection attempts log at debug level.
        subscribed.send_replace(false);
        tracing::warn!("invalidation channel lost; L1 may miss invalidations until it returns");
    }
}

/// Closes the breaker if it is open and L2 answers again (rather than
/// waiting for traffic that misses L1 to probe it), and marks L1 out of
/// sync once L2 answers or the channel has been down `max_unsynced` since
/// `lost`. `true` when L1 was marked.
async fn settle(shared: &Shared, lost: Instant) -> bool {
    let check = shared.breaker.ticket();
    let answers = !shared.breaker.is_open() || shared.l2.ping().await.is_ok();
    if answers && shared.on_l2_success(check).await {
        return true;
    }
    if answers || Instant::now() >= lost + shared.max_unsynced {
        shared.mark_unsynced().await;
        tracing::debug!("L1 entries marked out of sync");
        return true;
    }
    false
}

/// Subscribes to the channel, retrying with backoff. L1 is marked out of
/// sync each `max_unsynced` after `alive` (when the channel last
/// answered) until it succeeds.
async fn subscribe(shared: &Shared, alive: Instant, next: &mut usize) -> PubSub {
    let window = shared.max_unsynced;
    let mut mark_at = alive + window;
    let attempts = retry(shared, next);
    tokio::pin!(attempts);
    loop {
        tokio::select! {
            pubsub = &mut attempts => return pubsub,
            () = tokio::time::sleep_until(mark_at) => {
                shared.mark_unsynced().await;
                tracing::debug!(?window, "invalidation channel still down; L1 entries marked to reload");
                mark_at = Instant::now() + window;
            }
        }
    }
}

/// Subscribes, retrying with backoff until it succeeds, each attempt on
/// the next seed node from `next`; the node that answered is tried first
/// again next time.
async fn retry(shared: &Shared, next: &mut usize) -> PubSub {
    let clients = shared.l2.clients();
    let mut backoff = Duration::from_millis(50);
    loop {
        let client = &clients[*next % clients.len()];
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&shared.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(pubsub)) => return pubsub,
            Ok(Err(error)) => {
                tracing::debug!(%error, "invalidation subscription failed; retrying");
            }
            Err(_) => tracing::debug!("invalidation subscription timed out; retrying"),
        }
        *next = next.wrapping_add(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Applies one message from the channel to L1, unless this instance sent
/// it or it does not parse.
async fn apply(shared: &Shared, msg: &redis::Msg) {
    let Ok(payload) = msg.get_payload::<String>() else {
        return;
    };
    let Some(message) = Message::parse(&payload) else {
        tracing::debug!(%payload, "ignoring malformed invalidation message");
        return;
    };
    if message.from == shared.instance {
        return;
    }
    let applied = match message.notice {
        Notice::Key(key) => {
            shared.drop_key_from_l1(&key).await;
            Ok(())
        }
        Notice::Tag { tag, version } => {
            shared.seen.tag(&tag, version, false).await;
            shared.drop_tag_from_l1(&tag).await
        }
        Notice::All { version } => {
            shared.seen.all(version);
            shared.clear_l1().await;
            Ok(())
        }
    };
    if applied.is_ok() {
        shared.counters.received.incr();
    }
}
