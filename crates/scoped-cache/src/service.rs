//! [`ScopedCache`]: the tower `Service`, and the request pipeline it runs.

use std::sync::Arc;
use std::task::{Context, Poll};

use async_graphql::parser::types::OperationType;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, request};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tower::Service;

use crate::cache::inflight::{self, Role};
use crate::cache::key::{CacheKey, Target};
use crate::cache::request::{Prepared, Transport};
use crate::cache::store::CachedResponse;
use crate::cache::{self, CacheStatus, NotStored};
use crate::claims::Claims;
use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::rejection::{AuthError, AuthErrorKind, BAD_REQUEST, METHOD_NOT_ALLOWED, graphql_error};
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

/// The longest a request waits for another request executing the same key.
const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Shared {
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
            Err(kind) => return Ok(AuthError::new(kind).into_response()),
        };
        if claims.is_none() && policy.require_auth {
            return Ok(AuthError::new(AuthErrorKind::MissingToken).into_response());
        }
        if let Some(claims) = &claims {
            parts.extensions.insert(claims.clone());
        }

        let transport = match (&parts.method, policy.cache) {
            (&Method::GET, true) => Some(Transport::Get),
            (&Method::POST, true) if is_json(&parts) => Some(Transport::PostJson),
            _ => None,
        };
        let Some(transport) = transport else {
            let response = inner.call(Request::from_parts(parts, body)).await?;
            return Ok(self.labelled(response, CacheStatus::Bypass, None));
        };
        let (text, body) = match transport {
            Transport::Get => (
                Bytes::copy_from_slice(parts.uri.query().unwrap_or("").as_bytes()),
                body,
            ),
            Transport::PostJson => match read_limited(body, self.limits.request_bytes).await {
                Ok(bytes) => (bytes.clone(), Body::from(bytes)),
                Err(response) => return Ok(response),
            },
        };
        let prepared = self.preparer.prepare(transport, text, &self.rules);
        let Prepared::Operation {
            ty,
            decision,
            digest,
        } = &*prepared
        else {
            let response = inner.call(Request::from_parts(parts, body)).await?;
            return Ok(self.labelled(response, CacheStatus::Bypass, None));
        };
        if transport == Transport::Get && *ty != OperationType::Query {
            // GraphQL over HTTP: only queries may be sent with GET.
            let mut response = graphql_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only queries may be sent with GET",
                METHOD_NOT_ALLOWED,
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return Ok(response);
        }
        if decision.bypass || decision.max_age.is_zero() {
            let response = inner.call(Request::from_parts(parts, body)).await?;
            return Ok(self.labelled(response, CacheStatus::Bypass, Some(decision)));
        }

        let bucket = Bucket::derive(&decision.scope, claims.as_ref());
        let key = CacheKey::new(&Target::of(&parts), digest, &bucket);
        if let Some(hit) = self.store.get(&key, Instant::now()) {
            return Ok(self.hit(&hit, decision));
        }
        let _leader = match self.coalesce.then(|| self.in_flight.join(key)) {
            Some(Role::Follow(waiting)) => {
                inflight::follow(waiting, COALESCE_WAIT).await;
                if let Some(hit) = self.store.get(&key, Instant::now()) {
                    return Ok(self.hit(&hit, decision));
                }
                // The leader's response was not stored (or took too long): execute.
                None
            }
            Some(Role::Lead(guard)) => Some(guard),
            None => None,
        };

        let response = inner.call(Request::from_parts(parts, body)).await?;
        Ok(self
            .store_miss(response, key, decision, claims.as_ref())
            .await)
    }

    async fn authenticate(&self, parts: &request::Parts) -> Result<Option<Claims>, AuthErrorKind> {
        match self.tokens.extract(&parts.headers)? {
            None => Ok(None),
            Some(token) => self.verifier.verify(token).await.map(Some),
        }
    }

    fn hit(&self, entry: &CachedResponse, decision: &Decision) -> Response {
        let mut response = Response::new(Body::from(entry.body.clone()));
        *response.headers_mut() = entry.headers.clone();
        cache::set_age(
            response.headers_mut(),
            Instant::now().saturating_duration_since(entry.stored_at),
        );
        self.labelled(response, CacheStatus::Hit, Some(decision))
    }

    async fn store_miss(
        &self,
        response: Response,
        key: CacheKey,
        decision: &Decision,
        claims: Option<&Claims>,
    ) -> Response {
        let (parts, body) = response.into_parts();
        let size = http_body::Body::size_hint(&body).upper();
        if let Err(reason) =
            cache::check_head(parts.status, &parts.headers, size, self.limits.entry_bytes)
        {
            tracing::debug!(?reason, "response not stored");
            return self.labelled(
                Response::from_parts(parts, body),
                CacheStatus::Miss,
                Some(decision),
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
        match cache::storable_ttl(&parts.headers, &bytes, decision, claims) {
            Ok(ttl) => match now.checked_add(ttl) {
                Some(expires_at) => self.store.insert(
                    key,
                    CachedResponse {
                        headers: parts.headers.clone(),
                        body: bytes.clone(),
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
        )
    }

    fn labelled(
        &self,
        mut response: Response,
        status: CacheStatus,
        decision: Option<&Decision>,
    ) -> Response {
        cache::label(response.headers_mut(), status, decision, &self.vary);
        response
    }
}

/// Reads a request body of at most `limit` bytes; answers 413 beyond it, 400 if the client
/// fails to send it.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Response> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(graphql_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
            BAD_REQUEST,
        )),
        Err(_) => Err(graphql_error(
            StatusCode::BAD_REQUEST,
            "request body could not be read",
            BAD_REQUEST,
        )),
    }
}

fn is_json(parts: &request::Parts) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            // `application/json` or `application/*+json`; never `multipart/*`, which
            // async-graphql reads as an upload.
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
}
