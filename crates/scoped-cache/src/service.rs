//! [`ScopedCache`]: the tower `Service`, and the request pipeline it runs.

use std::sync::Arc;
use std::task::{Context, Poll};

use async_graphql::parser::types::OperationType;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{AUTHORIZATION, VARY};
use http::{Method, Request, StatusCode, request};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tower::Service;

use crate::RoutePolicy;
use crate::cache::inflight::{self, LeaderGuard, Outcome, Role};
use crate::cache::key::{CacheKey, Target};
use crate::cache::request::{Prepared, Transport};
use crate::cache::store::CachedResponse;
use crate::cache::{self, CacheStatus, NotStored};
use crate::claims::{Claims, ReadLog, RequestReads};
use crate::future::ResponseFuture;
use crate::guard::{self, GetRequest, JsonBody, Refusal};
use crate::layer::Shared;
use crate::rejection::{AuthError, AuthErrorKind, graphql_error, negotiated};
use crate::scope::{Bucket, Decision};

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
        let shared = Arc::clone(&self.shared);
        ResponseFuture::new(async move { shared.handle(req, inner).await })
    }
}

/// The longest a request waits for another request executing the same key before it
/// takes the key over.
const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request the guard let through, and what the cache may read of it.
struct Checked {
    /// The body to hand on (already read and bounded, or empty).
    body: Body,
    /// What the cache knows of the GraphQL request, on a cached route with a GET or a
    /// JSON POST it could read.
    prepared: Option<Arc<Prepared>>,
}

