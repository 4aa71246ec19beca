//! The operators' read-only views: `GET /stats` (JSON, behind the admin credential) and
//! `GET /` (one self-contained HTML page that asks for the credential and charts the
//! stats; the page itself holds no data).

use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, HeaderValue};

use super::{Admin, Refusal, authorize, respond};
use crate::rejection::RefusalKind;

/// The page: inline CSS and script, no CDN, no build step.
const PAGE: &str = include_str!("page.html");

/// `GET /stats`: the recent window's answers by status, route, operation, rule and
/// reason; each cache against its bound; the Redis tier; readiness.
pub(super) async fn stats(
    State(admin): State<Admin>,
    request: Request,
) -> Result<Response, Refusal> {
    authorize(&admin.token, request.headers())?;
    let report = admin.layer.shared.report();
    Ok(respond(StatusCode::OK, &report))
}

/// `GET /`: the live stats page.
pub(super) async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Only its own inline script and style, and fetches to this origin.
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    response
}

pub(super) async fn method_not_allowed() -> Refusal {
    Refusal {
        allow: "GET",
        ..Refusal::new(RefusalKind::MethodNotAllowed, "method not allowed; use GET")
    }
}
