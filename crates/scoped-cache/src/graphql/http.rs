//! GraphQL over HTTP: the [`GraphQL`] service, and the [`GraphQLRequest`] /
//! [`GraphQLResponse`] pair for hand-written handlers.
//!
//! See the [module docs](crate::graphql) for examples and the status codes.

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
use crate::guard::{MAX_MAX_NESTING, nesting};
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
pub const DEFAULT_MAX_SELECTIONS: u64 = crate::guard::DEFAULT_MAX_SELECTIONS;

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

/// Why a [`GraphQLRequest`] could not be extracted. Answers with a GraphQL-shaped body,
/// `{"errors":[{"message":..,"extensions":{"code":..}}]}`, in the media type the request
/// accepts; the [`GraphQLRejectionKind`] is also put into the response's extensions.
///
/// | kind | status | code |
/// | --- | --- | --- |
/// | `NotAcceptable` | 406 | [`NOT_ACCEPTABLE`](crate::graphql::NOT_ACCEPTABLE) |
/// | `MethodNotAllowed` | 405, `Allow: GET, HEAD, POST` | [`METHOD_NOT_ALLOWED`](crate::METHOD_NOT_ALLOWED) |
/// | `NotAQueryOverGet` | 405, `Allow: POST` | [`METHOD_NOT_ALLOWED`](crate::METHOD_NOT_ALLOWED) |
/// | `UnsupportedMediaType` | 415 | [`UNSUPPORTED_MEDIA_TYPE`](crate::graphql::UNSUPPORTED_MEDIA_TYPE) |
/// | `BodyTooLarge` | 413 | [`BAD_REQUEST`](crate::BAD_REQUEST) |
/// | `BodyUnreadable`, `MalformedJson`, `InvalidParameters`, `MissingQuery`, `TooDeep` | 400 | [`BAD_REQUEST`](crate::BAD_REQUEST) |
/// | `DocumentParse` | 400, or 200 as `application/json` | [`GRAPHQL_PARSE_FAILED`](crate::graphql::GRAPHQL_PARSE_FAILED) |
/// | `UnknownOperation` | 400, or 200 as `application/json` | [`GRAPHQL_VALIDATION_FAILED`](crate::graphql::GRAPHQL_VALIDATION_FAILED) |
/// | `PersistedQueryNotFound` | 200 | [`PERSISTED_QUERY_NOT_FOUND`](crate::PERSISTED_QUERY_NOT_FOUND) |
///
/// ```
/// use axum::response::IntoResponse;
/// use scoped_cache::graphql::{GraphQLRejection, GraphQLRejectionKind, GraphQLRequest};
/// use axum::extract::FromRequest;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let put = http::Request::put("/graphql").body(axum::body::Body::empty()).unwrap();
/// let rejection = GraphQLRequest::from_request(put, &()).await.unwrap_err();
/// assert_eq!(rejection.kind(), GraphQLRejectionKind::MethodNotAllowed);
/// assert_eq!(rejection.into_response().status(), 405);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GraphQLRejection {
    kind: RejectionKind,
    media: ResponseMedia,
    error: Option<Box<ServerError>>,
}

/// The reason behind a [`GraphQLRejection`]: the crate's one vocabulary of refusals,
/// [`RefusalKind`](crate::RefusalKind).
pub type GraphQLRejectionKind = crate::RefusalKind;

use GraphQLRejectionKind as RejectionKind;

impl GraphQLRejection {
    fn new(kind: RejectionKind, media: ResponseMedia) -> Self {
        Self {
            kind,
            media,
            error: None,
        }
    }

    /// Why the request was refused.
    pub fn kind(&self) -> GraphQLRejectionKind {
        self.kind
    }

    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        self.kind.status(self.media)
    }

    /// The machine code in the GraphQL error's `extensions.code`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for GraphQLRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.message())
    }
}

impl std::error::Error for GraphQLRejection {}

impl IntoResponse for GraphQLRejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let error = match self.error {
            Some(error) => *error,
            None => ServerError::new(self.to_string(), None),
        };
        let mut response = error_response(status, self.media, error, code);
        if let Some(allow) = self.kind.allow() {
            response.headers_mut().insert(ALLOW, allow);
        }
        response.extensions_mut().insert(self.kind);
        response
    }
}

/// A rejection before the media type is attached.
#[derive(Debug)]
struct Refused {
    kind: RejectionKind,
    error: Option<Box<ServerError>>,
}

