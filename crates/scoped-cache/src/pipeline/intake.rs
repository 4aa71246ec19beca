//! Intake: the guard's checks on a request of a verifying route (body size, nesting,
//! selections, GET's rules, cookies), and what the cache knows of it (the prepared
//! request).
//!
//! Checking and preparing a document parse it, at worst in full (a fragment spread makes
//! the guard count the expanded selections; preparing canonicalizes it), and parsing a
//! megabyte takes a few hundred milliseconds. A request text (a GET's query string, a
//! body, a multipart request's) longer than [`EXAMINE_INLINE_BYTES`] is examined on
//! tokio's blocking pool, one per core at a time, so no runtime worker is held by one
//! (the hit path's requests are never behind it).

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
use crate::wire::body::read_bounded;

use super::Pipeline;

/// Request texts up to this long are examined where the request runs: a parse of this
/// much takes well under a millisecond.
pub(super) const EXAMINE_INLINE_BYTES: usize = 16 * 1024;

/// A request the guard let through, and what the cache may read of it.
pub(super) struct Intake {
    /// The body to hand on (already read and bounded, or empty).
    pub(super) body: Bytes,
    /// What the cache knows of the GraphQL request, on a cached route with a GET or a
    /// JSON POST it could read.
    pub(super) prepared: Option<Arc<Prepared>>,
}

/// What the examination of a request's text needs, owned, so it can move to the
/// blocking pool.
struct Text {
    /// `GET` (or `HEAD`): the query string is the request; else the body is.
    get: bool,
    /// Whether the cache may look at it (a cached route; a `GET`, or a JSON `POST`).
    cacheable: bool,
    query: String,
    body: Bytes,
}

impl Pipeline {
    /// The guard's checks (see [`crate::guard`]), then what the cache knows of the request.
    /// Texts the preparer has seen were checked when first prepared: a repeat is one lookup.
    pub(super) async fn intake(
        self: &Arc<Self>,
        parts: &request::Parts,
        body: Body,
        claims: &Option<Claims>,
        policy: RoutePolicy,
    ) -> Result<Intake, Refusal> {
        // A token from the cookie (there is no `Authorization` header) rides along with
        // any request a browser sends, from any site.
        if claims.is_some() && !parts.headers.contains_key(AUTHORIZATION) {
            guard::check_cookie_request(parts)?;
        }
        let get = matches!(parts.method, Method::GET | Method::HEAD);
        let body = match parts.method {
            // A HEAD body means nothing (RFC 9110), and async-graphql would execute it.
            Method::HEAD => Bytes::new(),
            // A GET's body is read (bounded) and dropped: the query string is the request.
            Method::GET => {
                read_bounded(Some(&parts.headers), body, self.limits.request_bytes).await?;
                Bytes::new()
            }
            _ => read_bounded(Some(&parts.headers), body, self.limits.request_bytes).await?,
        };
        if !get && let Some(content_type) = guard::multipart_type(&parts.headers) {
            let content_type = content_type.to_owned();
            let operations = body.clone();
            let limits = self.limits.document;
            // Boxed: a multipart reader's state has no place in every request's.
            let check = Box::pin(async move {
                guard::check_multipart(&content_type, operations, &limits).await
            });
            if body.len() <= EXAMINE_INLINE_BYTES {
                check.await?;
            } else {
                // Its reader needs no I/O (the body is in memory): it runs to the end
                // on a blocking thread.
                let runtime = tokio::runtime::Handle::current();
                self.off_runtime(move |_| runtime.block_on(check)).await?;
            }
            return Ok(Intake {
                body,
                prepared: None,
            });
        }
        let query = parts.uri.query().unwrap_or("");
        let cacheable = policy.cache
            && match parts.method {
                Method::GET => true,
                Method::POST => crate::wire::media::is_json(&parts.headers),
                _ => false,
            };
        // A text the preparer has seen was examined when it was first prepared.
        let seen = match (cacheable, get) {
            (false, _) => None,
            (true, true) => self.preparer.lookup(Transport::Get, query.as_bytes()),
            (true, false) => self.preparer.lookup(Transport::PostJson, &body),
        };
        if let Some(prepared) = seen {
            if get
                && let Prepared::Operation { ty, .. } = &*prepared
                && *ty != OperationType::Query
            {
                return Err(Refusal::NotAQueryOverGet);
            }
            return Ok(Intake {
                body,
                prepared: Some(prepared),
            });
        }
        let length = if get { query.len() } else { body.len() };
        let text = Text {
            get,
            cacheable,
            query: query.to_owned(),
            body,
        };
        if length <= EXAMINE_INLINE_BYTES {
            return self.examine(text);
        }
        self.off_runtime(move |pipeline| pipeline.examine(text))
            .await
    }

    /// Runs `work` on the blocking pool, one per core at a time: a flood of large
    /// documents queues here, with its bodies already bounded, rather than taking every
    /// blocking thread. The permit goes with the work, so a request that stops waiting
    /// (its client went away) does not free a core its work still takes.
    async fn off_runtime<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Pipeline) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<T, Refusal> {
        let Ok(permit) = Arc::clone(&self.examiners).acquire_owned().await else {
            return Err(Refusal::BodyUnreadable);
        };
        let pipeline = Arc::clone(self);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _entered = span.enter();
            work(&pipeline)
        })
        .await
        .unwrap_or(Err(Refusal::BodyUnreadable))
    }

    /// The checks and preparation that parse the request's text: linear in it, and
    /// bounded by the document limits.
    fn examine(&self, text: Text) -> Result<Intake, Refusal> {
        let Text {
            get,
            cacheable,
            query,
            body,
        } = text;
        if get {
            let request = GetRequest::read(&query, &self.limits.document)?;
            let persisted = match request.hash_only() {
                Some(hash) => match self.preparer.persisted(hash) {
                    Some(document) => Some(document),
                    None => return Err(Refusal::PersistedQueryNotFound),
                },
                None => None,
            };
            request.check_only_queries(persisted.as_deref())?;
            return Ok(Intake {
                body,
                prepared: cacheable.then(|| {
                    self.preparer
                        .prepare(Transport::Get, query.as_bytes(), &self.rules)
                }),
            });
        }
        // async-graphql reads every body but multipart as JSON, whatever its type.
        if guard::check_json(&body, &self.limits.document)? == JsonBody::NotGraphQl && cacheable {
            return Err(Refusal::MalformedJson);
        }
        let prepared = cacheable.then(|| {
            self.preparer
                .prepare(Transport::PostJson, &body, &self.rules)
        });
        Ok(Intake { body, prepared })
    }
}
