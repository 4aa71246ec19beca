//! Rejections: the GraphQL-shaped responses the layer answers with instead of calling
//! the inner service.

use std::fmt;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::wire::media::{ResponseMedia, negotiate};

/// Machine code of a request rejected for its token (or its lack of one).
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// Machine code of a request whose token could not be checked because keys are unavailable.
pub const AUTH_UNAVAILABLE: &str = "AUTH_UNAVAILABLE";
/// Machine code of a malformed HTTP request (duplicate or oversized headers, bad body).
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// Machine code of a mutation sent with `GET`.
pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
/// Machine code of a request refused for where it came from (a cross-site request that
/// carries a cookie token).
pub const FORBIDDEN: &str = "FORBIDDEN";
/// Machine code of a request refused because something it needs is out of room or out of
/// reach for now (an operator's revocation when the revocation store is full); retry later.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
/// Machine code of an automatic persisted query whose hash is not known: the client
/// resends it with its document (the code Apollo clients and async-graphql use).
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";

/// Machine code of a document that is not valid GraphQL syntax.
pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// Machine code of a request refused before execution for any other reason the GraphQL
/// server gives: validation, the operation to run, variable values, limits. Errors that
/// already carry a code keep it.
pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// Machine code of a request whose `Accept` header admits no JSON media type (406).
pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
/// Machine code of a `POST` whose body is not `application/json` (415).
pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";

/// Why a request was refused before it ran: the one vocabulary of the layer's own
/// refusals, of the [operator routes](crate::admin) and of
/// [`scoped_cache::graphql`](crate::graphql)'s handler
/// ([`GraphQLRejectionKind`](crate::graphql::GraphQLRejectionKind) is this type). Each
/// kind has one status (by the media type answered in), one machine code and one
/// message, whoever refuses; and every refusal puts its kind into the response's
/// extensions, so outer layers and tests read it without parsing JSON.
///
/// ```
/// use scoped_cache::RefusalKind;
///
/// assert_eq!(RefusalKind::UnsupportedMediaType.code(), "UNSUPPORTED_MEDIA_TYPE");
/// assert_eq!(RefusalKind::CrossSite.code(), "FORBIDDEN");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The `Accept` header admits neither `application/graphql-response+json` nor
    /// `application/json`.
    NotAcceptable,
    /// A method other than `GET`, `HEAD` and `POST`.
    MethodNotAllowed,
    /// A `GET` or `HEAD` whose operation is a mutation or subscription.
    NotAQueryOverGet,
    /// A `POST` without `Content-Type: application/json` (multipart uploads included),
    /// or with a charset other than UTF-8.
    UnsupportedMediaType,
    /// The body exceeds the body limit.
    BodyTooLarge,
    /// The body could not be read.
    BodyUnreadable,
    /// The body is not JSON.
    MalformedJson,
    /// The JSON is not a GraphQL request: `query` or `operationName` not a string,
    /// `variables` or `extensions` not an object, an empty batch, a malformed query string.
    InvalidParameters,
    /// No `query` (and no persisted-query hash).
    MissingQuery,
    /// The document nests brackets too deeply to be parsed safely.
    TooDeep,
    /// The document is not valid GraphQL syntax.
    DocumentParse,
    /// A `GET` or `HEAD` whose operation cannot be told (no such name, or several
    /// operations and no name).
    UnknownOperation,
    /// A `GET` or `HEAD` carrying only a persisted-query hash: the client resends it with
    /// its document, so the operation can be checked to be a query.
    PersistedQueryNotFound,
    /// The document expands to more field selections than allowed once every fragment
    /// spread is expanded.
    TooManySelections,
    /// A `GET` parameter (`query`, `operationName`, `extensions`) given more than once.
    RepeatedParameter,
    /// A state-changing request authenticated by the token cookie that is not
    /// `application/json` (a cross-site form could have sent it).
    CookieNeedsJson,
    /// A request authenticated by the token cookie that a browser sent from another site.
    CrossSite,
    /// An operator route's credential is missing or wrong.
    Unauthorized,
    /// What the request needs is out of room or out of reach for now (a full revocation
    /// store); it may succeed later.
    Unavailable,
}

