//! [`ScopedCache`]: the tower `Service`, and the request pipeline it runs.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{AUTHORIZATION, ETAG, VARY};
use http::{HeaderValue, Method, Request, StatusCode, request};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tower::Service;

use crate::RoutePolicy;
use crate::cache::inflight::{self, LeaderGuard, Outcome, Role};
use crate::cache::key::{CacheKey, Target};
use crate::cache::purge::{EntryMeta, Purge, Tag, claim_tag};
use crate::cache::request::{Prepared, Transport};
use crate::cache::store::{
    CachedResponse, Epoch, Freshness, Hit, Lease, Probe, ResponseStore, Source,
};
use crate::cache::{self, CacheStatus, NotStored, validator};
use crate::claims::{Claims, ReadLog, RequestReads};
use crate::future::ResponseFuture;
use crate::guard::{self, GetRequest, JsonBody, Refusal};
use crate::layer::Shared;
use crate::rejection::{AuthError, AuthErrorKind, graphql_error, negotiated};
use crate::report::ExecutionReport;
use crate::scope::learned::Resolved;
use crate::scope::{Bucket, ClaimPath, Decision};

/// The service made by [`ScopedCacheLayer`](crate::ScopedCacheLayer). It always answers with
/// a response: rejections are responses, and cache failures fall back to the inner service.
#[derive(Debug, Clone)]
pub struct ScopedCache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ScopedCache<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S> Service<Request<Body>> for ScopedCache<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // Take the service that was driven to readiness and leave its clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(Shared::handle(Arc::clone(&self.shared), req, inner))
    }
}

/// The longest a request waits for another request executing the same key before it
/// takes the key over.
const COALESCE_WAIT: Duration = Duration::from_secs(10);
/// The longest a revalidation (in the background, or in the foreground with a stale
/// entry to fall back on) may take before it counts as failed.
const REVALIDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A request the guard let through, and what the cache may read of it.
struct Checked {
    /// The body to hand on (already read and bounded, or empty).
    body: Bytes,
    /// What the cache knows of the GraphQL request, on a cached route with a GET or a
    /// JSON POST it could read.
    prepared: Option<Arc<Prepared>>,
}

/// A cacheable operation, looked up under one key.
struct Lookup<'a> {
    key: CacheKey,
    bucket: Bucket,
    /// The rules' decision with learned scopes added.
    decision: &'a Decision,
    /// The operation's own name and root fields, for the entry's tags.
    name: Option<&'a Arc<str>>,
    root_fields: &'a [Arc<str>],
    claims: Option<&'a Claims>,
}

/// What becomes of a miss's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Store it if it may be stored (an execution that started at this epoch).
    Store(Epoch),
    /// Never store it: only learn the scope of its fields from what it read.
    LearnOnly,
}

/// Why an execution that had a stale entry to fall back on failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    TimedOut,
    Panicked,
    ServiceError,
}

impl Shared {
    /// The whole request, in order: route policy → token → revocation → checked and
    /// prepared request → decision and bucket → lookup → execute → store.
    async fn handle<S>(self: Arc<Self>, req: Request<Body>, inner: S) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let policy = self.routes.resolve(&req);
        if !policy.verify {
            return Box::pin(self.passthrough(req, inner)).await;
        }
        let (parts, body) = req.into_parts();
        let claims = match self.authenticate(&parts).await {
            Ok(claims) => claims,
            Err(kind) => {
                let refusal = AuthError::new(kind).into_response();
                return Ok(self.refused(negotiated(refusal, &parts.headers)));
            }
        };
        // Taken before the body is read and the revocation checked: a purge that a
        // revocation makes after that still keeps this request's answer out of the cache.
        let epoch = self.store.epoch();
        if claims.is_none() && policy.require_auth {
            let refusal = AuthError::new(AuthErrorKind::MissingToken).into_response();
            return Ok(self.refused(negotiated(refusal, &parts.headers)));
        }

