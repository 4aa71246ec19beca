//! The layer's health as operators read it: how much each cache holds against its bound,
//! the Redis tier's state, and whether the layer can serve with its guarantees. A leaf,
//! so each part can say its own without importing what reports it.

use serde::Serialize;

/// How much a cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Entries held.
    pub entries: u64,
    /// Bytes held, as weighed against the bound (for revocations: entries).
    pub bytes: u64,
    /// The bound (bytes; for revocations, entries).
    pub bound: u64,
}

/// The Redis tier's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierHealth {
    /// This instance has heard the fleet's purges and revocations within `max_lag`: it
    /// serves cached answers and takes tokens.
    pub in_step: bool,
    /// Redis answers (the breaker is closed).
    pub reachable: bool,
    /// Purges and revocations that hold here only, waiting for Redis to record them.
    pub pending: u64,
}

/// Whether the layer can serve with its guarantees now: for a readiness probe (see
/// [`ScopedCacheLayer::readiness`](crate::ScopedCacheLayer::readiness)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// Every other field says yes.
    pub ready: bool,
    /// Every JWKS source holds keys it may use (fetched, within its max-stale). `true`
    /// with static keys only.
    pub keys: bool,
    /// The Redis tier's state; `None` without one. Ready needs it to know the fleet's
    /// revocations: in step (a tier that cannot reach Redis but heard the fleet within
    /// `max_lag` is still ready; it serves from memory or by execution), or out of step
    /// with `accept_tokens_when_cut_off` set.
    pub tier: Option<TierHealth>,
}