impl RefusalKind {
    /// The kind's name for metrics and traces (`too_deep`): one per kind, stable.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAcceptable => "not_acceptable",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotAQueryOverGet => "not_a_query_over_get",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyUnreadable => "body_unreadable",
            Self::MalformedJson => "malformed_json",
            Self::InvalidParameters => "invalid_parameters",
            Self::MissingQuery => "missing_query",
            Self::TooDeep => "too_deep",
            Self::DocumentParse => "document_parse",
            Self::UnknownOperation => "unknown_operation",
            Self::PersistedQueryNotFound => "persisted_query_not_found",
            Self::TooManySelections => "too_many_selections",
            Self::RepeatedParameter => "repeated_parameter",
            Self::CookieNeedsJson => "cookie_needs_json",
            Self::CrossSite => "cross_site",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "unavailable",
        }
    }

    /// The HTTP status, answering in `media`: well-formed GraphQL-over-HTTP requests that
    /// fail validation are `200` for legacy `application/json` clients, which read
    /// errors from the body.
    pub(crate) fn status(self, media: ResponseMedia) -> StatusCode {
        match self {
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::MethodNotAllowed | Self::NotAQueryOverGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType | Self::CookieNeedsJson => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::CrossSite => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyUnreadable
            | Self::MalformedJson
            | Self::InvalidParameters
            | Self::MissingQuery
            | Self::TooDeep
            | Self::RepeatedParameter => StatusCode::BAD_REQUEST,
            Self::DocumentParse | Self::UnknownOperation | Self::TooManySelections => match media {
                ResponseMedia::GraphqlResponseJson => StatusCode::BAD_REQUEST,
                ResponseMedia::Json => StatusCode::OK,
            },
            Self::PersistedQueryNotFound => StatusCode::OK,
        }
    }

    /// The machine code in the GraphQL error's `extensions.code`.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotAcceptable => NOT_ACCEPTABLE,
            Self::MethodNotAllowed | Self::NotAQueryOverGet => METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType | Self::CookieNeedsJson => UNSUPPORTED_MEDIA_TYPE,
            Self::DocumentParse => GRAPHQL_PARSE_FAILED,
            Self::UnknownOperation | Self::TooManySelections => GRAPHQL_VALIDATION_FAILED,
            Self::PersistedQueryNotFound => PERSISTED_QUERY_NOT_FOUND,
            Self::CrossSite => FORBIDDEN,
            Self::Unauthorized => UNAUTHENTICATED,
            Self::Unavailable => UNAVAILABLE,
            Self::BodyTooLarge
            | Self::BodyUnreadable
            | Self::MalformedJson
            | Self::InvalidParameters
            | Self::MissingQuery
            | Self::TooDeep
            | Self::RepeatedParameter => BAD_REQUEST,
        }
    }

    /// The message of the GraphQL error.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAcceptable => "accept application/graphql-response+json or application/json",
            Self::MethodNotAllowed => "use GET or POST",
            Self::NotAQueryOverGet => "only queries may be sent with GET",
            Self::UnsupportedMediaType => {
                "send the request as content-type application/json (utf-8)"
            }
            Self::BodyTooLarge => "request body too large",
            Self::BodyUnreadable => "request body could not be read",
            Self::MalformedJson => "request body is not valid JSON",
            Self::InvalidParameters => {
                "invalid request: `query` and `operationName` must be strings, \
                 `variables` and `extensions` objects, a batch a non-empty array"
            }
            Self::MissingQuery => "the request has no `query`",
            Self::TooDeep => "document nests too deeply",
            Self::DocumentParse => "the document is not valid GraphQL",
            Self::UnknownOperation => "the operation to run cannot be determined",
            Self::PersistedQueryNotFound => "PersistedQueryNotFound",
            Self::TooManySelections => "document expands to too many field selections",
            Self::RepeatedParameter => "a request parameter is given more than once",
            Self::CookieNeedsJson => {
                "a request authenticated by cookie must be sent as application/json"
            }
            Self::CrossSite => "cross-site request refused",
            Self::Unauthorized => "missing or invalid credential",
            Self::Unavailable => "unavailable for now; retry later",
        }
    }

    /// The `Allow` header a `405` carries.
    pub(crate) fn allow(self) -> Option<HeaderValue> {
        match self {
            Self::MethodNotAllowed => Some(HeaderValue::from_static("GET, HEAD, POST")),
            Self::NotAQueryOverGet => Some(HeaderValue::from_static("POST")),
            _ => None,
        }
    }

    /// The layer's own answer for this refusal of `request`: GraphQL-shaped, in the media
    /// type it accepts, with this kind in its extensions.
    pub(crate) fn into_response(self, request: &http::HeaderMap) -> Response {
        let media = negotiate(request).unwrap_or(ResponseMedia::Json);
        let mut response = negotiated(
            graphql_error(self.status(media), self.message(), self.code()),
            request,
        );
        if let Some(allow) = self.allow() {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// Why a request's credentials were refused.
///
/// Answers 401 with `WWW-Authenticate: Bearer` (RFC 6750) for token problems, 400 or 431
/// for malformed headers, and 503 with `Retry-After` when keys cannot be had. The body is
/// `{"errors":[{"message":..,"extensions":{"code":..}}]}` and the `AuthError` itself is put
/// into the response's extensions, so outer layers and tests can read [`kind`](Self::kind)
/// without parsing JSON.
///
/// ```
/// use axum::response::IntoResponse;
/// use scoped_cache::{AuthError, AuthErrorKind};
///
/// let response = AuthError::new(AuthErrorKind::Expired).into_response();
/// assert_eq!(response.status(), 401);
/// assert_eq!(
///     response.extensions().get::<AuthError>().map(AuthError::kind),
///     Some(AuthErrorKind::Expired)
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError {
    kind: AuthErrorKind,
}

/// The reason behind an [`AuthError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No token, on a route that requires one.
    MissingToken,
    /// The `Authorization` header or token is not a well-formed bearer JWT.
    Malformed,
    /// The `Authorization` header uses a scheme other than `Bearer` (see
    /// [`ignore_other_schemes`](crate::ScopedCacheLayerBuilder::ignore_other_schemes)).
    UnsupportedScheme,
    /// More than one `Authorization` header.
    DuplicateHeader,
    /// The `Authorization` header (or token cookie) exceeds the configured size.
    HeaderTooLarge,
    /// The signature does not verify with any key that may check it.
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is missing or not an accepted issuer.
    WrongIssuer,
    /// `aud` is missing or names no accepted audience.
    WrongAudience,
    /// A required claim is missing, or `exp`/`nbf` is not a number.
    InvalidClaims,
    /// The header's `alg` is not allowed for the key, or is `none`.
    DisallowedAlgorithm,
    /// The header lists `crit` extensions this layer does not implement.
    UnsupportedCritical,
    /// No configured key matches the token's `kid`.
    UnknownKey,
    /// Keys could not be fetched; the token may be fine.
    KeysUnavailable,
    /// The token was revoked (see [`Revoke`](crate::Revoke)): the client needs a new one.
    Revoked,
    /// Revocations cannot be known: this instance of a fleet sharing them through Redis
    /// has been cut off from it for longer than its
    /// [`max_lag`](crate::RedisTier::max_lag). The token may be fine; retry later.
    RevocationsUnavailable,
}

impl AuthErrorKind {
    /// The kind's name for metrics and traces (`bad_signature`): one per kind, stable.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed",
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::DuplicateHeader => "duplicate_header",
            Self::HeaderTooLarge => "header_too_large",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidClaims => "invalid_claims",
            Self::DisallowedAlgorithm => "disallowed_algorithm",
            Self::UnsupportedCritical => "unsupported_critical",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Revoked => "revoked",
            Self::RevocationsUnavailable => "revocations_unavailable",
        }
    }
}

