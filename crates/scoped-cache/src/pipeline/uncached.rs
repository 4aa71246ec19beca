//! Requests the cache does not store (pass-through routes, verify-only routes,
//! mutations, operations a rule bypasses), and the purges a mutation's response makes.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, request};
use tower::Service;
use tracing::Instrument;

use crate::cache::request::Prepared;
use crate::cache::store::ResponseStore;
use crate::cache::{self, CacheStatus};
use crate::claims::{Claims, RequestReads};
use crate::observe::{Reason, because};
use crate::report::ExecutionReport;
use crate::scope::Decision;

use super::keep::read_bounded;
use super::lookup::Outer;
use super::respond::not_for_outer;
use super::{Pipeline, hand_on};

/// Why the rules do not cache an operation (a `query` or not), if they do not.
pub(super) fn bypass_reason(query: bool, decision: &Decision) -> Option<Reason> {
    if !query {
        Some(Reason::NotAQuery)
    } else if decision.bypass && decision.by_default {
        Some(Reason::NoRuleMatched)
    } else if decision.bypass {
        Some(Reason::BypassedByRule)
    } else if decision.max_age.is_zero() {
        Some(Reason::ZeroMaxAge)
    } else {
        None
    }
}

impl Pipeline {
    /// A route the layer does not verify: the request goes to the handler as it is.
    pub(super) async fn passthrough<S>(
        &self,
        req: Request<Body>,
        mut inner: S,
    ) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response>,
    {
        let outer = RequestReads::existing(req.extensions()).is_some();
        let response = inner.call(req).await?;
        // The entity-tags report is for the layers only, never for clients; a mutation it
        // reports purges here too.
        let response = self.invalidate(response, &[], outer).await;
        Ok(because(response, Reason::PassthroughRoute))
    }

    /// Passes a request the cache does not store to the handler; a mutation's response
    /// purges what it invalidates before it is returned.
    pub(super) async fn uncached<S>(
        &self,
        mut parts: request::Parts,
        body: Bytes,
        claims: Option<&Claims>,
        mut inner: S,
        prepared: Option<&Prepared>,
    ) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response>,
    {
        let outer = Outer::of(RequestReads::existing(&parts.extensions), claims);
        hand_on(&mut parts, claims);
        let response = inner
            .call(Request::from_parts(parts, Body::from(body)))
            .instrument(super::miss::execute_span())
            .await?;
        let (mutation_fields, decision): (&[Arc<str>], _) = match prepared {
            Some(Prepared::Operation {
                ty,
                root_fields,
                decision,
                ..
            }) => (
                if *ty == OperationType::Mutation {
                    root_fields
                } else {
                    &[]
                },
                Some(decision),
            ),
            _ => (&[], None),
        };
        let mut response = self
            .invalidate(response, mutation_fields, outer.exists())
            .await;
        // Not stored here, so not around this layer either.
        if outer.exists() {
            not_for_outer(response.headers_mut());
        }
        // The reason is the caller's to give: it knows why this was not cached.
        Ok(self.labelled(
            response,
            (CacheStatus::Bypass, None),
            decision,
            claims.is_some(),
            outer,
        ))
    }

    /// Takes the entity-tags reports off `response` and purges what the mutations that
    /// ran invalidate, before the response is returned. `mutation_fields` are the root
    /// fields of a mutation the layer read itself (`Mutation.createPost`), for a schema
    /// without the extension. With an `outer` layer around this one, the reports go on
    /// to it too: its entries hold what the mutation changed as well.
    pub(super) async fn invalidate(
        &self,
        mut response: Response,
        mutation_fields: &[Arc<str>],
        outer: bool,
    ) -> Response {
        let reports = ExecutionReport::take_all(response.headers_mut());
        if outer {
            for report in &reports {
                report.attach(response.headers_mut());
            }
        }
        // The common case (a query, a passthrough route): nothing to look at.
        if reports.is_empty() && mutation_fields.is_empty() {
            return response;
        }
        let reported = !reports.is_empty();
        // Which mutation fields ran without an error: the extension says so (each item of
        // a batch has its own report, and only mutation items' entities count); without
        // it, a clean response to a mutation the layer read says all of them did. A
        // refused or failed mutation purges nothing, or anyone could empty the cache.
        let mutated = ExecutionReport::merge_all(
            reports
                .into_iter()
                .filter(|r| !r.mutations.is_empty())
                .collect(),
        );
        let ran: Vec<&str> = if reported {
            mutated.mutations.iter().map(String::as_str).collect()
        } else if self
            .invalidations
            .declares(mutation_fields.iter().map(|f| &**f))
        {
            let clean;
            (response, clean) = self.read_outcome(response).await;
            if clean {
                mutation_fields
                    .iter()
                    .filter_map(|f| f.strip_prefix("Mutation."))
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        let mut fleet_wide = None;
        for purge in self.invalidations.purges(&ran, Some(&mutated)) {
            match self.store.purge(&purge).await {
                Ok(purged) => {
                    tracing::debug!(removed = purged.removed, "a mutation purged entries");
                    fleet_wide = Some(fleet_wide.unwrap_or(true) && purged.fleet_wide);
                }
                Err(err) => tracing::warn!(%err, "a mutation's purge failed"),
            }
        }
        if let Some(fleet_wide) = fleet_wide
            && self.store.is_shared()
        {
            response.headers_mut().insert(
                cache::X_CACHE_INVALIDATION,
                HeaderValue::from_static(if fleet_wide { "fleet-wide" } else { "pending" }),
            );
        }
        response
    }

    /// Whether `response` is a clean `200` GraphQL result, reading its body when it is
    /// small enough to be an entry (a larger one counts as clean: purging more is safe).
    pub(super) async fn read_outcome(&self, response: Response) -> (Response, bool) {
        if response.status() != StatusCode::OK {
            return (response, false);
        }
        let (parts, body) = response.into_parts();
        let small = http_body::Body::size_hint(&body)
            .upper()
            .is_some_and(|size| size <= self.limits.entry_bytes as u64);
        if !small {
            return (Response::from_parts(parts, body), true);
        }
        match read_bounded(body, self.limits.entry_bytes).await {
            Ok(bytes) => {
                let clean = !cache::has_errors(&bytes);
                (Response::from_parts(parts, Body::from(bytes)), clean)
            }
            Err(failed) => (failed, false),
        }
    }
}
