//! Revocations shared through Redis, mirrored in memory so the per-request check stays
//! in-process: the `P revocations` sorted set holds every revocation (scored by when it can
//! be forgotten, trimmed on every write), and each one is published on the events channel.
//! A subscriber (re)loads the whole set when it (re)subscribes.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::events::{Event, WireRevoke};
use super::store::Tier;
use crate::claims::Claims;
use crate::revocation::{MemoryRevocations, RevocationStore, Revoke, RevokeError, UnixClock};

/// Revocations made while Redis was away, shared when it is back; past this many the
/// oldest are dropped from the queue (they still hold on this instance), with an error log.
const MAX_PENDING: usize = 100_000;

#[derive(Debug)]
pub(crate) struct SharedRevocations {
    memory: MemoryRevocations,
    pending: Mutex<Vec<Revoke>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl SharedRevocations {
    pub(crate) fn new(memory: MemoryRevocations) -> Self {
        Self {
            memory,
            pending: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn is_revoked(&self, claims: &Claims, clock: &UnixClock) -> bool {
        self.memory.is_revoked(claims, clock)
    }

    pub(crate) fn revoke(&self, revoke: &Revoke, now: u64) -> Result<(), RevokeError> {
        self.memory.revoke(revoke, now)
    }

    /// One from the fleet.
    pub(crate) fn apply(&self, revoke: &Revoke) {
        if let Err(err) = self.memory.revoke(revoke, unix_now()) {
            tracing::error!(%err, "a shared revocation could not be mirrored here");
        }
    }

    /// Stores `revoke` in Redis and tells the fleet; if Redis is away, it is queued.
    pub(crate) async fn share(&self, tier: &Tier, revoke: &Revoke) {
        if let Err(err) = self.write(tier, revoke).await {
            tracing::warn!(%err, "a revocation holds on this instance only until redis answers");
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= MAX_PENDING {
                tracing::error!(
                    "too many revocations wait for redis; the oldest is shared no more"
                );
                drop(pending.remove(0));
            }
            pending.push(revoke.clone());
        }
    }

    async fn write(&self, tier: &Tier, revoke: &Revoke) -> Result<(), super::conn::StoreError> {
        let now = unix_now();
        let wire = WireRevoke::from(revoke);
        let member = serde_json::to_vec(&wire).unwrap_or_default();
        let forget_at_ms = self.memory.forget_at(revoke, now).saturating_mul(1000);
        let set = tier.keys.named("revocations");
        let mut pipe = redis::pipe();
        pipe.zadd(&set, member, forget_at_ms).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&set)
            .arg("-inf")
            .arg(now.saturating_mul(1000))
            .ignore();
        tier.redis.write::<()>(&pipe).await?;
        tier.publish(&Event::Revoke {
            origin: tier.id,
            revoke: wire,
        })
        .await
    }

    /// Mirrors every revocation Redis holds, then shares those made here meanwhile.
    pub(crate) async fn load(&self, tier: &Tier) {
        let now_ms = unix_now().saturating_mul(1000);
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(tier.keys.named("revocations"))
            .arg(now_ms)
            .arg("+inf")
            .arg("BYSCORE");
        match tier.redis.write::<(Vec<Vec<u8>>,)>(&pipe).await {
            Ok((members,)) => {
                let mut unreadable = 0usize;
                for member in members {
                    match serde_json::from_slice::<WireRevoke>(&member)
                        .ok()
                        .and_then(WireRevoke::into_revoke)
                    {
                        Some(revoke) => self.apply(&revoke),
                        None => unreadable += 1,
                    }
                }
                if unreadable > 0 {
                    tracing::warn!(unreadable, "unreadable revocations in redis were skipped");
                }
            }
            Err(err) => tracing::warn!(%err, "loading revocations from redis failed"),
        }
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for revoke in pending {
            self.share(tier, &revoke).await;
        }
    }
}
