//! Revocations shared through Redis, mirrored in memory so the per-request check stays
//! in-process: the `P revocations` sorted set holds every revocation (scored by when it can
//! be forgotten, trimmed on every write), and each one is published on the events channel.
//! A subscriber (re)loads the whole set when it (re)subscribes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::events::{Event, WireRevoke};
use super::store::Tier;
use crate::claims::Claims;
use crate::revocation::{MemoryRevocations, RevocationStore, Revoke, RevokeError, UnixClock};

/// Revocations made while Redis was away, shared when it is back; past this many the
/// oldest are dropped from the queue (they still hold on this instance), with an error log.
const MAX_PENDING: usize = 100_000;
/// Revocations read per round trip when loading.
const LOAD_PAGE: usize = 10_000;

#[derive(Debug)]
pub(crate) struct SharedRevocations {
    memory: MemoryRevocations,
    pending: Mutex<VecDeque<Revoke>>,
    /// Set until a load from Redis completes (at start, and after each resubscription).
    unloaded: AtomicBool,
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
            pending: Mutex::new(VecDeque::new()),
            unloaded: AtomicBool::new(true),
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

    pub(crate) fn needs_load(&self) -> bool {
        self.unloaded.load(Ordering::Acquire)
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Shares the revocations made here while Redis was away.
    pub(crate) async fn replay(&self, tier: &Tier) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for revoke in pending {
            self.send(tier, &revoke, false).await;
        }
    }

    /// Stores `revoke` in Redis and tells the fleet; if Redis is away, it is queued.
    pub(crate) async fn share(&self, tier: &Tier, revoke: &Revoke) {
        self.send(tier, revoke, true).await;
    }

    async fn send(&self, tier: &Tier, revoke: &Revoke, first: bool) {
        if let Err(err) = self.write(tier, revoke).await {
            if first && !matches!(err, super::conn::StoreError::Open) {
                tracing::warn!(%err, "a revocation holds on this instance only until redis answers");
            }
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= MAX_PENDING {
                tracing::error!(
                    "too many revocations wait for redis; the oldest is shared no more"
                );
                drop(pending.pop_front());
            }
            pending.push_back(revoke.clone());
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

    /// Mirrors every revocation Redis holds, a page per round trip, then shares those
    /// made here meanwhile.
    pub(crate) async fn load(&self, tier: &Tier) {
        self.unloaded.store(true, Ordering::Release);
        let now_ms = unix_now().saturating_mul(1000);
        let set = tier.keys.named("revocations");
        let (mut offset, mut unreadable, mut refused) = (0usize, 0usize, 0usize);
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGE")
                .arg(&set)
                .arg(now_ms)
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(offset)
                .arg(LOAD_PAGE);
            let members = match tier.redis.bulk::<(Vec<Vec<u8>>,)>(&pipe).await {
                Ok((members,)) => members,
                Err(err) => {
                    // Retried every second by the subscriber (from the start: revocations
                    // are only added, so reading them twice costs nothing).
                    tracing::debug!(%err, loaded = offset, "loading revocations from redis stopped; retrying");
                    return;
                }
            };
            let page = members.len();
            for member in members {
                match serde_json::from_slice::<WireRevoke>(&member)
                    .ok()
                    .and_then(WireRevoke::into_revoke)
                {
                    Some(revoke) => {
                        if self.memory.revoke(&revoke, unix_now()).is_err() {
                            refused += 1;
                        }
                    }
                    None => unreadable += 1,
                }
            }
            offset += page;
            if page < LOAD_PAGE {
                break;
            }
        }
        self.unloaded.store(false, Ordering::Release);
        if unreadable > 0 {
            tracing::warn!(unreadable, "unreadable revocations in redis were skipped");
        }
        if refused > 0 {
            tracing::error!(
                refused,
                "revocations in redis did not fit this instance's max_revocations"
            );
        }
        self.replay(tier).await;
    }
}
