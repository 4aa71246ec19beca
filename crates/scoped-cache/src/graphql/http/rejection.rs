//! Refusing a request before it runs, and shaping every error response: one status, code
//! and message per [`RefusalKind`](crate::RefusalKind), in the media type negotiated.

use super::*;

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

impl GraphQLRejection {
    pub(super) fn new(kind: RejectionKind, media: ResponseMedia) -> Self {
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
pub(super) struct Refused {
    pub(super) kind: RejectionKind,
    pub(super) error: Option<Box<ServerError>>,
}

impl Refused {
    pub(super) fn with(self, media: ResponseMedia) -> GraphQLRejection {
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
pub(super) fn error_response(
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

pub(super) fn set_code(error: &mut ServerError, code: &str) {
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
pub(super) struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[ServerError]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, Value>,
}

impl<'a> Wire<'a> {
    pub(super) fn of(response: &'a async_graphql::Response, request_error: bool) -> Self {
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
pub(super) fn mark_request_error(response: &mut async_graphql::Response) -> bool {
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