        let checked = match self.check(&parts, body, &claims, policy).await {
            Ok(checked) => checked,
            Err(refusal) => return Ok(self.refused(refusal.into_response(&parts.headers))),
        };
        // After the body is read (a revoked token must not trickle one in and run), before
        // any cached answer is looked up.
        if let Some(refusal) = self.revoked(claims.as_ref()) {
            return Ok(self.refused_revoked(refusal, &parts.headers));
        }
        let prepared = checked.prepared.as_deref();
        let Some(Prepared::Operation {
            decision,
            digest,
            name,
            root_fields,
            ..
        }) = prepared
        else {
            return Box::pin(self.uncached(parts, checked.body, claims.as_ref(), inner, prepared))
                .await;
        };
        if decision.bypass || decision.max_age.is_zero() {
            return Box::pin(self.uncached(parts, checked.body, claims.as_ref(), inner, prepared))
                .await;
        }
        let (decision, keep) = match self.learned.resolve(decision) {
            Resolved::Known(decision) => (decision, None),
            Resolved::Learning => (std::borrow::Cow::Borrowed(decision), Some(Keep::LearnOnly)),
        };
        let bucket = Bucket::derive(&decision.scope, claims.as_ref());
        let target = Target::new(&parts, &self.key_headers, parts.method != Method::GET);
        let lookup = Lookup {
            key: CacheKey::new(&target, digest, &bucket),
            bucket,
            decision: &decision,
            name: name.as_ref(),
            root_fields,
            claims: claims.as_ref(),
        };
        if keep == Some(Keep::LearnOnly) {
            return Box::pin(self.learn_only(parts, checked.body, &lookup, inner)).await;
        }