impl Refused {
    fn with(self, media: ResponseMedia) -> GraphQLRejection {
        GraphQLRejection {
            kind: self.kind,
            media,
            error: self.error,
        }
    }
}

impl From<RejectionKind> for Refused {
    fn from(kind: RejectionKind) -> Self {
        Self { kind, error: None }
    }
}

/// A GraphQL-shaped error response; never stored by a cache.
fn error_response(
    status: StatusCode,
    media: ResponseMedia,
    mut error: ServerError,
    code: &str,
) -> Response {
    set_code(&mut error, code);
    let errors = [error];
    let wire = Wire {
        data: None,
        errors: &errors,
        extensions: &BTreeMap::new(),
    };
    let body = serde_json::to_vec(&wire).unwrap_or_else(|_| {
        br#"{"errors":[{"message":"internal error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#
            .to_vec()
    });
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, media.content_type());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VARY, HeaderValue::from_static("accept"));
    response
}

fn set_code(error: &mut ServerError, code: &str) {
    let extensions = error
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
}

/// A GraphQL response as sent: `data` left out for a request error (the GraphQL spec: no
/// `data` when execution never started), `errors` and `extensions` only when non-empty.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[ServerError]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, Value>,
}

impl<'a> Wire<'a> {
    fn of(response: &'a async_graphql::Response, request_error: bool) -> Self {
        Self {
            data: (!request_error).then_some(&response.data),
            errors: &response.errors,
            extensions: &response.extensions,
        }
    }
}

/// Whether `response` is a request error: execution never started (parse, validation,
/// operation selection, variable coercion, limits, an extension refusing it). async-graphql
/// answers those with no data and errors that name no field; errors raised while
/// executing always carry the field's path. Each such error gets a `code` if it has none.
fn mark_request_error(response: &mut async_graphql::Response) -> bool {
    let request_error = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty());
    if request_error {
        for error in &mut response.errors {
            set_code(error, GRAPHQL_VALIDATION_FAILED);
        }
    }
    request_error
}

/// The fields of a GraphQL-over-HTTP request in a JSON body. Unknown fields are ignored
/// (as the spec demands); a field of the wrong type refuses the request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonParams {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Variables>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

/// The same fields in a `GET` query string, where `variables` and `extensions` are JSON
/// text and an empty value means the parameter is absent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// The GraphQL request(s) of an HTTP request, with the fields each document selects.
struct Read {
    batch: BatchRequest,
    selections: Vec<u64>,
}

fn read_get(query_string: &str) -> Result<Read, Refused> {
    let params: QueryParams = serde_urlencoded::from_str(query_string)
        .map_err(|_| Refused::from(RejectionKind::InvalidParameters))?;
    let present = |value: Option<String>| value.filter(|v| !v.is_empty());
    let variables: Option<Variables> = json_param(params.variables)?;
    let extensions: Option<Extensions> = json_param(params.extensions)?;
    let operation_name = present(params.operation_name);
    let Some(query) = present(params.query) else {
        return Err(if is_persisted_query(extensions.as_ref()) {
            // The operation's kind cannot be checked without its document.
            RejectionKind::PersistedQueryNotFound.into()
        } else {
            RejectionKind::MissingQuery.into()
        });
    };
    let document = parse(&query)?;
    match select_operation_type(&document, operation_name.as_deref()) {
        Some(OperationType::Query) => {}
        Some(OperationType::Mutation | OperationType::Subscription) => {
            return Err(RejectionKind::NotAQueryOverGet.into());
        }
        None => {
            let message = match &operation_name {
                Some(_) => "no operation of that name in the document",
                None => "the document has several operations: name one with `operationName`",
            };
            return Err(Refused {
                kind: RejectionKind::UnknownOperation,
                error: Some(Box::new(ServerError::new(message, None))),
            });
        }
    }
    let (request, selections) =
        request(query, Some(document), operation_name, variables, extensions);
    Ok(Read {
        batch: BatchRequest::Single(request),
        selections: vec![selections],
    })
}

/// A JSON-text query parameter; empty means absent, and so does `null`.
fn json_param<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>, Refused> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => serde_json::from_str::<Option<T>>(&text)
            .map_err(|_| Refused::from(RejectionKind::InvalidParameters)),
    }
}

