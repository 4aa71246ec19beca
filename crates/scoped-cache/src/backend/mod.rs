//! Where the layer keeps its state: memory alone, or memory in front of Redis (feature
//! `redis`). One enum per kind of state, so the pipeline calls one type without boxing a
//! future per request, and neither the cache (`cache/`) nor the revocations
//! (`revocation/`) know the Redis tier (`tier/`), which builds on both.

use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use crate::cache::key::CacheKey;
use crate::cache::purge::{Purge, PurgeError, Purged};
use crate::cache::store::{
    CacheStats, CachedResponse, Epoch, Hit, Lease, MemoryStore, Missed, Probe, ResponseStore,
    Source,
};
use crate::claims::Claims;
use crate::observe::names;
use crate::rejection::AuthErrorKind;
use crate::revocation::{MemoryRevocations, RevocationStore, Revoke, RevokeError, UnixClock};

/// The store the layer uses: one variant per implementation, so the pipeline calls one
/// type without boxing a future per request.
#[derive(Debug)]
pub(crate) enum Store {
    Memory(MemoryStore),
    /// Memory in front of Redis (feature `redis`).
    #[cfg(feature = "redis")]
    Tiered(Arc<crate::tier::Tier>),
}

impl Store {
    /// The `x-cache-tier` of a hit: only with a shared tier, where it tells something (a
    /// memory-only layer keeps its hits one header lighter).
    pub(crate) fn tier_header(&self, source: Source) -> Option<HeaderValue> {
        match self {
            Store::Memory(_) => {
                let _ = source;
                None
            }
            #[cfg(feature = "redis")]
            Store::Tiered(_) => Some(source.header_value()),
        }
    }

    /// Whether this instance knows every change the fleet made (always, without a shared
    /// tier).
    pub(crate) fn in_step(&self, now: Instant) -> bool {
        match self {
            Store::Memory(_) => {
                let _ = now;
                true
            }
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.in_step(now),
        }
    }

    /// Starts the shared tier's background work, if there is a tier and it has not
    /// started (a lookup starts it too).
    pub(crate) fn start(&self) {
        match self {
            Store::Memory(_) => {}
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.start(),
        }
    }

    /// The shared tier's state at `now`, if there is one.
    pub(crate) fn tier_health(&self, now: Instant) -> Option<crate::health::TierHealth> {
        match self {
            Store::Memory(_) => {
                let _ = now;
                None
            }
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => Some(tier.health(now)),
        }
    }

    /// Whether this store is shared by a fleet (a Redis tier).
    pub(crate) fn is_shared(&self) -> bool {
        match self {
            Store::Memory(_) => false,
            #[cfg(feature = "redis")]
            Store::Tiered(_) => true,
        }
    }

    /// The fleet-wide lease of a miss: with a shared tier, one instance executes a key at
    /// a time and the others wait for its entry (see [`RedisTier::lease`]).
    ///
    /// [`RedisTier::lease`]: crate::RedisTier::lease
    pub(crate) async fn lease<F>(&self, key: &CacheKey, probe: F) -> Lease
    where
        F: FnOnce() -> Probe + Send,
    {
        match self {
            Store::Memory(_) => {
                let _ = (key, probe);
                Lease::Execute(None)
            }
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.lease(key, probe).await,
        }
    }
}

impl ResponseStore for Store {
    async fn get<F>(&self, key: &CacheKey, now: Instant, probe: F) -> Result<Hit, Missed>
    where
        F: FnOnce() -> Probe + Send,
    {
        match self {
            Store::Memory(store) => store.get(key, now, probe).await,
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.get(key, now, probe).await,
        }
    }

    fn still_valid(&self, entry: &CachedResponse, since: Epoch) -> bool {
        match self {
            Store::Memory(store) => store.still_valid(entry, since),
            #[cfg(feature = "redis")]
            // A cut-off instance cannot know what the fleet purged since.
            Store::Tiered(tier) => {
                tier.in_step(Instant::now()) && tier.l1.still_valid(entry, since)
            }
        }
    }

    fn get_local(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        match self {
            Store::Memory(store) => store.get_local(key, now),
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.get_local(key, now),
        }
    }

    fn epoch(&self) -> Epoch {
        match self {
            Store::Memory(store) => store.epoch(),
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.epoch(),
        }
    }

    async fn insert(&self, key: CacheKey, entry: CachedResponse, since: Epoch) -> bool {
        match self {
            Store::Memory(store) => store.insert(key, entry, since).await,
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.insert(key, entry, since),
        }
    }

