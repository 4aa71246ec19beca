//! GraphQL over HTTP: the [`GraphQL`] service, and the [`GraphQLRequest`] /
//! [`GraphQLResponse`] pair for hand-written handlers.
//!
//! See the [module docs](crate::graphql) for examples and the status codes.

mod read;
mod rejection;

use read::*;
use rejection::*;
pub use rejection::{GraphQLRejection, GraphQLRejectionKind};
use std::any::Any;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};

use async_graphql::parser::parse_query;
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{
    BatchRequest, BatchResponse, ErrorExtensionValues, Executor, Extensions, ServerError, Value,
    Variables,
};
use axum::RequestExt;
use axum::body::Body;
use axum::extract::FromRequest;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, VARY};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::Service;

use crate::claims::Claims;
use crate::future::ResponseFuture;
use crate::graphql::document::{expanded_selections, select_operation_type};
use crate::graphql::nesting::{self, MAX_MAX_NESTING};
use crate::rejection::GRAPHQL_VALIDATION_FAILED;
use crate::wire::media::{self, ResponseMedia};

/// Parse error messages quote the offending line of the document; past this many bytes the
/// quote is cut, so a one-line megabyte document does not come back whole.
const MAX_MESSAGE_BYTES: usize = 512;

/// The default for [`GraphQL::max_selections`] and [`GraphQLRequest::max_selections`],
/// the same as the layer's [`max_selections`](crate::ScopedCacheLayerBuilder::max_selections).
///
/// async-graphql's validation (its depth, complexity and directive checks included) walks
/// every fragment spread anew, so a document of a few hundred bytes whose fragments each
/// spread the next four times costs seconds before any limit of the schema refuses it.
/// Counting the fields with each fragment counted once is linear; refusing past this count
/// keeps what reaches async-graphql to milliseconds. Real operations, introspection
/// included, select a few hundred.
pub const DEFAULT_MAX_SELECTIONS: u64 = crate::graphql::nesting::DEFAULT_MAX_SELECTIONS;

/// A tower [`Service`] that answers GraphQL over HTTP with any async-graphql
/// [`Executor`] (a `Schema`, a dynamic schema, ...).
///
/// Mount it with [`Router::route_service`](axum::Router::route_service) (it answers `GET`,
/// `HEAD` and `POST`, and 405 for the rest), or with
/// `get_service(..).post_service(..)`. The verified [`Claims`] the
/// [`ScopedCacheLayer`](crate::ScopedCacheLayer) put into the request's extensions are
/// added to every GraphQL request's data, exactly as
/// [`with_claims`](crate::graphql::with_claims) does.
///
/// Cloning is as cheap as cloning the executor (a `Schema` is an `Arc`).
/// See the [module docs](crate::graphql) for an example and the status codes.
#[derive(Clone)]
pub struct GraphQL<E> {
    executor: E,
    max_selections: u64,
}

impl<E> GraphQL<E> {
    /// A service executing requests with `executor`.
    pub fn new(executor: E) -> Self {
        Self {
            executor,
            max_selections: DEFAULT_MAX_SELECTIONS,
        }
    }

    /// The most fields a request's document may select, counting each fragment spread as
    /// the fields it expands to. Default: [`DEFAULT_MAX_SELECTIONS`]. A document over it is
    /// refused before execution as a validation failure (400 as
    /// `application/graphql-response+json`, 200 as `application/json`).
    #[must_use]
    pub fn max_selections(mut self, selections: u64) -> Self {
        self.max_selections = selections;
        self
    }
}

impl<E> fmt::Debug for GraphQL<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphQL")
            .field("max_selections", &self.max_selections)
            .finish_non_exhaustive()
    }
}

impl<E, B> Service<http::Request<B>> for GraphQL<E>
where
    E: Executor,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let executor = self.executor.clone();
        let max_selections = self.max_selections;
        let req = req.map(Body::new);
        ResponseFuture::new(async move {
            Ok(match GraphQLRequest::read(req).await {
                Ok(request) => request
                    .max_selections(max_selections)
                    .execute(&executor)
                    .await
                    .into_response(),
                Err(rejection) => rejection.into_response(),
            })
        })
    }
}

/// Extracts a GraphQL request (or a batch) from `GET`/`HEAD` query parameters or a
/// `POST` `application/json` body, and remembers the response media type the request
/// accepts.
///
/// The request's verified [`Claims`], if any, are already in every GraphQL request's data.
/// Each document is parsed here, once. A `GET` or `HEAD` that would run anything but a
/// query is refused with 405. The body limit is axum's
/// [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit): 2 MiB unless the router sets
/// another. Refusals are [`GraphQLRejection`]s.
///
/// See the [module docs](crate::graphql) for an example.
#[derive(Debug)]
pub struct GraphQLRequest {
    batch: BatchRequest,
    /// Per request of the batch, the fields its document selects with fragments expanded.
    selections: Vec<u64>,
    max_selections: u64,
    media: ResponseMedia,
}

