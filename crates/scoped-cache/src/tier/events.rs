//! The events channel (`P events`): a message per recorded change, so every instance's
//! syncer reads the journal at once instead of on its next tick.
//!
//! Pub/sub only makes convergence fast; it never carries the change itself. An instance
//! whose subscription fails (an ACL without `+subscribe`, a proxy without pub/sub, a
//! dropped connection) still converges within a tick, and says so once in the log.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::Notify;

use super::conn::ClientSource;

/// How often a quiet subscription is checked with a `PING` (a connection that died
/// without closing would otherwise slow convergence to the tick for ever).
const PING_EVERY: Duration = Duration::from_secs(5);

/// What the subscriber needs: no more of the tier than this.
pub(crate) struct Subscription {
    /// Where each attempt connects: on a cluster, its seed nodes in turn (any node
    /// carries every `PUBLISH`), so one that is down is not asked again and again; behind
    /// Sentinels, the primary they name then.
    pub(crate) source: ClientSource,
    /// `P events`.
    pub(crate) channel: String,
    /// For subscribing and for a `PING`'s answer.
    pub(crate) timeout: Duration,
    /// The syncer's.
    pub(crate) wake: Arc<Notify>,
}

/// Subscribes, and resubscribes whenever the subscription is lost, until the tier is
/// dropped (its owner aborts this task).
pub(crate) async fn listen(subscription: Subscription) {
    let Subscription {
        source,
        channel,
        timeout,
        wake,
    } = subscription;
    let mut backoff = Duration::from_millis(50);
    let mut lost_logged = false;
    let mut attempt = 0usize;
    loop {
        let (source, channel) = (&source, &channel);
        let this_attempt = attempt;
        attempt = attempt.wrapping_add(1);
        let subscribed = tokio::time::timeout(timeout, async move {
            let client = source.client(this_attempt).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                if !lost_logged {
                    let err = match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => "no answer".to_owned(),
                    };
                    tracing::warn!(
                        %err,
                        "cannot subscribe to redis; changes still arrive by reading the journal every second"
                    );
                    lost_logged = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // Messages may have been missed meanwhile: read the journal now.
        wake.notify_one();
        if std::mem::take(&mut lost_logged) {
            tracing::info!("subscribed to redis again");
        }
        let (mut sink, mut stream) = pubsub.split();
        let mut pings = tokio::time::interval(PING_EVERY);
        pings.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    if message.is_none() {
                        break;
                    }
                    wake.notify_one();
                }
                _ = pings.tick() => {
                    // In subscribed mode the answer is an array (`pong`, ``).
                    let alive = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!(
            "the redis subscription was lost; changes arrive every tick until it is back"
        );
        lost_logged = true;
        tokio::time::sleep(backoff).await;
    }
}
