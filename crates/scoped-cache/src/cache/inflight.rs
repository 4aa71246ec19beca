//! Coalescing concurrent misses: while one request for a key executes, others for the
//! same key wait for its stored response instead of executing too.
//!
//! Memory: one small entry per key being executed right now, so bounded by the number of
//! requests in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::key::CacheKey;

/// Keys being executed right now. Followers wait on a channel the leader completes when it
/// is done, then look in the store again: they never receive a response that was not
/// stored, so they never get one from another bucket, an error, or a response that read
/// claims outside the scope.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    keys: Mutex<HashMap<CacheKey, Flight>>,
    generations: AtomicU64,
}

/// One execution of a key. The sender lives here, not with the leader: a follower that
/// takes over from a stuck leader replaces it, which wakes everyone who waited on it.
#[derive(Debug)]
struct Flight {
    generation: u64,
    /// `true` once the leader finished (stored or not).
    done: watch::Sender<bool>,
}

/// What a missing request does.
pub(crate) enum Role {
    /// Execute, store, then [`finish`](LeaderGuard::finish) to release the followers.
    Lead(LeaderGuard),
    /// Someone else is executing this key: wait, then look again.
    Follow(Waiting),
}

/// A follower's ticket.
pub(crate) struct Waiting {
    generation: u64,
    done: watch::Receiver<bool>,
}

/// How a follower's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The leader finished: look in the store; if nothing is there, execute alone.
    Finished,
    /// The leader went away without finishing (cancelled, or replaced): join again.
    Abandoned,
    /// The leader is taking too long: take over its key.
    TimedOut(u64),
}

/// Held by the executing request (or by the background task revalidating a stale
/// entry, hence owned). Dropping it without [`finish`](Self::finish) (the request was
/// cancelled) hands the key to the next request that joins.
pub(crate) struct LeaderGuard {
    flight: Arc<InFlight>,
    key: CacheKey,
    generation: u64,
}

impl InFlight {
    /// Leads `key` if nobody does, else follows its leader.
    pub(crate) fn join(self: &Arc<Self>, key: CacheKey) -> Role {
        self.enter(key, None)
    }

    /// Leads `key` in place of the leader of generation `stuck`, unless another follower
    /// already took over (then follows that one).
    pub(crate) fn take_over(self: &Arc<Self>, key: CacheKey, stuck: u64) -> Role {
        self.enter(key, Some(stuck))
    }

    fn enter(self: &Arc<Self>, key: CacheKey, stuck: Option<u64>) -> Role {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = keys.get(&key)
            && Some(flight.generation) != stuck
        {
            return Role::Follow(Waiting {
                generation: flight.generation,
                done: flight.done.subscribe(),
            });
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (done, _) = watch::channel(false);
        // Replacing a stuck flight drops its sender: its followers wake and join again.
        keys.insert(key, Flight { generation, done });
        Role::Lead(LeaderGuard {
            flight: Arc::clone(self),
            key,
            generation,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl LeaderGuard {
    /// The leader is done (its response stored or not): followers look in the store.
    pub(crate) fn finish(self) {
        if let Some(flight) = self.remove() {
            flight.done.send_replace(true);
        }
    }

    /// Removes this leader's flight, unless a follower already took it over.
    fn remove(&self) -> Option<Flight> {
        let mut keys = self
            .flight
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match keys.get(&self.key) {
            Some(flight) if flight.generation == self.generation => keys.remove(&self.key),
            _ => None,
        }
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        // After `finish` this finds nothing. Otherwise the request was cancelled: dropping
        // the flight (its sender) outside the lock wakes the followers as `Abandoned`.
        drop(self.remove());
    }
}

/// Waits until the leader is done, at most `limit`.
pub(crate) async fn follow(mut waiting: Waiting, limit: Duration) -> Outcome {
    let finished = tokio::time::timeout(limit, async {
        loop {
            if *waiting.done.borrow_and_update() {
                return true;
            }
            if waiting.done.changed().await.is_err() {
                return *waiting.done.borrow();
            }
        }
    })
    .await;
    match finished {
        Ok(true) => Outcome::Finished,
        Ok(false) => Outcome::Abandoned,
        Err(_) => Outcome::TimedOut(waiting.generation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::RequestDigest;
    use crate::scope::Bucket;

    fn key() -> CacheKey {
        let none = serde_json::Value::Null;
        let (parts, _) = http::Request::get("/").body(()).unwrap().into_parts();
        CacheKey::new(
            &crate::cache::key::Target::new(&parts, &[], false),
            &RequestDigest::new("q", None, &none, &none),
            &Bucket::derive(&[], None),
        )
    }

    fn lead(role: Role) -> LeaderGuard {
        match role {
            Role::Lead(guard) => guard,
            Role::Follow(_) => panic!("expected to lead"),
        }
    }

    fn waiting(role: Role) -> Waiting {
        match role {
            Role::Follow(waiting) => waiting,
            Role::Lead(_) => panic!("expected to follow"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn followers_learn_that_the_leader_finished() {
        let flight = Arc::new(InFlight::default());
        let leader = lead(flight.join(key()));
        let follower = waiting(flight.join(key()));
        leader.finish();
        assert_eq!(
            follow(follower, Duration::from_secs(10)).await,
            Outcome::Finished
        );
        assert_eq!(flight.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_leader_abandons_its_key() {
        let flight = Arc::new(InFlight::default());
        let leader = lead(flight.join(key()));
        let follower = waiting(flight.join(key()));
        drop(leader);
        assert_eq!(
            follow(follower, Duration::from_secs(10)).await,
            Outcome::Abandoned
        );
        // The next request leads.
        let _next = lead(flight.join(key()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_follower_to_time_out_takes_over_and_the_rest_follow_it() {
        let flight = Arc::new(InFlight::default());
        let stuck = lead(flight.join(key()));
        let first = waiting(flight.join(key()));
        let second = waiting(flight.join(key()));
        let Outcome::TimedOut(generation) = follow(first, Duration::from_secs(1)).await else {
            panic!("expected a time-out");
        };
        let new_leader = lead(flight.take_over(key(), generation));
        // The second follower is woken at once (not after its own full wait) and joins
        // the new leader instead of executing.
        assert_eq!(
            follow(second, Duration::from_secs(3600)).await,
            Outcome::Abandoned
        );
        let second = waiting(flight.join(key()));
        // A late second take-over of the same stuck generation follows the new leader.
        let third = waiting(flight.take_over(key(), generation));
        // The stuck leader finishing late does not remove the new leader's flight.
        stuck.finish();
        assert_eq!(flight.len(), 1);
        new_leader.finish();
        assert_eq!(
            follow(second, Duration::from_secs(1)).await,
            Outcome::Finished
        );
        assert_eq!(
            follow(third, Duration::from_secs(1)).await,
            Outcome::Finished
        );
        assert_eq!(flight.len(), 0);
    }
}