    async fn purge(&self, purge: &Purge) -> Result<Purged, PurgeError> {
        let purged = match self {
            Store::Memory(store) => store.purge(purge).await,
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.purge(purge).await,
        };
        if let Ok(purged) = &purged {
            let shared = if purged.fleet_wide { "true" } else { "false" };
            metrics::counter!(names::PURGES, "kind" => purge.kind(), "shared" => shared)
                .increment(1);
            // At debug: every mutation purges. Never the selector's values (claim values).
            tracing::debug!(
                kind = purge.kind(),
                removed = purged.removed,
                fleet_wide = purged.fleet_wide,
                "purged"
            );
        }
        purged
    }

    fn stats(&self) -> CacheStats {
        match self {
            Store::Memory(store) => store.stats(),
            #[cfg(feature = "redis")]
            Store::Tiered(tier) => tier.stats(),
        }
    }
}

/// The revocation store the layer uses: one variant per implementation, like
/// [`Store`].
// Built once per layer; boxing the memory store would add a pointer chase to every
// request's check.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Revocations {
    Memory(MemoryRevocations),
    /// Mirrored in memory, shared through Redis (feature `redis`).
    #[cfg(feature = "redis")]
    Shared(std::sync::Arc<crate::tier::Tier>),
}

impl Revocations {
    /// What the revocation store holds against its bound.
    pub(crate) fn usage(&self) -> crate::health::Usage {
        match self {
            Revocations::Memory(store) => store.usage(),
            #[cfg(feature = "redis")]
            Revocations::Shared(tier) => tier.revocations.usage(),
        }
    }

    /// Tells the rest of the fleet about `revoke` (already recorded here); returns
    /// whether the fleet has it (always, without a shared tier).
    pub(crate) async fn share(&self, revoke: &Revoke) -> bool {
        match self {
            Revocations::Memory(_) => {
                let _ = revoke;
                true
            }
            // Its own task, waited on for at most the insert timeout like a purge: a
            // caller that goes away does not cut it short, and one that waits longer
            // hears "not yet" (it is queued and retried if Redis never records it).
            #[cfg(feature = "redis")]
            Revocations::Shared(tier) => {
                let shared = std::sync::Arc::clone(tier);
                let revoke = revoke.clone();
                let sent = tokio::spawn(async move { shared.share_revocation(&revoke).await });
                matches!(
                    tokio::time::timeout(tier.redis.insert_timeout, sent).await,
                    Ok(Ok(true))
                )
            }
        }
    }

    /// Whether revocations are known well enough to take tokens at `now` (always, without
    /// a shared tier).
    pub(crate) fn known(&self, now: Instant) -> bool {
        match self {
            Revocations::Memory(_) => {
                let _ = now;
                true
            }
            #[cfg(feature = "redis")]
            Revocations::Shared(tier) => tier.knows_revocations(now),
        }
    }

    /// Why a token with `claims` is refused, if it is: revoked, or (a shared tier cut
    /// off from Redis for longer than its `max_lag`) revocations unknown.
    pub(crate) fn refusal(&self, claims: &Claims, clock: &UnixClock) -> Option<AuthErrorKind> {
        if self.is_revoked(claims, clock) {
            return Some(AuthErrorKind::Revoked);
        }
        match self {
            Revocations::Memory(_) => None,
            #[cfg(feature = "redis")]
            Revocations::Shared(tier) => {
                // `build()` may have run outside a runtime: the syncer starts with the
                // first request, whichever route it takes.
                tier.start();
                (!tier.knows_revocations(tokio::time::Instant::now()))
                    .then_some(AuthErrorKind::RevocationsUnavailable)
            }
        }
    }
}

impl RevocationStore for Revocations {
    fn is_revoked(&self, claims: &Claims, clock: &UnixClock) -> bool {
        match self {
            Revocations::Memory(store) => store.is_revoked(claims, clock),
            #[cfg(feature = "redis")]
            Revocations::Shared(tier) => tier.revocations.is_revoked(claims, clock),
        }
    }

    fn revoke(&self, revoke: &Revoke, now: u64) -> Result<(), RevokeError> {
        match self {
            Revocations::Memory(store) => store.revoke(revoke, now),
            #[cfg(feature = "redis")]
            Revocations::Shared(tier) => tier.revocations.revoke(revoke, now),
        }
    }
}
