//! The events channel (`P events`): purges and revocations, so every instance's memory
//! follows the fleet; and the subscriber that listens to it.
//!
//! Pub/sub drops messages while a subscriber is disconnected, so each (re)subscription
//! starts memory over: L1 is flushed, revocations are reloaded from Redis, and purges made
//! here while Redis was away are replayed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::store::Tier;
use crate::cache::purge::{Selector, Tag};
use crate::revocation::{Revoke, RevokeKind};

/// Longest message read; anything longer is not ours.
const MAX_EVENT_BYTES: usize = 1 << 20;
/// How often the subscriber shares what waited for Redis (purges and revocations made
/// while it was away).
const TICK: Duration = Duration::from_secs(1);
/// Every this many ticks a quiet subscription is checked with a `PING` (a connection that
/// died without closing would otherwise hide missed messages for ever).
const PING_EVERY: u32 = 5;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    Purge {
        origin: u64,
        seq: u64,
        selector: WireSelector,
    },
    Revoke {
        origin: u64,
        revoke: WireRevoke,
    },
}

impl Event {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for anything that is not one of our messages. serde_json bounds nesting.
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        if payload.len() > MAX_EVENT_BYTES {
            return None;
        }
        serde_json::from_slice(payload).ok()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireSelector {
    Tags {
        tags: Vec<WireTag>,
    },
    Operation {
        name: String,
    },
    /// Claim tags, base64.
    Scope {
        claims: Vec<String>,
    },
    Fields {
        fields: Vec<String>,
    },
    All,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireTag {
    Type(String),
    Entity(String, String),
    AnyOf(String),
}

impl From<&Selector> for WireSelector {
    fn from(selector: &Selector) -> Self {
        match selector {
            Selector::Tags(tags) => WireSelector::Tags {
                tags: tags
                    .iter()
                    .map(|tag| match tag {
                        Tag::Type(ty) => WireTag::Type(ty.to_string()),
                        Tag::Entity(ty, id) => WireTag::Entity(ty.to_string(), id.to_string()),
                        Tag::AnyOf(ty) => WireTag::AnyOf(ty.to_string()),
                    })
                    .collect(),
            },
            Selector::Operation(name) => WireSelector::Operation {
                name: name.to_string(),
            },
            Selector::Scope(claims) => WireSelector::Scope {
                claims: claims.iter().map(|c| B64.encode(c)).collect(),
            },
            Selector::Fields(fields) => WireSelector::Fields {
                fields: fields.iter().map(ToString::to_string).collect(),
            },
            Selector::All => WireSelector::All,
        }
    }
}

impl WireSelector {
    pub(crate) fn into_selector(self) -> Option<Selector> {
        Some(match self {
            WireSelector::Tags { tags } => Selector::Tags(
                tags.into_iter()
                    .map(|tag| match tag {
                        WireTag::Type(ty) => Tag::Type(ty.into()),
                        WireTag::Entity(ty, id) => Tag::Entity(ty.into(), id.into()),
                        WireTag::AnyOf(ty) => Tag::AnyOf(ty.into()),
                    })
                    .collect(),
            ),
            WireSelector::Operation { name } => Selector::Operation(name.into()),
            WireSelector::Scope { claims } => Selector::Scope(
                claims
                    .iter()
                    .map(|c| B64.decode(c).ok().map(Arc::from))
                    .collect::<Option<Vec<_>>>()?,
            ),
            WireSelector::Fields { fields } => {
                Selector::Fields(fields.into_iter().map(Arc::from).collect())
            }
            WireSelector::All => Selector::All,
        })
    }
}

/// A revocation on the wire and in the `P revocations` set.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct WireRevoke(RevokeKind);

impl From<&Revoke> for WireRevoke {
    fn from(revoke: &Revoke) -> Self {
        Self(revoke.kind.clone())
    }
}

impl WireRevoke {
    /// `None` unless it is a revocation `Revoke` itself would accept.
    pub(crate) fn into_revoke(self) -> Option<Revoke> {
        let revoke = Revoke { kind: self.0 };
        revoke.check().ok().map(|()| revoke)
    }
}

/// Subscribes, and resubscribes whenever the subscription is lost, until the tier is
/// dropped (its owner aborts this task).
pub(crate) async fn listen(tier: Weak<Tier>) {
    let mut backoff = Duration::from_millis(50);
    let mut lost_logged = false;
    loop {
        let Some((client, channel, timeout)) = tier.upgrade().map(|t| {
            (
                t.redis.client().clone(),
                t.keys.named("events"),
                t.redis.insert_timeout.max(Duration::from_secs(1)),
            )
        }) else {
            return;
        };
        let subscribed = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(err)) => {
                if !lost_logged {
                    tracing::warn!(%err, "cannot subscribe to redis; retrying in the background");
                    lost_logged = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let Some(owner) = tier.upgrade() else {
            return;
        };
        owner.resubscribed().await;
        if std::mem::take(&mut lost_logged) {
            tracing::info!("subscribed to redis again; memory was flushed to catch up");
        }
        drop(owner);
        let (mut sink, mut stream) = pubsub.split();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut tick = 0u32;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(owner) = tier.upgrade() else { return };
                    owner.on_event(message.get_payload_bytes()).await;
                }
                _ = ticks.tick() => {
                    let Some(owner) = tier.upgrade() else { return };
                    if owner.has_pending() {
                        owner.catch_up().await;
                    }
                    drop(owner);
                    tick = tick.wrapping_add(1);
                    if tick.is_multiple_of(PING_EVERY) {
                        // In subscribed mode the answer is an array (`pong`, ``).
                        let alive = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                        if !matches!(alive, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
        }
        tracing::warn!("the redis subscription was lost; memory is flushed when it is back");
        lost_logged = true;
        // Not straight back: a flapping connection would flush memory in a loop.
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::purge::Purge;

    #[test]
    fn selectors_and_revocations_survive_the_wire() {
        for purge in [
            Purge::tags(["Post:1", "User"]),
            Purge::operation("Feed"),
            Purge::scope([("sub", "alice"), ("org.id", "7")]).unwrap(),
            Purge::all(),
        ] {
            let event = Event::Purge {
                origin: 1,
                seq: 2,
                selector: (&purge.selector).into(),
            };
            let Some(Event::Purge { selector, .. }) = Event::decode(&event.encode()) else {
                panic!("round trip");
            };
            assert_eq!(selector.into_selector(), Some(purge.selector));
        }
        let revoke = Revoke::subject_unix("alice", 10).of_issuer("idp");
        let wire: WireRevoke = (&revoke).into();
        assert_eq!(wire.into_revoke(), Some(revoke));
    }

    #[test]
    fn foreign_or_invalid_messages_are_ignored() {
        assert!(Event::decode(b"hello").is_none());
        assert!(Event::decode(&vec![b'['; 100_000]).is_none());
        let empty = WireRevoke(RevokeKind::Token {
            jti: String::new(),
            exp: 1,
        });
        assert!(empty.into_revoke().is_none(), "checked like the API");
    }
}
