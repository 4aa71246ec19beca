//! The request pipeline: the state every request runs on, and the one function that runs
//! it, as a straight line.
//!
//! How a request flows (each step a module here, or a component it calls):
//!
//! 1. **Route policy** ([`crate::route`]): pass through, verify only, or cache.
//! 2. **Token** ([`crate::jwt`]): the bearer JWT (or cookie) is verified; a bad one is
//!    refused with `401`.
//! 3. **Intake** ([`intake`]): the guard bounds the body, the document's nesting and
//!    selections, GET's rules and cookie requests; the cache prepares what it knows of the
//!    request (canonical document, operation, root fields, the rules' decision).
//! 4. **Revocation** ([`crate::revocation`]): after the body is read, before any lookup.
//! 5. **Decision and bucket** ([`crate::scope`]): the rules and learned scopes pick the
//!    claims that scope the answer; their values make the bucket, and with the request's
//!    target the key ([`lookup`]).
//! 6. **Lookup** ([`crate::cache::store`]): fresh is served, stale is served and
//!    revalidated, stale-if-error is kept as a fallback ([`respond`]).
//! 7. **Execute** ([`miss`]): once per key, here and across the fleet.
//! 8. **Store** ([`keep`]): whether the answer may be stored, for how long, with which
//!    tags.
//! 9. **Respond** ([`respond`]): one place gives every answer its cache headers.
//!
//! Requests the cache does not store, and the purges mutations make, go through
//! [`uncached`].

mod health;
mod intake;
mod keep;
mod lookup;
mod miss;
mod respond;
mod uncached;

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method, Request, request};
use tokio::time::Instant;
use tower::Service;
use tracing::Span;

use crate::backend::{Revocations, Store};
use crate::cache::inflight::InFlight;
use crate::cache::invalidate::Invalidations;
use crate::cache::key::{CacheKey, Target};
use crate::cache::request::{Prepared, Preparer};
use crate::cache::store::{Freshness, ResponseStore};
use crate::claims::{Claims, RequestReads};
use crate::guard::DocumentLimits;
use crate::jwt::TokenVerifier;
use crate::jwt::token::TokenSource;
use crate::observe::{Note, Observer, Reason, because};
use crate::rejection::AuthErrorKind;
use crate::revocation::UnixClock;
use crate::route::Routes;
use crate::scope::learned::{LearnedScopes, Resolved};
use crate::scope::{Bucket, RuleSet};

use keep::Keep;
use lookup::{Asked, Lookup, Outer, probe};
use miss::Miss;

/// Everything a request runs on, built once by the builder and shared by every clone of
/// the layer and its services.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) verifier: TokenVerifier,
    pub(crate) tokens: TokenSource,
    pub(crate) routes: Routes,
    pub(crate) rules: RuleSet,
    pub(crate) preparer: Preparer,
    pub(crate) store: Store,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) learned: LearnedScopes,
    pub(crate) invalidations: Invalidations,
    /// For [`ScopedCacheLayer::entity_tags`](crate::ScopedCacheLayer::entity_tags).
    pub(crate) entity_ids: Vec<(String, String)>,
    pub(crate) max_entity_tags: usize,
    pub(crate) revocations: Revocations,
    pub(crate) clock: UnixClock,
    /// Whether revoking a subject purges the buckets scoped to it.
    pub(crate) purge_on_revoke: bool,
    pub(crate) coalesce: bool,
    pub(crate) limits: Limits,
    /// Request headers in every key besides `Host` and `Accept`.
    pub(crate) key_headers: Vec<HeaderName>,
    pub(crate) vary: HeaderValue,
    /// `vary` without `Authorization` and `Cookie`, for an answer that goes on to an outer
    /// layer (see [`crate::cache::merge_vary`]).
    pub(crate) vary_for_outer: HeaderValue,
    /// Permits to examine a large request text on the blocking pool (one per core).
    pub(crate) examiners: Arc<tokio::sync::Semaphore>,
    /// Metrics, traces and reasons ([`crate::observe`]).
    pub(crate) observer: Observer,
}

/// The size bounds a request and an entry are held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The response cache's bound ([`max_bytes`](crate::ScopedCacheLayerBuilder::max_bytes)).
    pub(crate) cache_bytes: u64,
    pub(crate) entry_bytes: usize,
    pub(crate) request_bytes: usize,
    pub(crate) document: DocumentLimits,
}

impl Pipeline {
    /// The whole request, in order: route policy → token → intake (the body read and
    /// checked, the request prepared) → revocation → decision and bucket → lookup →
    /// execute → store → respond.
    pub(crate) async fn handle<S>(
        self: Arc<Self>,
        mut req: Request<Body>,
        inner: S,
        span: Span,
    ) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        // What operators are told of this request (`crate::observe`): filled in along
        // the line, counted and explained once it has its answer.
        self.start_gauges();
        let explain = self.observer.explains(req.headers_mut());
        let mut note = Note::default();
        let answered = 'answer: {
            let (policy, route) = self.routes.resolve_labelled(&req);
            note.series.route = route;
            if !policy.verify {
                break 'answer Box::pin(self.passthrough(req, inner)).await;
            }
            let (parts, body) = req.into_parts();
            let (claims, read_at) = match self.authenticate(&parts).await {
                Ok(Some((claims, read_at))) => (Some(claims), Some(read_at)),
                Ok(None) => (None, None),
                Err(kind) => break 'answer Ok(self.refused_auth(kind, &parts.headers)),
            };
            note.authenticated = claims.is_some();
            // Taken before the body is read and the revocation checked: a purge that a
            // revocation makes after that still keeps this request's answer out of the cache.
            let epoch = self.store.epoch();
            if claims.is_none() && policy.require_auth {
                break 'answer Ok(self.refused_auth(AuthErrorKind::MissingToken, &parts.headers));
            }

