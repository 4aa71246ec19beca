//! Token verification: every bad token is a GraphQL-shaped 401 that never executes.

mod common;

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, get_current_timestamp};
use scoped_cache::{AuthError, AuthErrorKind};
use serde_json::json;
use tower::ServiceExt;

async fn assert_rejected(token: &str, kind: AuthErrorKind) {
    let (app, counters) = app();
    let response = app
        .clone()
        .oneshot(query("/graphql", Some(token), "{ me { sub } }"))
        .await
        .unwrap();
    assert_eq!(
        response
            .extensions()
            .get::<AuthError>()
            .map(AuthError::kind),
        Some(kind)
    );
    let reply = send(&app, query("/graphql", Some(token), "{ me { sub } }")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "UNAUTHENTICATED");
    assert!(
        reply.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\"")
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(
        counters.executions(),
        0,
        "a rejected request must not execute"
    );
}

#[tokio::test]
async fn expired_token_is_401() {
    let now = get_current_timestamp();
    assert_rejected(
        &token(json!({"sub": "u1", "exp": now - 120})),
        AuthErrorKind::Expired,
    )
    .await;
}

#[tokio::test]
async fn bad_signature_is_401() {
    let forged = token_with(
        Algorithm::HS256,
        b"another-secret-that-is-32-bytes!!",
        json!({"sub": "u1"}),
    );
    assert_rejected(&forged, AuthErrorKind::BadSignature).await;
}

#[tokio::test]
async fn alg_none_is_401() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = token(json!({"sub": "admin"}))
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    assert_rejected(
        &format!("{header}.{payload}."),
        AuthErrorKind::DisallowedAlgorithm,
    )
    .await;
}

#[tokio::test]
async fn disallowed_alg_is_401() {
    let hs512 = token_with(Algorithm::HS512, &[7u8; 64], json!({"sub": "u1"}));
    assert_rejected(&hs512, AuthErrorKind::DisallowedAlgorithm).await;
}

#[tokio::test]
async fn wrong_issuer_is_401() {
    assert_rejected(
        &token(json!({"sub": "u1", "iss": "someone-else"})),
        AuthErrorKind::WrongIssuer,
    )
    .await;
}

#[tokio::test]
async fn wrong_audience_is_401() {
    assert_rejected(
        &token(json!({"sub": "u1", "aud": ["other-api"]})),
        AuthErrorKind::WrongAudience,
    )
    .await;
}

#[tokio::test]
async fn string_exp_is_401() {
    assert_rejected(
        &token(json!({"sub": "u1", "exp": "99999999999"})),
        AuthErrorKind::InvalidClaims,
    )
    .await;
}

#[tokio::test]
async fn garbage_token_is_401() {
    assert_rejected("not-a-jwt", AuthErrorKind::Malformed).await;
}

#[tokio::test]
async fn anonymous_requests_are_served() {
    let (app, _) = app();
    let reply = send(&app, query("/graphql", None, "{ me { sub } }")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["me"], serde_json::Value::Null);
}

#[tokio::test]
async fn required_auth_route_refuses_anonymous() {
    let (app, counters) = app();
    let reply = send(&app, query("/members", None, "{ publicPosts }")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "UNAUTHENTICATED");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    assert_eq!(counters.executions(), 0);
    let reply = send(
        &app,
        query("/members", Some(&member("u1")), "{ publicPosts }"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let (app, counters) = app();
    let t = member("u1");
    let req = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {t}"))
        .header("authorization", format!("Bearer {t}"))
        .body(Body::from(r#"{"query":"{ publicPosts }"}"#))
        .unwrap();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn oversized_authorization_header_is_431() {
    let (app, counters) = app();
    let huge = "a".repeat(10 * 1024);
    let reply = send(&app, query("/graphql", Some(&huge), "{ publicPosts }")).await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn claims_are_visible_in_handlers_and_resolvers() {
    let (app, _) = app();
    let t = member("alice");
    let reply = send(&app, query("/graphql", Some(&t), "{ me { sub name } }")).await;
    assert_eq!(
        reply.body["data"]["me"],
        json!({"sub": "alice", "name": "ALICE"})
    );

    let req = Request::get("/whoami")
        .header("authorization", format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let anonymous = app
        .clone()
        .oneshot(Request::get("/whoami").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "the Claims extractor rejects anonymous requests"
    );
}

#[tokio::test]
async fn token_cookie_is_read_when_configured() {
    let (app, _) = app_with(builder().token_cookie("session").build().unwrap());
    let req = Request::post("/graphql")
        .header("content-type", "application/json")
        .header(
            "cookie",
            format!("theme=dark; session={}", member("cookie-user")),
        )
        .body(Body::from(r#"{"query":"{ me { sub } }"}"#))
        .unwrap();
    let reply = send(&app, req).await;
    assert_eq!(reply.body["data"]["me"]["sub"], "cookie-user");
    assert!(reply.headers["vary"].to_str().unwrap().contains("cookie"));
}
