//! The store seam: where responses are kept, and how they are found, stored and purged.
//!
//! The request pipeline talks to [`Store`] only, through [`ResponseStore`]. Today the one
//! store is [`MemoryStore`] (moka, in-process); a shared tier implements the same trait
//! and joins [`Store`] as another variant, without touching the pipeline.
//!
//! Freshness is decided by the caller from the entry's own instants
//! ([`CachedResponse::freshness`]), on tokio's clock, so every store agrees and paused-time
//! tests work; a store only promises to return nothing past [`CachedResponse::usable_until`].

mod memory;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::cache::key::CacheKey;
use crate::cache::purge::{EntryMeta, Purge, PurgeError, Purged};

pub(crate) use self::memory::MemoryStore;

/// One stored response. Only 200 responses are stored, so the status is implied.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    /// Representation headers only, `Cache-Control` already private for a scoped
    /// operation (see [`stored_headers`](crate::cache::stored_headers)).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Strong validator over the body and the bucket.
    pub(crate) etag: HeaderValue,
    pub(crate) stored_at: Instant,
    /// Fresh until then.
    pub(crate) expires_at: Instant,
    /// Served stale while one background request revalidates it, until then.
    pub(crate) stale_until: Instant,
    /// Served stale when revalidating fails, until then.
    pub(crate) error_until: Instant,
    pub(crate) meta: EntryMeta,
}

/// How usable an entry is at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Within stale-while-revalidate: serve it and revalidate in the background.
    Stale,
    /// Past stale-while-revalidate, within stale-if-error: execute, and serve it only if
    /// that fails.
    IfError,
}

impl CachedResponse {
    pub(crate) fn freshness(&self, now: Instant) -> Option<Freshness> {
        if now < self.expires_at {
            Some(Freshness::Fresh)
        } else if now < self.stale_until {
            Some(Freshness::Stale)
        } else if now < self.error_until {
            Some(Freshness::IfError)
        } else {
            None
        }
    }

    /// After this instant the entry is of no use at all.
    pub(crate) fn usable_until(&self) -> Instant {
        self.expires_at.max(self.stale_until).max(self.error_until)
    }
}

/// A point in the stores' purge histories, taken before an execution starts. An entry
/// stored with it is dropped if a purge since then matches it: the execution may have read
/// data the purge was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    /// Purges this process's memory has seen.
    pub(crate) local: u64,
    /// The shared tier's purge sequence, as this process last heard it (never ahead of
    /// Redis, so an entry never looks younger than it is). 0 without a shared tier.
    pub(crate) shared: u64,
}

/// Where a hit came from: `x-cache-tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Memory,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Redis,
}

impl Source {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Source::Memory => "memory",
            Source::Redis => "redis",
        })
    }
}

/// What a lookup tells a shared tier about the request, to check its purge records in the
/// same round trip: the bucket's claim values ([`claim_tag`]s), the operation name and the
/// root fields. An entry stored under the key holds the same.
///
/// [`claim_tag`]: crate::cache::purge::claim_tag
#[derive(Debug, Default, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Probe {
    pub(crate) claims: Vec<Arc<[u8]>>,
    pub(crate) operation: Option<Arc<str>>,
    pub(crate) fields: Vec<Arc<str>>,
}

/// An entry found, and the tier that held it.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) entry: Arc<CachedResponse>,
    pub(crate) source: Source,
}

/// Why a lookup found nothing to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Nothing usable is stored under the key.
    Absent,
    /// The instance cannot know what the fleet purged meanwhile, so it serves nothing
    /// it holds (cut off from the fleet's purges, or Redis lost changes it had recorded).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    OutOfStep,
    /// The shared tier was not asked (its breaker is open) or did not answer in time.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Unreachable,
}

/// What a miss's leader may do: execute (holding the fleet-wide lease, if any), or serve
/// the entry another instance stored while this one waited for its lease.
#[derive(Debug)]
pub(crate) enum Lease {
    /// Execute. `Some` holds the shared lease until the entry is stored or dropped.
    Execute(Option<LeaseGuard>),
    /// Execute without a lease: the fleet could not be asked who executes, for this
    /// reason (which the miss reports, rather than `absent`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Blind(Missed),
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Filled(Hit),
}

/// Holds a fleet-wide lease; dropping it releases the lease (unless a store took it over).
/// What holds it is the shared tier's business: the cache only keeps it alive.
#[derive(Debug)]
pub(crate) struct LeaseGuard {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) _hold: Box<dyn std::fmt::Debug + Send + Sync>,
}

/// What the response cache holds right now, from
/// [`ScopedCacheLayer::stats`](crate::ScopedCacheLayer::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Entries stored (fresh or kept for serving stale).
    pub entries: u64,
    /// Their weight against [`max_bytes`](crate::ScopedCacheLayerBuilder::max_bytes):
    /// bodies, headers, tags and the purge index, plus a fixed overhead per entry.
    pub bytes: u64,
}

/// A response store.
pub(crate) trait ResponseStore: Send + Sync + std::fmt::Debug {
    /// The entry for `key`, unless it is past [`CachedResponse::usable_until`] at `now`.
    /// `probe` is only called on a memory miss (see [`Probe`]).
    fn get<F>(
        &self,
        key: &CacheKey,
        now: Instant,
        probe: F,
    ) -> impl Future<Output = Result<Hit, Missed>> + Send
    where
        F: FnOnce() -> Probe + Send;

    /// Whether no purge since `since` matches `entry` (one found at `since`, served
    /// later: within stale-if-error, after a failed execution).
    fn still_valid(&self, entry: &CachedResponse, since: Epoch) -> bool;

    /// The entry for `key` in this process's memory only.
    fn get_local(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>>;

    /// The current point in the purge history.
    fn epoch(&self) -> Epoch;

    /// Stores `entry` under `key`, unless a purge since `since` matches it. Returns whether
    /// it was stored.
    fn insert(
        &self,
        key: CacheKey,
        entry: CachedResponse,
        since: Epoch,
    ) -> impl Future<Output = bool> + Send;

    /// Removes every entry `purge` selects; says how many, and whether the fleet has it.
    fn purge(&self, purge: &Purge) -> impl Future<Output = Result<Purged, PurgeError>> + Send;

    fn stats(&self) -> CacheStats;
}
