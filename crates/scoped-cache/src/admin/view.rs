//! The operators' read-only views: `GET /stats` (JSON, behind the admin credential) and
//! `GET /` (one self-contained HTML page that asks for the credential and charts the
//! stats; the page itself holds no data).

use std::sync::OnceLock;

use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, HeaderValue};
use sha2::{Digest, Sha256};

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
    headers.insert(CONTENT_SECURITY_POLICY, policy().clone());
    response
}

/// Only the page's own script and style (by their SHA-256: no other inline script runs,
/// whatever a response might smuggle into the page), and fetches to this origin.
fn policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hash = |open: &str, close: &str| {
            let inline = PAGE
                .split_once(open)
                .and_then(|(_, rest)| rest.split_once(close))
                .map_or("", |(inline, _)| inline);
            STANDARD.encode(Sha256::digest(inline.as_bytes()))
        };
        let script = hash("<script>", "</script>");
        let style = hash("<style>", "</style>");
        HeaderValue::try_from(format!(
            "default-src 'none'; script-src 'sha256-{script}'; style-src 'sha256-{style}'; \
             connect-src 'self'; img-src data:; frame-ancestors 'none'"
        ))
        // Base64 is visible ASCII: this cannot fail; if it did, nothing inline runs.
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
    })
}

pub(super) async fn method_not_allowed() -> Refusal {
    Refusal {
        allow: "GET",
        ..Refusal::new(RefusalKind::MethodNotAllowed, "method not allowed; use GET")
    }
}
