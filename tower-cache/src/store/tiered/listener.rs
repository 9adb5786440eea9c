//! The invalidation subscriber: applies other instances' notices to this instance's L1.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::Shared;
use super::channel::{Message, Notice};

/// Subscribes, applies other instances' invalidations to L1, and on
/// losing the connection resubscribes with backoff, clearing L1 and
/// replaying what L2 missed once it is back. Runs until aborted.
///
/// On a Redis Cluster the subscription is a plain `SUBSCRIBE` on one node
/// (a `PUBLISH` on any node reaches every node's subscribers); each
/// attempt after a failure takes the next seed node, so the loss of one
/// node moves the subscription to another.
pub(super) async fn listen(shared: Arc<Shared>, subscribed: watch::Sender<bool>) {
    let clients = shared.l2.clients().to_vec();
    let mut next = 0;
    let mut backoff = Duration::from_millis(50);
    let mut ever_subscribed = false;
    loop {
        let client = &clients[next % clients.len()];
        next = next.wrapping_add(1);
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&shared.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                tracing::debug!(%error, "invalidation subscription failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                tracing::debug!("invalidation subscription timed out; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // The node that answered is tried first again next time.
        next = next.wrapping_sub(1);
        shared.counters.subscriptions.incr();
        if ever_subscribed {
            shared.clear_l1().await;
            tracing::info!("invalidation channel re-subscribed; L1 cleared");
        }
        ever_subscribed = true;
        subscribed.send_replace(true);
        if shared.replay.has_pending()
            && let Err(error) = shared.replay_pending().await
        {
            tracing::debug!(%error, "replaying missed invalidations failed; will retry");
        }
        // Redis answers again: close the breaker now rather than when
        // traffic that misses L1 happens to probe it.
        if shared.breaker.is_open() {
            let generation = shared.breaker.generation();
            if shared.l2.ping().await.is_ok() {
                shared.on_l2_success(generation).await;
            }
        }

        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Some(message) = Message::parse(&payload) else {
                tracing::debug!(%payload, "ignoring malformed invalidation message");
                continue;
            };
            if message.from == shared.instance {
                continue;
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
        // Logged once per loss: reconnection attempts log at debug level.
        subscribed.send_replace(false);
        tracing::warn!("invalidation channel lost; L1 may miss invalidations until it returns");
    }
}
