//! The lookup: the key and bucket a cacheable operation is looked up under, what a
//! cached answer needs from the request, and the wait for another request executing the
//! same key.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, request};
use tokio::time::Instant;

use crate::cache::inflight::{self, LeaderGuard, Outcome, Role};
use crate::cache::key::CacheKey;
use crate::cache::purge::claim_tag;
use crate::cache::store::{Freshness, Hit, Probe, ResponseStore, Source};
use crate::claims::{Claims, RequestReads};
use crate::scope::{Bucket, ClaimPath, Decision};

use super::Pipeline;

/// The longest a request waits for another request executing the same key before it
/// takes the key over.
pub(super) const COALESCE_WAIT: Duration = Duration::from_secs(10);

/// A cacheable operation, looked up under one key.
pub(super) struct Lookup<'a> {
    pub(super) key: CacheKey,
    pub(super) bucket: Bucket,
    /// The rules' decision with learned scopes added.
    pub(super) decision: &'a Decision,
    /// The operation's own name and root fields, for the entry's tags.
    pub(super) name: Option<&'a Arc<str>>,
    pub(super) root_fields: &'a [Arc<str>],
    pub(super) claims: Option<&'a Claims>,
    /// Another layer around this one, whose cache the answer goes on to.
    pub(super) outer: Outer,
}

/// Another layer around this one on the same route, as this one sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outer {
    /// None: this layer answers the client.
    None,
    /// One that verified the same claims (or none, as this one): it may store this
    /// layer's answers, keyed by its own bucket.
    SameCaller,
    /// One that verified other claims (another credential, or none where this one had
    /// one): its bucket is another caller's, and it must store nothing this layer says.
    OtherCaller,
}

impl Outer {
    /// The outer layer of a request whose shared log is `outer_reads`, for a layer that
    /// verified `claims`.
    pub(super) fn of(outer_reads: Option<&RequestReads>, claims: Option<&Claims>) -> Self {
        match outer_reads {
            None => Self::None,
            Some(reads) if reads.same_caller(claims) => Self::SameCaller,
            Some(_) => Self::OtherCaller,
        }
    }

    pub(super) fn exists(self) -> bool {
        self != Self::None
    }
}

/// What a cached answer needs from the request, taken before the request moves on.
pub(super) struct Asked {
    /// `If-None-Match` of a GET (the only cached method a `304` answers).
    pub(super) none_match: Vec<http::HeaderValue>,
    /// An outer layer's read log.
    pub(super) outer_reads: Option<RequestReads>,
}

impl Asked {
    pub(super) fn of(parts: &request::Parts) -> Self {
        let none_match = if parts.method == Method::GET {
            parts
                .headers
                .get_all(http::header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Self {
            none_match,
            outer_reads: RequestReads::existing(&parts.extensions).cloned(),
        }
    }
}

/// A [`Lookup`] that a background task owns.
pub(super) struct OwnedLookup {
    pub(super) key: CacheKey,
    pub(super) bucket: Bucket,
    pub(super) decision: Decision,
    pub(super) name: Option<Arc<str>>,
    pub(super) root_fields: Vec<Arc<str>>,
    pub(super) claims: Option<Claims>,
}

impl From<&Lookup<'_>> for OwnedLookup {
    fn from(lookup: &Lookup<'_>) -> Self {
        Self {
            key: lookup.key,
            bucket: lookup.bucket.clone(),
            decision: lookup.decision.clone(),
            name: lookup.name.cloned(),
            root_fields: lookup.root_fields.to_vec(),
            claims: lookup.claims.map(Claims::for_request),
        }
    }
}

impl OwnedLookup {
    pub(super) fn as_lookup(&self) -> Lookup<'_> {
        Lookup {
            key: self.key,
            bucket: self.bucket.clone(),
            decision: &self.decision,
            name: self.name.as_ref(),
            root_fields: &self.root_fields,
            claims: self.claims.as_ref(),
            // A background revalidation answers no one.
            outer: Outer::None,
        }
    }
}

/// What a shared tier checks its purge records against on this lookup.
pub(super) fn probe(lookup: &Lookup<'_>) -> Probe {
    Probe {
        claims: scope_claims(lookup),
        operation: lookup.name.cloned(),
        fields: lookup.root_fields.to_vec(),
    }
}

/// The claim values of the lookup's bucket ([`claim_tag`]s, sorted): what its entry is
/// tagged with for scope purges. `iss` is in every claim-scoped bucket, so a purge can
/// name it too.
pub(super) fn scope_claims(lookup: &Lookup<'_>) -> Vec<Arc<[u8]>> {
    let mut claims = Vec::new();
    if let Some(raw) = lookup.claims.map(Claims::raw)
        && lookup.decision.is_scoped()
    {
        let iss = ClaimPath::top_level("iss");
        for path in std::iter::once(&iss).chain(lookup.decision.scope.iter()) {
            if let Some(value) = path.lookup(raw) {
                claims.push(claim_tag(path, value));
            }
        }
        claims.sort();
        claims.dedup();
    }
    claims
}

impl Pipeline {
    /// Joins the execution of `key`: `Ok(Some(guard))` to lead it, `Ok(None)` to execute
    /// alone (the leader finished without storing), `Err(entry)` when a leader stored it.
    pub(super) async fn lead_or_wait(&self, key: CacheKey) -> Result<Option<LeaderGuard>, Hit> {
        let mut role = self.in_flight.join(key);
        // Each round either leads, or waits for one leader; a leader that is stuck is taken
        // over, a cancelled one is replaced. A few rounds bound a follower's total wait.
        for _ in 0..3 {
            let waiting = match role {
                Role::Lead(guard) => return Ok(Some(guard)),
                Role::Follow(waiting) => waiting,
            };
            let outcome = inflight::follow(waiting, COALESCE_WAIT).await;
            let now = Instant::now();
            // The leader ran here, so its entry is in this process's memory.
            if let Some(entry) = self.store.get_local(&key, now)
                && entry.freshness(now) == Some(Freshness::Fresh)
            {
                return Err(Hit {
                    entry,
                    source: Source::Memory,
                });
            }
            role = match outcome {
                // Not stored (errors, `no-store`, a claim read outside the scope): each
                // waiting request executes for itself.
                Outcome::Finished => return Ok(None),
                Outcome::Abandoned => self.in_flight.join(key),
                Outcome::TimedOut(stuck) => self.in_flight.take_over(key, stuck),
            };
        }
        Ok(None)
    }
}
