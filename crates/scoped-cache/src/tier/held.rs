//! Revocations held by this instance: the in-memory mirror of the fleet's set, which the
//! per-request check reads, and the queue of those made here while Redis was away. No
//! Redis here: sharing them is `revocations`'s.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use super::conn::StoreError;
use crate::claims::Claims;
use crate::revocation::{MemoryRevocations, RevocationStore, Revoke, RevokeError, UnixClock};

/// Revocations made while Redis was away, shared when it is back; past this many the
/// oldest are dropped from the queue (they still hold on this instance), with an error log.
const MAX_PENDING: usize = 100_000;
#[derive(Debug)]
pub(crate) struct SharedRevocations {
    memory: MemoryRevocations,
    pending: Mutex<VecDeque<Revoke>>,
}

impl SharedRevocations {
    pub(crate) fn new(memory: MemoryRevocations) -> Self {
        Self {
            memory,
            pending: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn is_revoked(&self, claims: &Claims, clock: &UnixClock) -> bool {
        self.memory.is_revoked(claims, clock)
    }

    pub(crate) fn revoke(&self, revoke: &Revoke, now: u64) -> Result<(), RevokeError> {
        self.memory.revoke(revoke, now)
    }

    /// One from the fleet. One that does not fit is an error: this instance cannot
    /// enforce it, so it must not say it is in step.
    pub(crate) fn apply(&self, revoke: &Revoke) -> Result<(), StoreError> {
        self.memory.revoke(revoke, crate::clock::now_seconds()).map_err(|err| {
            tracing::error!(%err, "a shared revocation does not fit here: this instance refuses tokens until it does (raise max_revocations)");
            StoreError::RevocationsFull
        })
    }

    /// What the mirror holds against its bound.
    pub(crate) fn usage(&self) -> crate::health::Usage {
        self.memory.usage()
    }

    /// How many wait for Redis.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The mirror.
    pub(crate) fn memory(&self) -> &MemoryRevocations {
        &self.memory
    }

    /// Those waiting for Redis, taken to be shared.
    pub(crate) fn take_pending(&self) -> VecDeque<Revoke> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// One that Redis did not record: shared when it answers.
    pub(crate) fn queue(&self, revoke: Revoke) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_PENDING {
            tracing::error!("too many revocations wait for redis; the oldest is shared no more");
            drop(pending.pop_front());
        }
        pending.push_back(revoke);
    }
}