            let intake = match self.intake(&parts, body, &claims, policy).await {
                Ok(intake) => intake,
                Err(refusal) => {
                    let refusal = refusal.into_response(&parts.headers);
                    break 'answer Ok(self.refused(refusal, Reason::Refused));
                }
            };
            // After the body is read (a revoked token must not trickle one in and run), before
            // any cached answer is looked up.
            // Judged by the clock reading the token was: one instant for both.
            let clock = read_at.map_or(self.clock, UnixClock::at);
            if let Some(refusal) = self.revoked_at(claims.as_ref(), &clock) {
                break 'answer Ok(self.refused_auth(refusal, &parts.headers));
            }
            let prepared = intake.prepared.as_deref();
            let Some(Prepared::Operation {
                ty,
                decision,
                digest,
                name,
                root_fields,
            }) = prepared
            else {
                let reason = if policy.cache {
                    Reason::NotUnderstood
                } else {
                    Reason::VerifyOnlyRoute
                };
                let uncached = self.uncached(parts, intake.body, claims.as_ref(), inner, prepared);
                break 'answer Box::pin(uncached).await.map(|r| because(r, reason));
            };
            note.series.operation = Some(decision.operation);
            note.series.rule = Some(decision.rule);
            let query = *ty == async_graphql::parser::types::OperationType::Query;
            if let Some(reason) = uncached::bypass_reason(query, decision) {
                let uncached = self.uncached(parts, intake.body, claims.as_ref(), inner, prepared);
                break 'answer Box::pin(uncached).await.map(|r| because(r, reason));
            }
            let (decision, keep) = match self.learned.resolve(decision) {
                Resolved::Known(decision) => (decision, None),
                Resolved::Learning => (std::borrow::Cow::Borrowed(decision), Some(Keep::LearnOnly)),
            };
            let bucket = Bucket::derive(&decision.scope, claims.as_ref());
            if !span.is_disabled() {
                note.bucket = Some(crate::hash::BucketId::of(bucket.as_bytes()));
            }
            let target = Target::new(&parts, &self.key_headers, parts.method != Method::GET)
                .negotiated_accept(policy.negotiated_accept);
            let asked = Asked::of(&parts);
            let lookup = Lookup {
                key: CacheKey::new(&target, digest, &bucket),
                bucket,
                decision: &decision,
                name: name.as_ref(),
                root_fields,
                claims: claims.as_ref(),
                outer: Outer::of(asked.outer_reads.as_ref(), claims.as_ref()),
            };
            if keep == Some(Keep::LearnOnly) {
                break 'answer Box::pin(self.learn_only(
                    parts,
                    intake.body,
                    &lookup,
                    inner,
                    &mut note,
                ))
                .await;
            }

            let now = Instant::now();
            let mut fallback = None;
            let mut cold = Reason::Absent;
            match self.store.get(&lookup.key, now, || probe(&lookup)).await {
                Ok(found) => match found.entry.freshness(now) {
                    Some(Freshness::Fresh) => {
                        break 'answer Ok(self.hit(&asked, &found, &lookup, None, now));
                    }
                    Some(Freshness::Stale) => {
                        let stale = Some(Reason::StaleWhileRevalidate);
                        let response = self.hit(&asked, &found, &lookup, stale, now);
                        self.revalidate(&lookup, parts, intake.body, inner, epoch);
                        break 'answer Ok(response);
                    }
                    Some(Freshness::IfError) => fallback = Some(found),
                    None => {}
                },
                Err(missed) => cold = Reason::from(missed),
            }
            // Everything past a hit runs in a future of its own, so a hit's request carries
            // (and moves) only the state of the hit path.
            let miss = Miss {
                parts,
                body: intake.body,
                lookup: &lookup,
                asked: &asked,
                fallback,
                epoch,
                cold,
            };
            Box::pin(self.miss(miss, inner, &mut note)).await
        };
        answered.map(|mut response| {
            self.observer.finish(&note, &span, explain, &mut response);
            response
        })
    }

    /// The request's verified claims, if it carries a token, with the clock reading
    /// they were judged at (its revocation is judged at the same one).
    pub(super) async fn authenticate(
        &self,
        parts: &request::Parts,
    ) -> Result<Option<(Claims, std::time::Duration)>, AuthErrorKind> {
        match self.tokens.extract(&parts.headers)? {
            None => Ok(None),
            Some(token) => {
                let now = crate::clock::now();
                let claims = self.verifier.verify_at(token, now).await?;
                Ok(Some((claims, now)))
            }
        }
    }

    pub(super) fn revoked(&self, claims: Option<&Claims>) -> Option<AuthErrorKind> {
        self.revoked_at(claims, &self.clock)
    }

    /// [`revoked`](Self::revoked), by `clock`.
    fn revoked_at(&self, claims: Option<&Claims>, clock: &UnixClock) -> Option<AuthErrorKind> {
        self.revocations.refusal(claims?, clock)
    }
}

/// Puts the claims (recording into the request's shared read log) into the request's
/// extensions for the handler, just before it runs; returns the log to check afterwards.
/// Without claims, any an outer layer put there are taken out: the handler reads what
/// this layer keyed, and this layer keyed no caller.
pub(super) fn hand_on(parts: &mut request::Parts, claims: Option<&Claims>) -> RequestReads {
    let reads = RequestReads::of(&mut parts.extensions, claims);
    match claims {
        Some(claims) => {
            parts.extensions.insert(claims.with_reads(&reads));
        }
        None => {
            parts.extensions.remove::<Claims>();
        }
    }
    reads
}