async fn read_post(req: http::Request<Body>) -> Result<Read, Refused> {
    if !is_utf8_json(req.headers()) {
        return Err(RejectionKind::UnsupportedMediaType.into());
    }
    let body = req
        .with_limited_body()
        .into_body()
        .collect()
        .await
        .map_err(|err| {
            if crate::wire::body::is_length_limit(&*err.into_inner()) {
                RejectionKind::BodyTooLarge
            } else {
                RejectionKind::BodyUnreadable
            }
        })?
        .to_bytes();
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let batch: Vec<JsonParams> = serde_json::from_slice(&body).map_err(json_refusal)?;
        if batch.is_empty() {
            return Err(RejectionKind::InvalidParameters.into());
        }
        let mut requests = Vec::with_capacity(batch.len());
        let mut selections = Vec::with_capacity(batch.len());
        for params in batch {
            let (request, count) = post_request(params, true)?;
            requests.push(request);
            selections.push(count);
        }
        Ok(Read {
            batch: BatchRequest::Batch(requests),
            selections,
        })
    } else {
        let params: JsonParams = serde_json::from_slice(&body).map_err(json_refusal)?;
        let (request, selections) = post_request(params, false)?;
        Ok(Read {
            batch: BatchRequest::Single(request),
            selections: vec![selections],
        })
    }
}

/// One request of a `POST`, its document parsed here (async-graphql then does not parse
/// it again). In a batch, an entry whose document does not parse is left to the executor,
/// which answers that entry alone with the parse error.
fn post_request(
    params: JsonParams,
    in_batch: bool,
) -> Result<(async_graphql::Request, u64), Refused> {
    let JsonParams {
        query,
        operation_name,
        variables,
        extensions,
    } = params;
    let (query, document) = match query {
        Some(query) => match parse(&query) {
            Ok(document) => (query, Some(document)),
            Err(refused) if in_batch && refused.kind == RejectionKind::DocumentParse => {
                (query, None)
            }
            Err(refused) => return Err(refused),
        },
        // An automatic persisted query: the schema's extension supplies the document.
        None if is_persisted_query(extensions.as_ref()) => (String::new(), None),
        None => return Err(RejectionKind::MissingQuery.into()),
    };
    Ok(request(
        query,
        document,
        operation_name,
        variables,
        extensions,
    ))
}

/// The request for async-graphql, with the document already parsed, and the fields the
/// document selects (0 without a document: it comes from a persisted query, or does not
/// parse and is never executed).
fn request(
    query: String,
    document: Option<ExecutableDocument>,
    operation_name: Option<String>,
    variables: Option<Variables>,
    extensions: Option<Extensions>,
) -> (async_graphql::Request, u64) {
    let mut request = async_graphql::Request::new(query);
    request.operation_name = operation_name;
    request.variables = variables.unwrap_or_default();
    request.extensions = extensions.unwrap_or_default();
    let mut selections = 0;
    if let Some(document) = document {
        selections = expanded_selections(&document);
        request.set_parsed_query(document);
    }
    (request, selections)
}

/// Parses `query`, after checking that its nesting stays where async-graphql's recursive
/// parser is safe.
fn parse(query: &str) -> Result<ExecutableDocument, Refused> {
    nesting::check(query.as_bytes(), MAX_MAX_NESTING)
        .map_err(|_| Refused::from(RejectionKind::TooDeep))?;
    parse_query(query).map_err(|err| {
        let mut error = ServerError::from(err);
        truncate(&mut error.message, MAX_MESSAGE_BYTES);
        Refused {
            kind: RejectionKind::DocumentParse,
            error: Some(Box::new(error)),
        }
    })
}

fn truncate(message: &mut String, max: usize) {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
}

fn is_persisted_query(extensions: Option<&Extensions>) -> bool {
    extensions.is_some_and(|extensions| extensions.0.contains_key("persistedQuery"))
}

fn json_refusal(err: serde_json::Error) -> Refused {
    match err.classify() {
        serde_json::error::Category::Data => RejectionKind::InvalidParameters,
        _ => RejectionKind::MalformedJson,
    }
    .into()
}