        let asked = Asked::of(&parts);
        let now = Instant::now();
        let mut fallback = None;
        if let Some(found) = self.store.get(&lookup.key, now, || probe(&lookup)).await {
            match found.entry.freshness(now) {
                Some(Freshness::Fresh) => {
                    return Ok(self.hit(&asked, &found, &lookup, CacheStatus::Hit, now));
                }
                Some(Freshness::Stale) => {
                    let response = self.hit(&asked, &found, &lookup, CacheStatus::Stale, now);
                    self.revalidate(&lookup, parts, checked.body, inner, epoch);
                    return Ok(response);
                }
                Some(Freshness::IfError) => fallback = Some(found),
                None => {}
            }
        }
        // Everything past a hit runs in a future of its own, so a hit's request carries
        // (and moves) only the state of the hit path.
        Box::pin(self.miss(parts, checked.body, &lookup, &asked, fallback, inner, epoch)).await
    }

    /// Executes `lookup` once per key (here, and across the fleet with a shared tier),
    /// stores its answer, and serves `fallback` if the execution fails within
    /// stale-if-error.
    #[allow(clippy::too_many_arguments)]
    async fn miss<S>(
        &self,
        mut parts: request::Parts,
        body: Bytes,
        lookup: &Lookup<'_>,
        asked: &Asked,
        fallback: Option<Hit>,
        mut inner: S,
        epoch: Epoch,
    ) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let leader = if self.coalesce {
            let waited = self.lead_or_wait(lookup.key).await;
            // The wait may have been long: a token revoked meanwhile gets nothing.
            if let Some(refusal) = self.revoked(lookup.claims) {
                return Ok(self.refused_revoked(refusal, &parts.headers));
            }
            match waited {
                Ok(leader) => leader,
                Err(hit) => {
                    return Ok(self.hit(asked, &hit, lookup, CacheStatus::Hit, Instant::now()));
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
            return Ok(self.refused_revoked(refusal, &parts.headers));
        }
        let _lease = match lease {
            Lease::Execute(lease) => lease,
            Lease::Filled(hit) => {
                if let Some(leader) = leader {
                    leader.finish();
                }
                return Ok(self.hit(asked, &hit, lookup, CacheStatus::Hit, Instant::now()));
            }
        };

        let reads = hand_on(&mut parts, lookup.claims);
        let request = Request::from_parts(parts, Body::from(body));
        let response = match fallback {
            None => {
                let response = inner.call(request).await?;
                let (response, stored) = self
                    .finish_miss(response, lookup, reads.log(), Keep::Store(epoch))
                    .await;
                if stored.is_ok() {
                    not_modified_if_matching(asked, response)
                } else {
                    response
                }
            }
            // Within stale-if-error: a failed execution is answered with the stale entry.
            Some(stale) => {
                let fresh = match execute_guarded(inner, request).await {
                    Ok(response) => Some(
                        self.finish_miss(response, lookup, reads.log(), Keep::Store(epoch))
                            .await,
                    ),
                    Err(failure) => {
                        tracing::warn!(?failure, "execution failed; serving the stale entry");
                        None
                    }
                };
                let fresh = match fresh {
                    Some((response, Ok(()))) => Ok(not_modified_if_matching(asked, response)),
                    Some((response, outcome)) if !is_failure(response.status(), &outcome) => {
                        Ok(response)
                    }
                    failed => Err(failed.map(|(response, _)| response)),
                };
                match fresh {
                    Ok(response) => response,
                    // Unless a purge removed the entry while this request executed.
                    Err(_) if self.store.still_valid(&stale.entry, epoch) => {
                        self.hit(asked, &stale, lookup, CacheStatus::Stale, Instant::now())
                    }
                    Err(Some(failed)) => failed,
                    Err(None) => graphql_error(
                        StatusCode::BAD_GATEWAY,
                        "the operation failed",
                        "INTERNAL_SERVER_ERROR",
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
    async fn learn_only<S>(
        &self,
        mut parts: request::Parts,
        body: Bytes,
        lookup: &Lookup<'_>,
        mut inner: S,
    ) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response>,
    {
        let reads = hand_on(&mut parts, lookup.claims);
        let response = inner
            .call(Request::from_parts(parts, Body::from(body)))
            .await?;
        let (mut response, _) = self
            .finish_miss(response, lookup, reads.log(), Keep::LearnOnly)
            .await;
        // Its scope is not known yet: it may depend on any claim.
        if lookup.claims.is_some() {
            cache::control::make_private(response.headers_mut());
        }
        Ok(response)
    }

    /// The guard's checks (see [`crate::guard`]), then what the cache knows of the request.
    /// Texts the preparer has seen were checked when first prepared: a repeat is one lookup.
    async fn check(
        &self,
        parts: &request::Parts,
        body: Body,
        claims: &Option<Claims>,
        policy: RoutePolicy,
    ) -> Result<Checked, Refusal> {
        // A token from the cookie (there is no `Authorization` header) rides along with
        // any request a browser sends, from any site.
        if claims.is_some() && !parts.headers.contains_key(AUTHORIZATION) {
            guard::check_cookie_request(parts)?;
        }
        match parts.method {
            Method::GET | Method::HEAD => {
                // A HEAD body means nothing (RFC 9110), and async-graphql would execute it.
                let forwarded = Bytes::new();
                if parts.method != Method::HEAD {
                    guard::read_body(&parts.headers, body, self.limits.request_bytes).await?;
                }
                let query = parts.uri.query().unwrap_or("");
                let cacheable = policy.cache && parts.method == Method::GET;
                if cacheable
                    && let Some(prepared) = self.preparer.lookup(Transport::Get, query.as_bytes())
                {
                    if let Prepared::Operation { ty, .. } = &*prepared
                        && *ty != OperationType::Query
                    {
                        return Err(Refusal::NotAQueryOverGet);
                    }
                    return Ok(Checked {
                        body: forwarded,
                        prepared: Some(prepared),
                    });
                }
                let get = GetRequest::read(query, &self.limits.document)?;
                let persisted = match get.hash_only() {
                    Some(hash) => match self.preparer.persisted(hash) {
                        Some(document) => Some(document),
                        None => return Err(Refusal::PersistedQueryNotFound),
                    },
                    None => None,
                };
                get.check_only_queries(persisted.as_deref())?;
                Ok(Checked {
                    body: forwarded,
                    prepared: cacheable.then(|| {
                        self.preparer
                            .prepare(Transport::Get, query.as_bytes(), &self.rules)
                    }),
                })
            }
            _ => {
                let bytes =
                    guard::read_body(&parts.headers, body, self.limits.request_bytes).await?;
                if let Some(content_type) = guard::multipart_type(&parts.headers) {
                    // Boxed: a multipart reader's state has no place in every request's.
                    Box::pin(guard::check_multipart(
                        content_type,
                        bytes.clone(),
                        &self.limits.document,
                    ))
                    .await?;
                    return Ok(Checked {
                        body: bytes,
                        prepared: None,
                    });
                }
                let cacheable = policy.cache
                    && parts.method == Method::POST
                    && crate::media::is_json(&parts.headers);
                if cacheable
                    && let Some(prepared) = self.preparer.lookup(Transport::PostJson, &bytes)
                {
                    return Ok(Checked {
                        body: bytes,
                        prepared: Some(prepared),
                    });
                }
                // async-graphql reads every body but multipart as JSON, whatever its type.
                if guard::check_json(&bytes, &self.limits.document)? == JsonBody::NotGraphQl
                    && cacheable
                {
                    return Err(Refusal::MalformedJson);
                }
                let prepared = cacheable.then(|| {
                    self.preparer
                        .prepare(Transport::PostJson, &bytes, &self.rules)
                });
                Ok(Checked {
                    body: bytes,
                    prepared,
                })
            }
        }
    }

    /// A route the layer does not verify: the request goes to the handler as it is.
    async fn passthrough<S>(&self, req: Request<Body>, mut inner: S) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response>,
    {
        let response = inner.call(req).await?;
        // The entity-tags report is for this layer only, never for clients; a mutation it
        // reports purges here too.
        Ok(self.invalidate(response, &[]).await)
    }

    /// Passes a request the cache does not store to the handler; a mutation's response
    /// purges what it invalidates before it is returned.
    async fn uncached<S>(
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
        hand_on(&mut parts, claims);
        let response = inner
            .call(Request::from_parts(parts, Body::from(body)))
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
        let response = self.invalidate(response, mutation_fields).await;
        Ok(self.labelled(response, CacheStatus::Bypass, decision, claims.is_some()))
    }

    /// Takes the entity-tags reports off `response` and purges what the mutations that
    /// ran invalidate, before the response is returned. `mutation_fields` are the root
    /// fields of a mutation the layer read itself (`Mutation.createPost`), for a schema
    /// without the extension.
    async fn invalidate(&self, mut response: Response, mutation_fields: &[Arc<str>]) -> Response {
        let reports = ExecutionReport::take_all(response.headers_mut());
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
    async fn read_outcome(&self, response: Response) -> (Response, bool) {
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

    /// Joins the execution of `key`: `Ok(Some(guard))` to lead it, `Ok(None)` to execute
    /// alone (the leader finished without storing), `Err(entry)` when a leader stored it.
    async fn lead_or_wait(&self, key: CacheKey) -> Result<Option<LeaderGuard>, Hit> {
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

    async fn authenticate(&self, parts: &request::Parts) -> Result<Option<Claims>, AuthErrorKind> {
        match self.tokens.extract(&parts.headers)? {
            None => Ok(None),
            Some(token) => self.verifier.verify(token).await.map(Some),
        }
    }

    /// Serves `entry`: the body, or `304` when the request already holds it.
    fn hit(
        &self,
        asked: &Asked,
        hit: &Hit,
        lookup: &Lookup<'_>,
        status: CacheStatus,
        now: Instant,
    ) -> Response {
        let entry = &hit.entry;
        // An outer layer that stores this answer must know which claims it depends on.
        if let Some(reads) = &asked.outer_reads {
            reads.log().record_scope(&lookup.decision.scope);
        }
        let mut response = if validator::none_match_hits(&asked.none_match, &entry.etag) {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = validator::not_modified_headers(&entry.headers, &entry.etag);
            response
        } else {
            let mut response = Response::new(Body::from(entry.body.clone()));
            *response.headers_mut() = cache::served_headers(&entry.headers, &entry.etag);
            response
        };
        let headers = response.headers_mut();
        cache::set_age(headers, now.saturating_duration_since(entry.stored_at));
        if let Some(tier) = self.store.tier_header(hit.source) {
            headers.insert(cache::X_CACHE_TIER, tier);
        }
        self.labelled(
            response,
            status,
            Some(lookup.decision),
            lookup.claims.is_some(),
        )
    }

    /// Revalidates a stale entry in the background, with the claims of the request that
    /// found it stale (so it lands in the same bucket), once per key: if anyone executes
    /// the key already (a miss, or another revalidation), nothing more is started.
    fn revalidate<S>(
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
                        let (response, outcome) = shared
                            .finish_miss(response, &lookup, reads.log(), Keep::Store(epoch))
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

    /// Stores a miss's response if it may be stored (`keep`), learns the scope of learned
    /// fields from what it read, and labels it. Returns the response and whether it was
    /// stored.
    async fn finish_miss(
        &self,
        response: Response,
        lookup: &Lookup<'_>,
        reads: &ReadLog,
        keep: Keep,
    ) -> (Response, Result<(), NotStored>) {
        let (mut parts, body) = response.into_parts();
        let report = ExecutionReport::take(&mut parts.headers);
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
            return (self.unstored_miss(response, lookup), Err(reason));
        }
        let bytes = match read_bounded(body, self.limits.entry_bytes).await {
            Ok(bytes) => bytes,
            Err(failed) => return (failed, Err(NotStored::Status)),
        };
        let lifetimes = cache::lifetimes(&parts.headers, &bytes, lookup.decision, reads);
        if !lookup.decision.learned.is_empty()
            && matches!(lifetimes, Ok(_) | Err(NotStored::UncoveredClaimRead(_)))
        {
            self.learn(lookup.decision, reads).await;
        }
        let outcome = match (lifetimes, keep) {
            (Ok(_), Keep::LearnOnly) => Err(NotStored::Learning),
            (Ok(_), Keep::Store(_)) if report.as_ref().is_some_and(|r| r.unreliable) => {
                Err(NotStored::UnreliableTags)
            }
            (Ok(lifetimes), Keep::Store(epoch)) => {
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map_or(&b""[..], HeaderValue::as_bytes);
                let etag = validator::etag(&lookup.bucket, content_type, &bytes);
                match self.entry(&parts.headers, &bytes, &etag, lifetimes, lookup, report) {
                    Some(entry) => {
                        if self.store.insert(lookup.key, entry, epoch).await {
                            parts.headers.insert(ETAG, etag);
                            Ok(())
                        } else {
                            Err(NotStored::PurgedMeanwhile)
                        }
                    }
                    None => Err(NotStored::ZeroTtl),
                }
            }
            (Err(NotStored::UncoveredClaimRead(path)), _)
                if !lookup.decision.learned.is_empty() =>
            {
                tracing::debug!(claim = %path, "a learned scope widened; response not cached");
                Err(NotStored::UncoveredClaimRead(path))
            }
            (Err(NotStored::UncoveredClaimRead(path)), _) => {
                // Configuration bug, not an attack: say which claim (its path, never its value).
                tracing::warn!(claim = %path, "a resolver read a claim outside the rule's scope; response not cached");
                Err(NotStored::UncoveredClaimRead(path))
            }
            (Err(reason), _) => Err(reason),
        };
        let response = Response::from_parts(parts, Body::from(bytes));
        match &outcome {
            Ok(()) => (self.labelled_miss(response, lookup), outcome),
            Err(reason) => {
                tracing::debug!(?reason, "response not stored");
                (self.unstored_miss(response, lookup), outcome)
            }
        }
    }

    /// A miss that was not stored: like any uncached answer to an authenticated caller,
    /// `private`, so a shared cache in front cannot store what this layer would not (it
    /// may have read a claim no scope covers).
    fn unstored_miss(&self, mut response: Response, lookup: &Lookup<'_>) -> Response {
        if lookup.claims.is_some() {
            cache::control::make_private(response.headers_mut());
        }
        self.labelled_miss(response, lookup)
    }

    /// The entry to store for a response; `None` when its lifetime is beyond the clock.
    fn entry(
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
            headers: cache::stored_headers(headers, lookup.decision.is_scoped()),
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
    fn entry_meta(&self, lookup: &Lookup<'_>, report: Option<ExecutionReport>) -> EntryMeta {
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
    async fn learn(&self, decision: &Decision, reads: &ReadLog) {
        let widened = self
            .learned
            .learn(decision, |subject| reads.reads_of(subject));
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
            match subject.strip_prefix("operation") {
                // Operations without root fields (`{ __typename }`) name nothing narrower
                // to purge, and purging everything would let any client empty the cache:
                // their entries are under keys no lookup makes any more, and expire.
                Some("") => {}
                Some(name) => purges.push(Purge::operation(name.trim_start())),
                None => fields.push(subject),
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

    /// Why a request with `claims` is refused for revocation, if it is: revoked, or
    /// revocations unknown (a shared tier cut off from Redis).
    fn revoked(&self, claims: Option<&Claims>) -> Option<AuthErrorKind> {
        self.revocations.refusal(claims?, &self.clock)
    }

    fn refused_revoked(&self, kind: AuthErrorKind, headers: &http::HeaderMap) -> Response {
        let refusal = AuthError::new(kind).into_response();
        self.refused(negotiated(refusal, headers))
    }

    fn labelled_miss(&self, response: Response, lookup: &Lookup<'_>) -> Response {
        self.labelled(
            response,
            CacheStatus::Miss,
            Some(lookup.decision),
            lookup.claims.is_some(),
        )
    }

    /// An answer the layer made itself depends on the same request headers as any other
    /// (the token, `Accept`): say so, for caches in front.
    fn refused(&self, mut response: Response) -> Response {
        response.headers_mut().append(VARY, self.vary.clone());
        response
    }

    fn labelled(
        &self,
        mut response: Response,
        status: CacheStatus,
        decision: Option<&Decision>,
        authenticated: bool,
    ) -> Response {
        cache::label(
            response.headers_mut(),
            status,
            decision,
            authenticated,
            &self.vary,
        );
        response
    }
}

/// What a shared tier checks its purge records against on this lookup.
fn probe(lookup: &Lookup<'_>) -> Probe {
    Probe {
        claims: scope_claims(lookup),
        operation: lookup.name.cloned(),
        fields: lookup.root_fields.to_vec(),
    }
}

/// The claim values of the lookup's bucket ([`claim_tag`]s, sorted): what its entry is
/// tagged with for scope purges. `iss` is in every claim-scoped bucket, so a purge can
/// name it too.
fn scope_claims(lookup: &Lookup<'_>) -> Vec<Arc<[u8]>> {
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

/// Puts the claims (recording into the request's shared read log) into the request's
/// extensions for the handler, just before it runs; returns the log to check afterwards.
fn hand_on(parts: &mut request::Parts, claims: Option<&Claims>) -> RequestReads {
    let reads = RequestReads::of(&mut parts.extensions);
    if let Some(claims) = claims {
        parts.extensions.insert(claims.with_reads(&reads));
    }
    reads
}

/// What a cached answer needs from the request, taken before the request moves on.
struct Asked {
    /// `If-None-Match` of a GET (the only cached method a `304` answers).
    none_match: Vec<http::HeaderValue>,
    /// An outer layer's read log.
    outer_reads: Option<RequestReads>,
}

impl Asked {
    fn of(parts: &request::Parts) -> Self {
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
struct OwnedLookup {
    key: CacheKey,
    bucket: Bucket,
    decision: Decision,
    name: Option<Arc<str>>,
    root_fields: Vec<Arc<str>>,
    claims: Option<Claims>,
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
    fn as_lookup(&self) -> Lookup<'_> {
        Lookup {
            key: self.key,
            bucket: self.bucket.clone(),
            decision: &self.decision,
            name: self.name.as_ref(),
            root_fields: &self.root_fields,
            claims: self.claims.as_ref(),
        }
    }
}

/// Runs the (ready) inner service in a task of its own, so a panic or a hang is a
/// [`Failure`] rather than the end of the request.
async fn execute_guarded<S>(mut inner: S, request: Request<Body>) -> Result<Response, Failure>
where
    S: Service<Request<Body>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    /// Aborts the execution when the caller stops waiting for it (time-out, or the
    /// request itself was dropped), so a hung handler never runs on unseen.
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(tokio::spawn(inner.call(request)));
    match tokio::time::timeout(REVALIDATE_TIMEOUT, &mut task.0).await {
        Err(_) => Err(Failure::TimedOut),
        Ok(Err(_)) => Err(Failure::Panicked),
        Ok(Ok(Err(_))) => Err(Failure::ServiceError),
        Ok(Ok(Ok(response))) => Ok(response),
    }
}

/// Reads a response body the size hint promised is at most `limit` bytes; a body that
/// breaks that promise is cut off rather than buffered without bound. A body that fails
/// becomes a GraphQL-shaped 502.
async fn read_bounded(body: Body, limit: usize) -> Result<Bytes, Response> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => {
            tracing::warn!("inner service failed while sending its response body");
            Err(graphql_error(
                StatusCode::BAD_GATEWAY,
                "response body failed",
                "INTERNAL_SERVER_ERROR",
            ))
        }
    }
}

/// Whether an execution failed, for stale-if-error: anything but a clean `200` result.
fn is_failure(status: StatusCode, outcome: &Result<(), NotStored>) -> bool {
    status != StatusCode::OK
        || matches!(
            outcome,
            Err(NotStored::Status | NotStored::GraphqlErrors | NotStored::TooLarge)
        )
}

/// A stored miss answers `304` when the request already holds what was stored.
fn not_modified_if_matching(asked: &Asked, response: Response) -> Response {
    let Some(etag) = response.headers().get(ETAG) else {
        return response;
    };
    if !validator::none_match_hits(&asked.none_match, etag) {
        return response;
    }
    let mut headers = validator::not_modified_headers(response.headers(), etag);
    if let Some(status) = response.headers().get(cache::X_CACHE) {
        headers.insert(cache::X_CACHE, status.clone());
    }
    let mut not_modified = Response::new(Body::empty());
    *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
    *not_modified.headers_mut() = headers;
    not_modified
}
