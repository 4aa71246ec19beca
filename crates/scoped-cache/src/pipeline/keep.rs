//! What becomes of a miss's response: stored (with its lifetimes, tags and `ETag`), or
//! not and why, and what a learned scope learns from it.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::ETAG;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::cache::purge::{EntryMeta, Purge, Tag};
use crate::cache::store::{CachedResponse, Epoch, ResponseStore};
use crate::cache::{self, NotStored, validator};
use crate::claims::ReadLog;
use crate::observe::Reason;
use crate::rejection::graphql_error;
use crate::report::ExecutionReport;
use crate::scope::Decision;
use crate::scope::learned::Subject;

use super::Pipeline;
use super::lookup::{Lookup, scope_claims};

/// What becomes of a miss's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Store it if it may be stored (an execution that started at this epoch).
    Store(Epoch),
    /// Never store it: only learn the scope of its fields from what it read.
    LearnOnly,
}

/// Whether a miss's response may be stored, and under which lifetimes and epoch: the
/// response's own verdict (`lifetimes`), then what the request allows (`keep`), then
/// whether its entity tags can be relied on (a response tagged wrongly would never be
/// purged by the mutations that change it).
///
/// `fresh_for`: how long an inner layer (on the same route, closer to the handler) still
/// serves this answer fresh; this layer keeps it fresh no longer.
pub(super) fn decide(
    lifetimes: Result<cache::Lifetimes, NotStored>,
    keep: Keep,
    unreliable_tags: bool,
    fresh_for: Option<Duration>,
) -> Result<(cache::Lifetimes, Epoch), NotStored> {
    let mut lifetimes = lifetimes?;
    if let Some(fresh_for) = fresh_for {
        lifetimes.ttl = lifetimes.ttl.min(fresh_for);
        if lifetimes.ttl.is_zero() {
            return Err(NotStored::ZeroTtl);
        }
    }
    match keep {
        Keep::LearnOnly => Err(NotStored::Learning),
        Keep::Store(_) if unreliable_tags => Err(NotStored::UnreliableTags),
        Keep::Store(epoch) => Ok((lifetimes, epoch)),
    }
}

/// Whether a learned scope learns from this response: when it would be stored, or when
/// the only thing keeping it out is a claim read its scope does not cover yet (that read
/// is what widens it). Responses with errors teach nothing.
pub(super) fn should_learn(
    decision: &Decision,
    lifetimes: &Result<cache::Lifetimes, NotStored>,
) -> bool {
    !decision.learned.is_empty()
        && matches!(lifetimes, Ok(_) | Err(NotStored::UncoveredClaimRead(_)))
}

impl Pipeline {
    /// Stores a miss's response if it may be stored (`keep`), learns the scope of learned
    /// fields from what it read, and labels it: with `cold` (why the cache had nothing)
    /// when it was stored, else with why it was not. Returns the response and whether it
    /// was stored.
    pub(super) async fn finish_miss(
        &self,
        response: Response,
        lookup: &Lookup<'_>,
        reads: &ReadLog,
        keep: Keep,
        cold: Reason,
    ) -> (Response, Result<(), NotStored>) {
        let (mut parts, body) = response.into_parts();
        let report = ExecutionReport::take(&mut parts.headers);
        // An outer layer stores this answer too, and tags it by the same report (with,
        // once this layer stored it, how long it stays fresh here).
        let mut for_outer = lookup
            .outer
            .exists()
            .then(|| report.clone().unwrap_or_default());
        if let Some(report) = &for_outer {
            report.attach(&mut parts.headers);
        }
        let size = http_body::Body::size_hint(&body).upper();
        if let Err(reason) = cache::check_head(
            parts.status,
            &parts.headers,
            size,
            self.limits.entry_bytes,
            &self.key_headers,
        ) {
            tracing::debug!(?reason, "response not stored");
            let response = Response::from_parts(parts, body);
            let because = Reason::from(&reason);
            return (self.unstored_miss(response, lookup, because), Err(reason));
        }
        let bytes = match read_bounded(body, self.limits.entry_bytes).await {
            Ok(bytes) => bytes,
            // A layer-made 502: labelled like any answer that was not stored.
            Err(failed) => {
                let reason = NotStored::Status;
                let because = Reason::from(&reason);
                return (self.unstored_miss(failed, lookup, because), Err(reason));
            }
        };
        let lifetimes = cache::lifetimes(&parts.headers, &bytes, lookup.decision, reads);
        if should_learn(lookup.decision, &lifetimes) {
            self.learn(lookup.decision, reads).await;
        }
        let unreliable = report.as_ref().is_some_and(|r| r.unreliable);
        let fresh_for = report
            .as_ref()
            .and_then(|r| r.fresh_for)
            .map(Duration::from_secs);
        let outcome = match decide(lifetimes, keep, unreliable, fresh_for) {
            Ok((lifetimes, epoch)) => {
                if let Some(report) = &mut for_outer {
                    ExecutionReport::take(&mut parts.headers);
                    report.fresh_for = Some(lifetimes.ttl.as_secs());
                    report.attach(&mut parts.headers);
                }
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map_or(&b""[..], HeaderValue::as_bytes);
                let etag = validator::etag(&lookup.bucket, content_type, &bytes);
                match self.entry(&parts.headers, &bytes, &etag, lifetimes, lookup, report) {
                    None => Err(NotStored::ZeroTtl),
                    Some(entry) => {
                        if self.store.insert(lookup.key, entry, epoch).await {
                            parts.headers.insert(ETAG, etag);
                            Ok(())
                        } else if !self.store.in_step(tokio::time::Instant::now()) {
                            Err(NotStored::OutOfStep)
                        } else {
                            Err(NotStored::PurgedMeanwhile)
                        }
                    }
                }
            }
            Err(NotStored::UncoveredClaimRead(path)) if lookup.decision.learned.is_empty() => {
                // Configuration bug, not an attack: say which claim (its path, never its value).
                tracing::warn!(claim = %path, "a resolver read a claim outside the rule's scope; response not cached");
                Err(NotStored::UncoveredClaimRead(path))
            }
            Err(reason) => Err(reason),
        };
        let response = Response::from_parts(parts, Body::from(bytes));
        match &outcome {
            Ok(()) => (self.labelled_miss(response, lookup, cold), outcome),
            Err(reason) => {
                tracing::debug!(?reason, "response not stored");
                let because = match (reason, cold) {
                    // The store refused it for the same cause the lookup found nothing.
                    (NotStored::PurgedMeanwhile, Reason::OutOfStep | Reason::RedisUnavailable) => {
                        cold
                    }
                    _ => Reason::from(reason),
                };
                (self.unstored_miss(response, lookup, because), outcome)
            }
        }
    }

