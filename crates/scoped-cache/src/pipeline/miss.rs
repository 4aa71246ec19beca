//! A miss: one execution per key (here, and across the fleet), stale-if-error's
//! fallback, learning, and the background revalidation of a stale entry.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{Request, StatusCode, request};
use tokio::time::Instant;
use tower::Service;
use tracing::Instrument;

use crate::cache::NotStored;
use crate::cache::inflight::Role;
use crate::cache::store::{Epoch, Hit, Lease, ResponseStore};
use crate::claims::RequestReads;
use crate::observe::{Note, Reason, names};
use crate::rejection::graphql_error;
use crate::task::AbortOnDrop;

use super::keep::Keep;
use super::lookup::{Asked, Lookup, OwnedLookup, probe};
use super::respond::not_modified_if_matching;
use super::{Pipeline, hand_on};

/// The longest a revalidation (in the background, or in the foreground with a stale
/// entry to fall back on) may take before it counts as failed.
pub(super) const REVALIDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A miss to execute: the request, and what its lookup found.
pub(super) struct Miss<'a> {
    pub(super) parts: request::Parts,
    pub(super) body: Bytes,
    pub(super) lookup: &'a Lookup<'a>,
    pub(super) asked: &'a Asked,
    /// An entry within stale-if-error, served if the execution fails.
    pub(super) fallback: Option<Hit>,
    /// The store's epoch when the request began: an answer a purge since then would have
    /// removed is not stored.
    pub(super) epoch: Epoch,
    /// Why the cache had nothing to serve (the reason a stored answer goes out with).
    pub(super) cold: Reason,
}

/// Why an execution that had a stale entry to fall back on failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    TimedOut,
    Panicked,
    ServiceError,
}

impl Pipeline {
    /// Executes the miss's operation once per key (here, and across the fleet with a
    /// shared tier), stores its answer, and serves its fallback if the execution fails
    /// within stale-if-error.
    pub(super) async fn miss<S>(
        &self,
        miss: Miss<'_>,
        inner: S,
        note: &mut Note,
    ) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let Miss {
            mut parts,
            body,
            lookup,
            asked,
            fallback,
            epoch,
            mut cold,
        } = miss;
        let leader = if self.coalesce {
            let waited = self.lead_or_wait(lookup.key).await;
            // The wait may have been long: a token revoked meanwhile gets nothing.
            if let Some(refusal) = self.revoked(lookup.claims) {
                return Ok(self.refused_auth(refusal, &parts.headers));
            }
            match waited {
                Ok(leader) => leader,
                Err(hit) => {
                    metrics::counter!(names::COALESCED).increment(1);
                    return Ok(self.hit(asked, &hit, lookup, None, Instant::now()));
                }
            }
        } else {
            None
        };
        // One execution per key across the fleet too (a no-op without a shared tier), for
        // the request leading here; one whose leader stored nothing executes at once.
        let lease = match &leader {
            Some(_) => self.store.lease(&lookup.key, || probe(lookup)).await,
            None => Lease::Execute(None),
        };
        // The fleet's lease may have been waited on too: whatever it ended with (an
        // entry, a holder that stored nothing, a time-out), a token revoked meanwhile gets
        // nothing.
        if let Some(refusal) = self.revoked(lookup.claims) {
            if let Some(leader) = leader {
                leader.finish();
            }
            return Ok(self.refused_auth(refusal, &parts.headers));
        }
        let _lease = match lease {
            Lease::Execute(lease) => lease,
            Lease::Blind(missed) => {
                // Found nothing, and then could not ask the fleet: the second is why
                // this answer was not shared.
                if cold == Reason::Absent {
                    cold = Reason::from(missed);
                }
                None
            }
            Lease::Filled(hit) => {
                if let Some(leader) = leader {
                    leader.finish();
                }
                metrics::counter!(names::COALESCED).increment(1);
                return Ok(self.hit(asked, &hit, lookup, None, Instant::now()));
            }
        };