impl GraphQLRequest {
    /// Executes the request (or each request of a batch) with `executor`, answering in
    /// the media type the request accepts. A request whose document selects more than
    /// [`max_selections`](Self::max_selections) is answered with an error instead.
    pub async fn execute<E: Executor>(self, executor: &E) -> GraphQLResponse {
        let max = self.max_selections;
        let batch = if self.selections.iter().all(|n| *n <= max) {
            executor.execute_batch(self.batch).await
        } else {
            match self.batch {
                BatchRequest::Single(_) => BatchResponse::Single(too_many_selections(max)),
                BatchRequest::Batch(requests) => {
                    let mut within = Vec::with_capacity(requests.len());
                    let mut over = Vec::with_capacity(requests.len());
                    for (request, n) in requests.into_iter().zip(&self.selections) {
                        over.push(*n > max);
                        if *n <= max {
                            within.push(request);
                        }
                    }
                    let mut executed = if within.is_empty() {
                        Vec::new()
                    } else {
                        match executor.execute_batch(BatchRequest::Batch(within)).await {
                            BatchResponse::Batch(responses) => responses,
                            BatchResponse::Single(response) => vec![response],
                        }
                    }
                    .into_iter();
                    BatchResponse::Batch(
                        over.into_iter()
                            .map(|over| {
                                if over {
                                    too_many_selections(max)
                                } else {
                                    executed.next().unwrap_or_default()
                                }
                            })
                            .collect(),
                    )
                }
            }
        };
        GraphQLResponse {
            batch,
            media: self.media,
        }
    }

    /// Adds `data` to every request of the batch, for resolvers to read with
    /// `ctx.data::<D>()`.
    #[must_use]
    pub fn data<D: Any + Clone + Send + Sync>(mut self, data: D) -> Self {
        self.batch = self.batch.data(data);
        self
    }

    /// The most fields a document may select, counting each fragment spread as the fields
    /// it expands to; checked by [`execute`](Self::execute). Default:
    /// [`DEFAULT_MAX_SELECTIONS`].
    #[must_use]
    pub fn max_selections(mut self, selections: u64) -> Self {
        self.max_selections = selections;
        self
    }

    async fn read(req: http::Request<Body>) -> Result<Self, GraphQLRejection> {
        let Some(media) = media::negotiate(req.headers()) else {
            return Err(GraphQLRejection::new(
                RejectionKind::NotAcceptable,
                ResponseMedia::Json,
            ));
        };
        let claims = req.extensions().get::<Claims>().cloned();
        let read = match *req.method() {
            Method::GET | Method::HEAD => read_get(req.uri().query().unwrap_or_default()),
            Method::POST => read_post(req).await,
            _ => Err(Refused::from(RejectionKind::MethodNotAllowed)),
        }
        .map_err(|refused| refused.with(media))?;
        let batch = match claims {
            Some(claims) => read.batch.data(claims),
            None => read.batch,
        };
        Ok(Self {
            batch,
            selections: read.selections,
            max_selections: DEFAULT_MAX_SELECTIONS,
            media,
        })
    }
}

impl<S: Send + Sync> FromRequest<S> for GraphQLRequest {
    type Rejection = GraphQLRejection;

    async fn from_request(
        req: axum::extract::Request,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Self::read(req).await
    }
}

fn too_many_selections(max: u64) -> async_graphql::Response {
    let mut error = ServerError::new(
        format!("the document selects more than {max} fields once its fragments are expanded"),
        None,
    );
    set_code(&mut error, GRAPHQL_VALIDATION_FAILED);
    async_graphql::Response::from_errors(vec![error])
}

/// An executed GraphQL response (or batch), answered in the media type the request
/// accepted.
///
/// A request the server refused before execution (its response has errors that name no
/// field, and no data) is answered without `data` and with `extensions.code` on each
/// error ([`GRAPHQL_VALIDATION_FAILED`] unless it has one): `400` as
/// `application/graphql-response+json`, `200` as `application/json`. Everything executed
/// is `200`. Response headers and `Cache-Control` set by resolvers are kept. The body is
/// serialised once.
#[derive(Debug)]
pub struct GraphQLResponse {
    batch: BatchResponse,
    media: ResponseMedia,
}

impl IntoResponse for GraphQLResponse {
    fn into_response(mut self) -> Response {
        let mut request_error = false;
        let body = match &mut self.batch {
            BatchResponse::Single(response) => {
                request_error = mark_request_error(response);
                serde_json::to_vec(&Wire::of(response, request_error))
            }
            BatchResponse::Batch(responses) => {
                let wires: Vec<Wire<'_>> = responses
                    .iter_mut()
                    .map(|response| {
                        let marked = mark_request_error(response);
                        Wire::of(response, marked)
                    })
                    .collect();
                serde_json::to_vec(&wires)
            }
        };
        let Ok(body) = body else {
            // Only a non-string map key could fail, and GraphQL values have none.
            tracing::warn!("a GraphQL response could not be serialised");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                self.media,
                ServerError::new("response could not be serialised", None),
                "INTERNAL_SERVER_ERROR",
            );
        };
        let mut response = Response::new(Body::from(body));
        if request_error && self.media == ResponseMedia::GraphqlResponseJson {
            *response.status_mut() = StatusCode::BAD_REQUEST;
        }
        let headers = response.headers_mut();
        headers.extend(self.batch.http_headers());
        if self.batch.is_ok()
            && let Some(value) = self.batch.cache_control().value()
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            headers.insert(CACHE_CONTROL, value);
        }
        if request_error {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        headers.insert(CONTENT_TYPE, self.media.content_type());
        headers.append(VARY, HeaderValue::from_static("accept"));
        response
    }
}

use GraphQLRejectionKind as RejectionKind;

#[cfg(test)]
mod tests;