impl AuthError {
    /// An error of the given kind.
    pub fn new(kind: AuthErrorKind) -> Self {
        Self { kind }
    }

    /// Why the request was refused.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            AuthErrorKind::DuplicateHeader => StatusCode::BAD_REQUEST,
            AuthErrorKind::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            AuthErrorKind::KeysUnavailable | AuthErrorKind::RevocationsUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The machine code in the GraphQL error's `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            AuthErrorKind::DuplicateHeader | AuthErrorKind::HeaderTooLarge => BAD_REQUEST,
            AuthErrorKind::KeysUnavailable | AuthErrorKind::RevocationsUnavailable => {
                AUTH_UNAVAILABLE
            }
            _ => UNAUTHENTICATED,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            AuthErrorKind::MissingToken => "authentication required",
            AuthErrorKind::Malformed => "malformed bearer token",
            AuthErrorKind::UnsupportedScheme => "authorization scheme must be Bearer",
            AuthErrorKind::DuplicateHeader => "more than one authorization header",
            AuthErrorKind::HeaderTooLarge => "authorization header too large",
            AuthErrorKind::BadSignature => "invalid token signature",
            AuthErrorKind::Expired => "token expired",
            AuthErrorKind::NotYetValid => "token not yet valid",
            AuthErrorKind::WrongIssuer => "token issuer not accepted",
            AuthErrorKind::WrongAudience => "token audience not accepted",
            AuthErrorKind::InvalidClaims => "token claims invalid",
            AuthErrorKind::DisallowedAlgorithm => "token algorithm not allowed",
            AuthErrorKind::UnsupportedCritical => "token has unsupported critical header",
            AuthErrorKind::UnknownKey => "token signed by an unknown key",
            AuthErrorKind::KeysUnavailable => "signing keys unavailable, retry later",
            AuthErrorKind::Revoked => "token revoked",
            AuthErrorKind::RevocationsUnavailable => "revocations unavailable, retry later",
        })
    }
}