/// Exactly one `Content-Type`, `application/json`, and if a charset is named, UTF-8.
fn is_utf8_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let mut parts = value.as_bytes().split(|b| *b == b';');
    let essence = parts.next().unwrap_or_default().trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
        && parts.all(|param| {
            let Some(eq) = param.iter().position(|b| *b == b'=') else {
                return true;
            };
            if !param[..eq].trim_ascii().eq_ignore_ascii_case(b"charset") {
                return true;
            }
            let charset = param[eq + 1..].trim_ascii();
            let charset = charset
                .strip_prefix(b"\"")
                .and_then(|c| c.strip_suffix(b"\""))
                .unwrap_or(charset);
            charset.eq_ignore_ascii_case(b"utf-8")
        })
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptySubscription, Object, Schema, SimpleObject};
    use axum::Router;
    use axum::routing::post;
    use http::Request;
    use http::header::ACCEPT;
    use tower::ServiceExt;

    use super::*;
    use crate::rejection::{
        BAD_REQUEST, GRAPHQL_PARSE_FAILED, NOT_ACCEPTABLE, PERSISTED_QUERY_NOT_FOUND,
        UNSUPPORTED_MEDIA_TYPE,
    };

    struct Query;

    #[derive(SimpleObject)]
    struct Item {
        id: i32,
    }

    #[Object]
    impl Query {
        async fn hello(&self) -> &str {
            "world"
        }
        async fn item(&self, id: i32) -> async_graphql::Result<Item> {
            if id < 0 {
                return Err("no such item".into());
            }
            Ok(Item { id })
        }
        async fn subject(&self, ctx: &async_graphql::Context<'_>) -> Option<String> {
            ctx.data_opt::<Claims>()?.subject().map(str::to_owned)
        }
    }

    struct Mutation;

    #[Object]
    impl Mutation {
        async fn touch(&self) -> bool {
            true
        }
    }

    fn service() -> GraphQL<Schema<Query, Mutation, EmptySubscription>> {
        GraphQL::new(Schema::new(Query, Mutation, EmptySubscription))
    }

    async fn call(req: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = service().oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!("not JSON: {}", String::from_utf8_lossy(&bytes));
        });
        (parts.status, parts.headers, json)
    }

    fn post_json(accept: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::post("/graphql").header(CONTENT_TYPE, "application/json");
        if let Some(accept) = accept {
            builder = builder.header(ACCEPT, accept);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    }

    fn get(accept: &str, query: &str) -> Request<Body> {
        Request::get(format!(
            "/graphql?{}",
            serde_urlencoded::to_string([("query", query)]).unwrap()
        ))
        .header(ACCEPT, accept)
        .body(Body::empty())
        .unwrap()
    }

    const GRJ: &str = "application/graphql-response+json";
    const JSON: &str = "application/json";

    #[tokio::test]
    async fn post_answers_in_the_accepted_media_type() {
        for (accept, content_type) in [
            (Some(JSON), "application/json; charset=utf-8"),
            (None, "application/json; charset=utf-8"),
            (Some("*/*"), "application/json; charset=utf-8"),
            (
                Some(GRJ),
                "application/graphql-response+json; charset=utf-8",
            ),
        ] {
            let (status, headers, body) = call(post_json(accept, r#"{"query":"{ hello }"}"#)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[CONTENT_TYPE], content_type, "{accept:?}");
            assert_eq!(body, serde_json::json!({"data": {"hello": "world"}}));
        }
    }

    #[tokio::test]
    async fn unacceptable_is_406_graphql_shaped() {
        let (status, headers, body) =
            call(post_json(Some("text/html"), r#"{"query":"{ hello }"}"#)).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(headers[CONTENT_TYPE], "application/json; charset=utf-8");
        assert_eq!(body["errors"][0]["extensions"]["code"], NOT_ACCEPTABLE);
    }

    #[tokio::test]
    async fn request_errors_have_no_data_and_media_dependent_status() {
        let cases = [
            // (body, GRJ status, JSON status, code)
            (r#"{"query":"{"}"#, 400, 200, GRAPHQL_PARSE_FAILED),
            (
                r#"{"query":"{ nope }"}"#,
                400,
                200,
                GRAPHQL_VALIDATION_FAILED,
            ),
            (
                r#"{"query":"query Q($id: Int!) { item(id: $id) { id } }","variables":{"id":"x"}}"#,
                400,
                200,
                GRAPHQL_VALIDATION_FAILED,
            ),
            (
                r#"{"query":"{ hello }","operationName":"Nope"}"#,
                400,
                200,
                GRAPHQL_VALIDATION_FAILED,
            ),
            (r#"{ "not a JSON"#, 400, 400, BAD_REQUEST),
            (r#"{"qeury":"{ hello }"}"#, 400, 400, BAD_REQUEST),
            (r#"{"query":{"obj":"ect"}}"#, 400, 400, BAD_REQUEST),
            (
                r#"{"query":"{ hello }","variables":"x"}"#,
                400,
                400,
                BAD_REQUEST,
            ),
            (
                r#"{"query":"{ hello }","operationName":0}"#,
                400,
                400,
                BAD_REQUEST,
            ),
            (
                r#"{"query":"{ hello }","extensions":[1]}"#,
                400,
                400,
                BAD_REQUEST,
            ),
            (r#"[]"#, 400, 400, BAD_REQUEST),
            ("", 400, 400, BAD_REQUEST),
        ];
        for (body, graphql_status, json_status, code) in cases {
            for (accept, status) in [(GRJ, graphql_status), (JSON, json_status)] {
                let (got, _, json) = call(post_json(Some(accept), body)).await;
                assert_eq!(got.as_u16(), status, "{body} as {accept}");
                assert_eq!(json["errors"][0]["extensions"]["code"], code, "{body}");
                assert!(json.get("data").is_none(), "{body}: {json}");
                assert!(json["errors"][0]["message"].is_string());
            }
        }
    }

    #[tokio::test]
    async fn field_errors_are_200_with_data() {
        let (status, _, body) = call(post_json(
            Some(GRJ),
            r#"{"query":"{ hello item(id: -1) { id } }"}"#,
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["hello"], "world");
        assert_eq!(body["errors"][0]["path"][0], "item");
    }

    #[tokio::test]
    async fn null_variables_operation_name_and_extensions_are_absent() {
        let body = r#"{"query":"{ hello }","variables":null,"operationName":null,"extensions":null,"other":1}"#;
        let (status, _, json) = call(post_json(Some(JSON), body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json, serde_json::json!({"data": {"hello": "world"}}));
    }

    #[tokio::test]
    async fn get_runs_queries_and_refuses_everything_else() {
        let (status, _, body) = call(get(GRJ, "{ hello }")).await;
        assert_eq!(
            (status, body["data"]["hello"].as_str()),
            (StatusCode::OK, Some("world"))
        );

        for method in [Method::GET, Method::HEAD] {
            let mut req = get(GRJ, "mutation { touch }");
            *req.method_mut() = method.clone();
            let response = service().oneshot(req).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(response.headers()[ALLOW], "POST");
        }
        let (status, _, body) = call(get(JSON, "query A { hello } mutation B { touch }")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            GRAPHQL_VALIDATION_FAILED
        );
        let (status, _, _) = call(get(GRJ, "query A { hello } mutation B { touch }")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, body) = call(get(GRJ, "{")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            GRAPHQL_PARSE_FAILED
        );
    }

    #[tokio::test]
    async fn get_with_only_a_persisted_query_hash_asks_for_the_document() {
        let ext = r#"{"persistedQuery":{"version":1,"sha256Hash":"abc"}}"#;
        let uri = format!(
            "/graphql?{}",
            serde_urlencoded::to_string([("extensions", ext)]).unwrap()
        );
        let (status, _, body) = call(Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            PERSISTED_QUERY_NOT_FOUND
        );
    }

    #[tokio::test]
    async fn other_methods_and_media_types_are_refused() {
        let put = Request::put("/graphql").body(Body::empty()).unwrap();
        let response = service().oneshot(put).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD, POST");

        for content_type in [
            None,
            Some("multipart/form-data; boundary=x"),
            Some("text/plain"),
            Some("application/json; charset=latin1"),
        ] {
            let mut builder = Request::post("/graphql");
            if let Some(content_type) = content_type {
                builder = builder.header(CONTENT_TYPE, content_type);
            }
            let req = builder
                .body(Body::from(r#"{"query":"{ hello }"}"#))
                .unwrap();
            let (status, _, body) = call(req).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}"
            );
            assert_eq!(
                body["errors"][0]["extensions"]["code"],
                UNSUPPORTED_MEDIA_TYPE
            );
        }
        let req = Request::post("/graphql")
            .header(CONTENT_TYPE, "Application/JSON; Charset=\"UTF-8\"")
            .body(Body::from(r#"{"query":"{ hello }"}"#))
            .unwrap();
        assert_eq!(call(req).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn bodies_beyond_the_default_limit_are_413() {
        let big = format!(
            r#"{{"query":"{{ hello }}","pad":"{}"}}"#,
            "x".repeat(3 << 20)
        );
        let (status, _, body) = call(post_json(None, &big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["errors"][0]["extensions"]["code"], BAD_REQUEST);

        // The router's DefaultBodyLimit applies.
        let app = Router::new()
            .route_service("/graphql", service())
            .layer(axum::extract::DefaultBodyLimit::max(64));
        let padded = format!(r#"{{"query":"{{ hello }}","pad":"{}"}}"#, "x".repeat(64));
        let response = app.oneshot(post_json(None, &padded)).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn deeply_nested_documents_are_refused_before_parsing() {
        let deep = format!(r#"{{"query":"{}"}}"#, "{a".repeat(100_000));
        let (status, _, body) = call(post_json(Some(JSON), &deep)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["message"], "document nests too deeply");
    }

    #[tokio::test]
    async fn parse_error_messages_are_bounded() {
        let long = format!(r#"{{"query":"{{ hello {} !"}}"#, "x ".repeat(10_000));
        let (_, _, body) = call(post_json(Some(JSON), &long)).await;
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(),
            "{}",
            message.len()
        );
    }

    #[tokio::test]
    async fn batches_run_each_request() {
        let body = r#"[{"query":"{ hello }"},{"query":"{"},{"query":"{ item(id: 2) { id } }"}]"#;
        let (status, _, json) = call(post_json(Some(GRJ), body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json[0]["data"]["hello"], "world");
        assert!(json[1].get("data").is_none());
        assert_eq!(
            json[1]["errors"][0]["extensions"]["code"],
            GRAPHQL_VALIDATION_FAILED
        );
        assert_eq!(json[2]["data"]["item"]["id"], 2);
    }

    #[tokio::test]
    async fn claims_reach_resolvers() {
        let claims = Claims::new(
            serde_json::json!({"sub": "alice"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let mut req = post_json(Some(JSON), r#"{"query":"{ subject }"}"#);
        req.extensions_mut().insert(claims);
        let (_, _, body) = call(req).await;
        assert_eq!(body["data"]["subject"], "alice");
    }

    #[tokio::test]
    async fn extractor_and_response_work_in_a_handler() {
        let schema = Schema::new(Query, Mutation, EmptySubscription);
        let app = Router::new().route(
            "/graphql",
            post(
                |request: GraphQLRequest| async move { request.data(7_u8).execute(&schema).await },
            ),
        );
        let response = app
            .oneshot(post_json(Some(GRJ), r#"{"query":"{ hello }"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/graphql-response+json; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn documents_over_the_selection_limit_are_refused_before_execution() {
        let limited = || service().max_selections(3);
        let body = r#"{"query":"{ a: hello b: hello c: hello d: hello }"}"#;
        for (accept, status) in [(GRJ, StatusCode::BAD_REQUEST), (JSON, StatusCode::OK)] {
            let response = limited()
                .oneshot(post_json(Some(accept), body))
                .await
                .unwrap();
            assert_eq!(response.status(), status);
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(json.get("data").is_none());
            assert_eq!(
                json["errors"][0]["extensions"]["code"],
                GRAPHQL_VALIDATION_FAILED
            );
        }
        let batch = r#"[{"query":"{ hello }"},{"query":"{ a: hello b: hello c: hello d: hello }"},{"query":"{ item(id: 1) { id } }"}]"#;
        let response = limited()
            .oneshot(post_json(Some(GRJ), batch))
            .await
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json[0]["data"]["hello"], "world");
        assert_eq!(
            json[1]["errors"][0]["extensions"]["code"],
            GRAPHQL_VALIDATION_FAILED
        );
        assert_eq!(json[2]["data"]["item"]["id"], 1);
    }

    #[test]
    fn content_type_checks() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_utf8_json(&headers)
        };
        assert!(check("application/json"));
        assert!(check("application/json;charset=utf-8"));
        assert!(check("application/json; boundary=x"));
        assert!(!check("application/jsonx"));
        assert!(!check("application/graphql"));
        assert!(!check("application/json; charset=utf-16"));
        let mut twice = HeaderMap::new();
        twice.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        twice.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_utf8_json(&twice));
    }
}
