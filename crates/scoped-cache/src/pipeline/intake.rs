//! Intake: the guard's checks on a request of a verifying route (body size, nesting,
//! selections, GET's rules, cookies), and what the cache knows of it (the prepared
//! request).

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use axum::body::Body;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Method, request};

use crate::RoutePolicy;
use crate::cache::request::{Prepared, Transport};
use crate::claims::Claims;
use crate::guard::{self, GetRequest, JsonBody, Refusal};

use super::Pipeline;

/// A request the guard let through, and what the cache may read of it.
pub(super) struct Checked {
    /// The body to hand on (already read and bounded, or empty).
    pub(super) body: Bytes,
    /// What the cache knows of the GraphQL request, on a cached route with a GET or a
    /// JSON POST it could read.
    pub(super) prepared: Option<Arc<Prepared>>,
}

impl Pipeline {
    /// The guard's checks (see [`crate::guard`]), then what the cache knows of the request.
    /// Texts the preparer has seen were checked when first prepared: a repeat is one lookup.
    pub(super) async fn check(
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
}