        let reads = hand_on(&mut parts, lookup.claims);
        let request = Request::from_parts(parts, Body::from(body));
        let started = Instant::now();
        let response = match fallback {
            None => {
                let mut inner = inner;
                let response = inner.call(request).instrument(execute_span()).await?;
                note.executed = Some(started.elapsed().as_secs_f64());
                let (response, stored) = self
                    .finish_miss(response, lookup, reads.log(), Keep::Store(epoch), cold)
                    .await;
                if stored.is_ok() {
                    not_modified_if_matching(asked, response)
                } else {
                    response
                }
            }
            // Within stale-if-error: a failed execution is answered with the stale entry.
            Some(stale) => {
                let executed = match execute_guarded(inner, request).await {
                    Ok(response) => {
                        note.executed = Some(started.elapsed().as_secs_f64());
                        let keep = Keep::Store(epoch);
                        Some(
                            self.finish_miss(response, lookup, reads.log(), keep, cold)
                                .await,
                        )
                    }
                    Err(failure) => {
                        tracing::warn!(?failure, "execution failed; serving the stale entry");
                        None
                    }
                };
                match executed {
                    Some((response, Ok(()))) => not_modified_if_matching(asked, response),
                    Some((response, outcome)) if !is_failure(response.status(), &outcome) => {
                        response
                    }
                    // Failed: the stale entry, unless a purge removed it meanwhile.
                    _ if self.store.still_valid(&stale.entry, epoch) => {
                        let reason = Some(Reason::StaleIfError);
                        self.hit(asked, &stale, lookup, reason, Instant::now())
                    }
                    Some((failed, _)) => failed,
                    None => self.unstored_miss(
                        graphql_error(
                            StatusCode::BAD_GATEWAY,
                            "the operation failed",
                            "INTERNAL_SERVER_ERROR",
                        ),
                        lookup,
                        Reason::Status,
                    ),
                }
            }
        };
        if let Some(leader) = leader {
            leader.finish();
        }
        Ok(response)
    }

    /// An operation whose learned scope is not known yet: executed, never stored, and its
    /// claim reads learned from.
    pub(super) async fn learn_only<S>(
        &self,
        mut parts: request::Parts,
        body: Bytes,
        lookup: &Lookup<'_>,
        mut inner: S,
        note: &mut Note,
    ) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response>,
    {
        let reads = hand_on(&mut parts, lookup.claims);
        let started = Instant::now();
        let response = inner
            .call(Request::from_parts(parts, Body::from(body)))
            .instrument(execute_span())
            .await?;
        note.executed = Some(started.elapsed().as_secs_f64());
        let (mut response, _) = self
            .finish_miss(
                response,
                lookup,
                reads.log(),
                Keep::LearnOnly,
                Reason::LearningScope,
            )
            .await;
        // Its scope is not known yet: it may depend on any claim.
        if lookup.claims.is_some() {
            crate::wire::control::make_private(response.headers_mut());
        }
        Ok(response)
    }

    /// Revalidates a stale entry in the background, with the claims of the request that
    /// found it stale (so it lands in the same bucket), once per key: if anyone executes
    /// the key already (a miss, or another revalidation), nothing more is started.
    pub(super) fn revalidate<S>(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        mut parts: request::Parts,
        body: Bytes,
        inner: S,
        epoch: Epoch,
    ) where
        S: Service<Request<Body>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let Role::Lead(leader) = self.in_flight.join(lookup.key) else {
            return;
        };
        let shared = Arc::clone(self);
        let owned = OwnedLookup::from(lookup);
        // The background request reads into a log of its own.
        parts.extensions.remove::<RequestReads>();
        tokio::spawn(async move {
            let lookup = owned.as_lookup();
            // A token revoked since the stale hit does not get its bucket refreshed.
            if shared.revoked(lookup.claims).is_some() {
                leader.finish();
                return;
            }
            let reads = hand_on(&mut parts, lookup.claims);
            let request = Request::from_parts(parts, Body::from(body));
            // The execution has its own time limit; this one also bounds reading its body.
            let revalidated = tokio::time::timeout(2 * REVALIDATE_TIMEOUT, async {
                match execute_guarded(inner, request).await {
                    Ok(response) => {
                        let keep = Keep::Store(epoch);
                        let (response, outcome) = shared
                            .finish_miss(response, &lookup, reads.log(), keep, Reason::Absent)
                            .await;
                        if is_failure(response.status(), &outcome) {
                            tracing::warn!(
                                status = %response.status(),
                                ?outcome,
                                "background revalidation failed; the stale entry keeps serving"
                            );
                        }
                    }
                    Err(failure) => tracing::warn!(
                        ?failure,
                        "background revalidation failed; the stale entry keeps serving"
                    ),
                }
            })
            .await;
            if revalidated.is_err() {
                tracing::warn!("background revalidation timed out; the stale entry keeps serving");
            }
            leader.finish();
        });
    }
}

/// Runs the (ready) inner service in a task of its own, so a panic or a hang is a
/// [`Failure`] rather than the end of the request.
pub(super) async fn execute_guarded<S>(
    mut inner: S,
    request: Request<Body>,
) -> Result<Response, Failure>
where
    S: Service<Request<Body>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    let execution = inner.call(request).instrument(execute_span());
    let mut task = AbortOnDrop(tokio::spawn(execution));
    match tokio::time::timeout(REVALIDATE_TIMEOUT, &mut task.0).await {
        Err(_) => Err(Failure::TimedOut),
        Ok(Err(_)) => Err(Failure::Panicked),
        Ok(Ok(Err(_))) => Err(Failure::ServiceError),
        Ok(Ok(Ok(response))) => Ok(response),
    }
}

/// Whether an execution failed, for stale-if-error: anything but a clean `200` result.
pub(super) fn is_failure(status: StatusCode, outcome: &Result<(), NotStored>) -> bool {
    status != StatusCode::OK
        || matches!(
            outcome,
            Err(NotStored::Status | NotStored::GraphqlErrors | NotStored::TooLarge)
        )
}

/// The child span of the request's span an execution of the handler runs in: what
/// the schema and its resolvers record nests under it.
pub(super) fn execute_span() -> tracing::Span {
    tracing::info_span!("scoped_cache.execute")
}