impl std::error::Error for AuthError {}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let mut response = graphql_error(self.status(), &message, self.code());
        let headers = response.headers_mut();
        match self.status() {
            StatusCode::UNAUTHORIZED => {
                let challenge = if self.kind == AuthErrorKind::MissingToken {
                    HeaderValue::from_static("Bearer")
                } else if self.kind == AuthErrorKind::UnsupportedScheme {
                    // RFC 6750 §3.1: the request is not a bearer request at all.
                    HeaderValue::from_static(
                        "Bearer error=\"invalid_request\", error_description=\"authorization scheme must be Bearer\"",
                    )
                } else {
                    // RFC 6750 §3: the description is a fixed string, never request data.
                    HeaderValue::from_str(&format!(
                        "Bearer error=\"invalid_token\", error_description=\"{message}\""
                    ))
                    .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""))
                };
                headers.insert(header::WWW_AUTHENTICATE, challenge);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// Gives a response the layer made itself the media type the request accepts:
/// `application/graphql-response+json` when it prefers that, else `application/json`.
pub(crate) fn negotiated(mut response: Response, request: &http::HeaderMap) -> Response {
    let media =
        crate::wire::media::negotiate(request).unwrap_or(crate::wire::media::ResponseMedia::Json);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}

/// A GraphQL-over-HTTP error response: `{"errors":[{"message":..,"extensions":{"code":..}}]}`.
///
/// Never cached by anyone: it carries `Cache-Control: no-store`.
pub(crate) fn graphql_error(status: StatusCode, message: &str, code: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_refusal_says_the_same_whoever_makes_it_and_carries_its_kind() {
        let mut request = http::HeaderMap::new();
        request.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/graphql-response+json"),
        );
        let response = RefusalKind::CookieNeedsJson.into_response(&request);
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            response.extensions().get::<RefusalKind>(),
            Some(&RefusalKind::CookieNeedsJson)
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // The same code as the handler's 415.
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            RefusalKind::UnsupportedMediaType.code()
        );
        let get = RefusalKind::NotAQueryOverGet.into_response(&request);
        assert_eq!(get.headers()[header::ALLOW], "POST");
        // Validation failures answer legacy JSON clients with 200, like the handler.
        for kind in [RefusalKind::TooManySelections, RefusalKind::DocumentParse] {
            assert_eq!(kind.status(ResponseMedia::Json), StatusCode::OK);
            assert_eq!(
                kind.status(ResponseMedia::GraphqlResponseJson),
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[tokio::test]
    async fn unauthenticated_is_graphql_shaped_401_with_challenge() {
        let response = AuthError::new(AuthErrorKind::BadSignature).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer error=\"invalid_token\""));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errors"][0]["extensions"]["code"], UNAUTHENTICATED);
        assert_eq!(json["errors"][0]["message"], "invalid token signature");
    }

    #[test]
    fn statuses_fit_the_kind() {
        let status = |kind| AuthError::new(kind).status();
        assert_eq!(
            status(AuthErrorKind::DuplicateHeader),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(AuthErrorKind::HeaderTooLarge),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(
            status(AuthErrorKind::KeysUnavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(AuthErrorKind::Expired), StatusCode::UNAUTHORIZED);
        let unavailable = AuthError::new(AuthErrorKind::KeysUnavailable).into_response();
        assert!(unavailable.headers().contains_key(header::RETRY_AFTER));
    }
}
