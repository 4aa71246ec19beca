//! Coalescing concurrent misses: while one request for a key executes, others for the
//! same key wait for its stored response instead of executing too.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::key::CacheKey;

/// Keys being executed right now. Followers wait on a channel the leader closes when it is
/// done (or is dropped mid-way), then look in the store again: they never receive a
/// response that was not stored, so they never get one from another bucket, an error, or a
/// response that read claims outside the scope.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    keys: Mutex<HashMap<CacheKey, watch::Receiver<()>>>,
}

/// What a missing request does.
pub(crate) enum Role<'a> {
    /// Execute, store, then drop the guard to release the followers.
    Lead(LeaderGuard<'a>),
    /// Someone else is executing this key: wait, then look again.
    Follow(watch::Receiver<()>),
}

/// Held by the executing request; dropping it (even on cancellation) releases followers.
pub(crate) struct LeaderGuard<'a> {
    flight: &'a InFlight,
    key: CacheKey,
    _done: watch::Sender<()>,
}

impl InFlight {
    pub(crate) fn join(&self, key: CacheKey) -> Role<'_> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiting) = keys.get(&key) {
            return Role::Follow(waiting.clone());
        }
        let (done, waiting) = watch::channel(());
        keys.insert(key, waiting);
        Role::Lead(LeaderGuard {
            flight: self,
            key,
            _done: done,
        })
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.flight
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        // `_done` drops after this, closing the channel: followers wake.
    }
}

/// Waits until the leader is done, at most `limit`; after that the follower executes itself.
pub(crate) async fn follow(mut waiting: watch::Receiver<()>, limit: Duration) {
    // `changed` errs once the leader's sender is dropped, which is the signal.
    let _ = tokio::time::timeout(limit, async { while waiting.changed().await.is_ok() {} }).await;
}