    /// The entry to store for a response; `None` when its lifetime is beyond the clock.
    pub(super) fn entry(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        etag: &http::HeaderValue,
        lifetimes: cache::Lifetimes,
        lookup: &Lookup<'_>,
        report: Option<ExecutionReport>,
    ) -> Option<CachedResponse> {
        let now = Instant::now();
        let expires_at = now.checked_add(lifetimes.ttl)?;
        Some(CachedResponse {
            headers: cache::stored_headers(headers, lookup.decision.is_scoped(), &self.vary),
            // An exact-size copy: the collected body may be a slice of a larger buffer (or
            // a `Vec` with spare capacity), which the byte bound would not see.
            body: Bytes::copy_from_slice(body),
            etag: etag.clone(),
            stored_at: now,
            expires_at,
            stale_until: expires_at
                .checked_add(lifetimes.stale_while_revalidate)
                .unwrap_or(expires_at),
            error_until: expires_at
                .checked_add(lifetimes.stale_if_error)
                .unwrap_or(expires_at),
            meta: self.entry_meta(lookup, report),
        })
    }

    /// What an entry is tagged with: the entities and types in it (at most
    /// `max_entity_tags` entities, past which their types match any entity), its
    /// operation, its bucket's claim values and its root fields.
    pub(super) fn entry_meta(
        &self,
        lookup: &Lookup<'_>,
        report: Option<ExecutionReport>,
    ) -> EntryMeta {
        let mut tags = Vec::new();
        if let Some(report) = report {
            tags.extend(report.types.into_iter().map(|t| Tag::Type(t.into())));
            let mut overflowed = report.overflowed;
            for (index, (ty, id)) in report.entities.into_iter().enumerate() {
                if index < self.max_entity_tags {
                    tags.push(Tag::Entity(ty.into(), id.into()));
                } else if !overflowed.contains(&ty) {
                    overflowed.push(ty);
                }
            }
            tags.extend(overflowed.into_iter().map(|t| Tag::AnyOf(t.into())));
        }
        EntryMeta::new(
            tags,
            lookup.name.cloned(),
            scope_claims(lookup),
            lookup.root_fields.to_vec(),
        )
    }

    /// Records what a learned field's execution read; a scope that widened has its
    /// narrower entries purged.
    pub(super) async fn learn(&self, decision: &Decision, reads: &ReadLog) {
        let widened = self
            .learned
            .learn(decision, |subject| match Subject::parse(subject) {
                Subject::Field(field) => reads.reads_of(Some(field)),
                Subject::Operation(_) | Subject::Unnamed => reads.reads_of(None),
            });
        if widened.is_empty() {
            return;
        }
        tracing::info!(subjects = ?widened, "a learned scope widened; its narrower entries are purged");
        // A subject is a root field (`Query.feed`), an operation's rule (`operation Feed`),
        // or the default rule of an operation without either (`operation`); the narrower
        // entries are under keys no lookup makes any more, purged to free their room (and
        // for instances that have not learned the wider scope yet).
        let mut fields = Vec::new();
        let mut purges = Vec::new();
        for subject in widened {
            match Subject::parse(&subject) {
                // Operations without root fields (`{ __typename }`) name nothing narrower
                // to purge, and purging everything would let any client empty the cache:
                // their entries are under keys no lookup makes any more, and expire.
                Subject::Unnamed => {}
                Subject::Operation(name) => purges.push(Purge::operation(name)),
                Subject::Field(_) => fields.push(subject),
            }
        }
        if !fields.is_empty() {
            purges.push(Purge::fields(fields));
        }
        for purge in purges {
            if let Err(err) = self.store.purge(&purge).await {
                tracing::warn!(%err, "purging a widened scope's entries failed");
            }
        }
    }
}

/// Reads a response body the size hint promised is at most `limit` bytes; a body that
/// breaks that promise is cut off rather than buffered without bound. A body that fails
/// becomes a GraphQL-shaped 502.
pub(super) async fn read_bounded(body: Body, limit: usize) -> Result<Bytes, Response> {
    crate::wire::body::read_bounded(None, body, limit)
        .await
        .map_err(|_| {
            tracing::warn!("inner service failed while sending its response body");
            graphql_error(
                StatusCode::BAD_GATEWAY,
                "response body failed",
                "INTERNAL_SERVER_ERROR",
            )
        })
}