impl Shared {
    /// The whole request, in order: route policy → token → (revocation) → checked and
    /// prepared request → decision and bucket → lookup → execute → store.
    async fn handle<S>(&self, req: Request<Body>, mut inner: S) -> Result<Response, S::Error>
    where
        S: Service<Request<Body>, Response = Response>,
    {
        let policy = self.routes.resolve(&req);
        if !policy.verify {
            return inner.call(req).await;
        }
        let (mut parts, body) = req.into_parts();
        let claims = match self.authenticate(&parts).await {
            Ok(claims) => claims,
            Err(kind) => {
                let refusal = AuthError::new(kind).into_response();
                return Ok(self.refused(negotiated(refusal, &parts.headers)));
            }
        };
        if claims.is_none() && policy.require_auth {
            let refusal = AuthError::new(AuthErrorKind::MissingToken).into_response();
            return Ok(self.refused(negotiated(refusal, &parts.headers)));
        }

        let checked = match self.check(&parts, body, &claims, policy).await {
            Ok(checked) => checked,
            Err(refusal) => return Ok(self.refused(refusal.into_response(&parts.headers))),
        };
        let Some(Prepared::Operation {
            decision, digest, ..
        }) = checked.prepared.as_deref()
        else {
            hand_on(&mut parts, claims.as_ref());
            let response = inner.call(Request::from_parts(parts, checked.body)).await?;
            return Ok(self.labelled(response, CacheStatus::Bypass, None, claims.is_some()));
        };
        if decision.bypass || decision.max_age.is_zero() {
            hand_on(&mut parts, claims.as_ref());
            let response = inner.call(Request::from_parts(parts, checked.body)).await?;
            return Ok(self.labelled(
                response,
                CacheStatus::Bypass,
                Some(decision),
                claims.is_some(),
            ));
        }

        let bucket = Bucket::derive(&decision.scope, claims.as_ref());
        let target = Target::new(&parts, &self.key_headers, parts.method != Method::GET);
        let key = CacheKey::new(&target, digest, &bucket);
        if let Some(hit) = self.store.get(&key, Instant::now()) {
            return Ok(self.hit(&parts, &hit, decision, claims.is_some()));
        }
        let leader = if self.coalesce {
            match self.lead_or_wait(key).await {
                Ok(leader) => leader,
                Err(hit) => return Ok(self.hit(&parts, &hit, decision, claims.is_some())),
            }
        } else {
            None
        };

        let reads = hand_on(&mut parts, claims.as_ref());
        let response = inner.call(Request::from_parts(parts, checked.body)).await?;
        let response = self
            .store_miss(response, key, decision, reads.log(), claims.is_some())
            .await;
        if let Some(leader) = leader {
            leader.finish();
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
                let forwarded = if parts.method == Method::HEAD {
                    Body::empty()
                } else {
                    guard::read_body(&parts.headers, body, self.limits.request_bytes).await?;
                    Body::empty()
                };
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
                    guard::check_multipart(content_type, bytes.clone(), &self.limits.document)
                        .await?;
                    return Ok(Checked {
                        body: Body::from(bytes),
                        prepared: None,
                    });
                }
                let cacheable =
                    policy.cache && parts.method == Method::POST && guard::is_json(&parts.headers);
                if cacheable
                    && let Some(prepared) = self.preparer.lookup(Transport::PostJson, &bytes)
                {
                    return Ok(Checked {
                        body: Body::from(bytes),
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
                    body: Body::from(bytes),
                    prepared,
                })
            }
        }
    }

    /// Joins the execution of `key`: `Ok(Some(guard))` to lead it, `Ok(None)` to execute
    /// alone (the leader finished without storing), `Err(entry)` when a leader stored it.
    async fn lead_or_wait(
        &self,
        key: CacheKey,
    ) -> Result<Option<LeaderGuard<'_>>, Arc<CachedResponse>> {
        let mut role = self.in_flight.join(key);
        // Each round either leads, or waits for one leader; a leader that is stuck is taken
        // over, a cancelled one is replaced. A few rounds bound a follower's total wait.
        for _ in 0..3 {
            let waiting = match role {
                Role::Lead(guard) => return Ok(Some(guard)),
                Role::Follow(waiting) => waiting,
            };
            let outcome = inflight::follow(waiting, COALESCE_WAIT).await;
            if let Some(hit) = self.store.get(&key, Instant::now()) {
                return Err(hit);
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

    fn hit(
        &self,
        request: &request::Parts,
        entry: &CachedResponse,
        decision: &Decision,
        authenticated: bool,
    ) -> Response {
        // An outer layer that stores this answer must know which claims it depends on.
        if let Some(reads) = RequestReads::existing(&request.extensions) {
            reads.log().record_scope(&decision.scope);
        }
        let mut response = Response::new(Body::from(entry.body.clone()));
        *response.headers_mut() = entry.headers.clone();
        cache::set_age(
            response.headers_mut(),
            Instant::now().saturating_duration_since(entry.stored_at),
        );
        self.labelled(response, CacheStatus::Hit, Some(decision), authenticated)
    }

    async fn store_miss(
        &self,
        response: Response,
        key: CacheKey,
        decision: &Decision,
        reads: &ReadLog,
        authenticated: bool,
    ) -> Response {
        let (parts, body) = response.into_parts();
        let size = http_body::Body::size_hint(&body).upper();
        if let Err(reason) = cache::check_head(
            parts.status,
            &parts.headers,
            size,
            self.limits.entry_bytes,
            &self.key_headers,
        ) {
            tracing::debug!(?reason, "response not stored");
            return self.labelled(
                Response::from_parts(parts, body),
                CacheStatus::Miss,
                Some(decision),
                authenticated,
            );
        }
        // The size hint promised at most `entry_bytes`; a body that breaks that promise is
        // cut off rather than buffered without bound.
        let bytes = match Limited::new(body, self.limits.entry_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                tracing::warn!("inner service failed while sending its response body");
                return graphql_error(
                    StatusCode::BAD_GATEWAY,
                    "response body failed",
                    "INTERNAL_SERVER_ERROR",
                );
            }
        };
        let now = Instant::now();
        match cache::storable_ttl(&parts.headers, &bytes, decision, reads) {
            Ok(ttl) => match now.checked_add(ttl) {
                Some(expires_at) => self.store.insert(
                    key,
                    CachedResponse {
                        headers: cache::representation_headers(&parts.headers),
                        // An exact-size copy: the collected body may be a slice of a larger
                        // buffer (or a `Vec` with spare capacity), which the byte bound
                        // would not see.
                        body: Bytes::copy_from_slice(&bytes),
                        stored_at: now,
                        expires_at,
                    },
                ),
                None => tracing::debug!("max-age beyond the clock's range; response not stored"),
            },
            Err(NotStored::UncoveredClaimRead(path)) => {
                // Configuration bug, not an attack: say which claim (its path, never its value).
                tracing::warn!(claim = %path, "a resolver read a claim outside the rule's scope; response not cached");
            }
            Err(reason) => tracing::debug!(?reason, "response not stored"),
        }
        self.labelled(
            Response::from_parts(parts, Body::from(bytes)),
            CacheStatus::Miss,
            Some(decision),
            authenticated,
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

/// Puts the claims (recording into the request's shared read log) into the request's
/// extensions for the handler, just before it runs; returns the log to check afterwards.
fn hand_on(parts: &mut request::Parts, claims: Option<&Claims>) -> RequestReads {
    let reads = RequestReads::of(&mut parts.extensions);
    if let Some(claims) = claims {
        parts.extensions.insert(claims.with_reads(&reads));
    }
    reads
}
