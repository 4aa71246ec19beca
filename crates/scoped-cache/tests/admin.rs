//! The admin router: `POST /admin/purge` over the real layered app.

mod common;

use axum::Router;
use axum::body::Body;
use common::*;
use http::{Request, StatusCode};
use scoped_cache::BuildError;
use scoped_cache::admin::{self, AdminToken};
use serde_json::json;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
const ME: &str = "{ renderId me { sub name } }";
const FEED: &str = "query Feed { publicPosts renderId }";
const OTHER: &str = "query Other { publicPosts(limit: 2) renderId }";

/// The fixture app with the admin router mounted as documented: after `.layer(..)`.
fn admin_app() -> (Router, Counters) {
    let layer = builder().build().unwrap();
    let (app, counters) = app_with(layer.clone());
    let app = app.nest(
        "/admin",
        admin::router(&layer, AdminToken::new(ADMIN_TOKEN).unwrap()),
    );
    (app, counters)
}

fn purge_request(authorization: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/admin/purge").header("content-type", "application/json");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    req.body(body.into()).unwrap()
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

async fn purge(app: &Router, body: serde_json::Value) -> Reply {
    send(app, purge_request(Some(&bearer()), body.to_string())).await
}

/// Runs `query` as `token` twice; the second must be served from the cache.
async fn fill(app: &Router, token: Option<&str>, q: &str) {
    let first = send(app, query("/graphql", token, q)).await;
    let second = send(app, query("/graphql", token, q)).await;
    assert_eq!(
        (first.x_cache(), second.x_cache()),
        ("MISS", "HIT"),
        "{q} should be cached"
    );
}

async fn x_cache(app: &Router, token: Option<&str>, q: &str) -> String {
    send(app, query("/graphql", token, q))
        .await
        .x_cache()
        .to_owned()
}

fn assert_purged(reply: &Reply, n: u64) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, json!({ "purged": n }));
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

/// Fills three entries: the anonymous `Feed`, and alice's and bob's `me`.
async fn fill_three(app: &Router) {
    fill(app, None, FEED).await;
    fill(app, Some(&member("alice")), ME).await;
    fill(app, Some(&member("bob")), ME).await;
}

/// The three entries of [`fill_three`] are still served from the cache.
async fn assert_nothing_purged(app: &Router) {
    assert_eq!(x_cache(app, None, FEED).await, "HIT");
    assert_eq!(x_cache(app, Some(&member("alice")), ME).await, "HIT");
    assert_eq!(x_cache(app, Some(&member("bob")), ME).await, "HIT");
}

#[tokio::test]
async fn operation_purge_removes_only_that_operation() {
    let (app, counters) = admin_app();
    fill(&app, None, FEED).await;
    fill(&app, None, OTHER).await;

    assert_purged(&purge(&app, json!({"operation": "Feed"})).await, 1);

    assert_eq!(x_cache(&app, None, FEED).await, "MISS");
    assert_eq!(x_cache(&app, None, OTHER).await, "HIT");
    assert_eq!(counters.executions(), 3);
    // Already gone (and stored again by the MISS above): one more purge finds it once.
    assert_purged(&purge(&app, json!({"operation": "Feed"})).await, 1);
    assert_purged(&purge(&app, json!({"operation": "NoSuchOp"})).await, 0);
}

#[tokio::test]
async fn scope_purge_removes_alices_me_and_keeps_bobs() {
    let (app, _) = admin_app();
    fill_three(&app).await;

    assert_purged(&purge(&app, json!({"scope": {"sub": "alice"}})).await, 1);

    assert_eq!(x_cache(&app, Some(&member("alice")), ME).await, "MISS");
    assert_eq!(x_cache(&app, Some(&member("bob")), ME).await, "HIT");
    assert_eq!(x_cache(&app, None, FEED).await, "HIT");
}

#[tokio::test]
async fn scope_purge_with_several_claims_needs_all_to_match() {
    let (app, _) = admin_app();
    fill_three(&app).await;

    // bob is a member, not an admin: nothing matches both.
    let reply = purge(&app, json!({"scope": {"sub": "bob", "role": "admin"}})).await;
    assert_purged(&reply, 0);
    assert_nothing_purged(&app).await;

    // Paths in any spelling; values compared as JSON.
    let reply = purge(&app, json!({"scope": {"/sub": "bob", "role": "member"}})).await;
    assert_purged(&reply, 1);
    assert_eq!(x_cache(&app, Some(&member("bob")), ME).await, "MISS");
    assert_eq!(x_cache(&app, Some(&member("alice")), ME).await, "HIT");
}

#[tokio::test]
async fn scope_purge_by_nested_claim_path() {
    let (app, _) = admin_app();
    let acme = token(json!({"sub": "carol", "org": {"id": 7}}));
    let globex = token(json!({"sub": "dave", "org": {"id": 8}}));
    fill(&app, Some(&acme), "{ org }").await;
    fill(&app, Some(&globex), "{ org }").await;

    // `7` the string is not `7` the number.
    assert_purged(&purge(&app, json!({"scope": {"org.id": "7"}})).await, 0);
    assert_purged(&purge(&app, json!({"scope": {"org.id": 7}})).await, 1);

    assert_eq!(x_cache(&app, Some(&acme), "{ org }").await, "MISS");
    assert_eq!(x_cache(&app, Some(&globex), "{ org }").await, "HIT");
}

#[tokio::test]
async fn all_purge_empties_the_cache() {
    let (app, _) = admin_app();
    fill_three(&app).await;

    assert_purged(&purge(&app, json!({"all": true})).await, 3);

    assert_eq!(x_cache(&app, None, FEED).await, "MISS");
    assert_eq!(x_cache(&app, Some(&member("alice")), ME).await, "MISS");
    assert_eq!(x_cache(&app, Some(&member("bob")), ME).await, "MISS");
    assert_purged(&purge(&app, json!({"all": true})).await, 3);
    assert_purged(&purge(&app, json!({"all": true})).await, 0);
}

#[tokio::test]
async fn tags_and_types_purges_answer_with_a_count() {
    // The fixture schema has no entity-tags extension, so its entries carry no type or
    // entity tags: these purges are accepted and find nothing.
    let (app, _) = admin_app();
    fill_three(&app).await;

    assert_purged(&purge(&app, json!({"tags": ["Post:1", "User"]})).await, 0);
    assert_purged(&purge(&app, json!({"types": ["Post", "User"]})).await, 0);

    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn missing_credential_is_401_and_purges_nothing() {
    let (app, _) = admin_app();
    fill_three(&app).await;

    let reply = send(&app, purge_request(None, r#"{"all":true}"#)).await;

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.headers["www-authenticate"],
        r#"Bearer realm="scoped-cache-admin""#
    );
    assert!(reply.body["error"].as_str().unwrap().contains("missing"));
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn wrong_credential_is_401_and_purges_nothing() {
    let (app, _) = admin_app();
    fill_three(&app).await;

    let wrong = [
        "Bearer wrong-token-wrong-token-wrong-token".to_owned(),
        // A prefix, and the token plus one byte.
        format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
        format!("Bearer {ADMIN_TOKEN}x"),
        // The right secret under another scheme.
        format!("Basic {ADMIN_TOKEN}"),
        ADMIN_TOKEN.to_owned(),
        // A valid user JWT of the app is no admin credential.
        format!("Bearer {}", member("alice")),
        "Bearer".to_owned(),
    ];
    for authorization in wrong {
        let reply = send(&app, purge_request(Some(&authorization), r#"{"all":true}"#)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{authorization}");
        assert_eq!(
            reply.headers["www-authenticate"],
            r#"Bearer realm="scoped-cache-admin""#
        );
        assert!(reply.body["error"].is_string(), "{:?}", reply.body);
    }
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let (app, _) = admin_app();
    fill_three(&app).await;
    let req = Request::post("/admin/purge")
        .header("content-type", "application/json")
        .header("authorization", bearer())
        .header("authorization", "Bearer wrong-token-wrong-token")
        .body(Body::from(r#"{"all":true}"#))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::UNAUTHORIZED);
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let (app, _) = admin_app();
    let reply = send(
        &app,
        purge_request(Some(&format!("bearer {ADMIN_TOKEN}")), r#"{"all":true}"#),
    )
    .await;
    assert_purged(&reply, 0);
}

#[tokio::test]
async fn credential_is_checked_before_the_body() {
    let (app, _) = admin_app();
    fill_three(&app).await;
    let wrong = Some("Bearer wrong-token-wrong-token-wrong");
    for body in ["not json", r#"{"all":false}"#, r#"{"tags":[]}"#] {
        let reply = send(&app, purge_request(wrong, body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // Nor is the content type or the size looked at first.
    let req = Request::post("/admin/purge")
        .header("content-type", "text/plain")
        .body(Body::from("x".repeat(100 * 1024)))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::UNAUTHORIZED);
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn malformed_bodies_are_400_and_purge_nothing() {
    let (app, _) = admin_app();
    fill_three(&app).await;

    let cases = [
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        (r#"{"all":true"#, "not valid JSON"),
        (r#"["all"]"#, "must be a JSON object"),
        (r#"[["Post"]]"#, "must be a JSON object"),
        (r#"{"all":true,"dryRun":true}"#, "unknown field `dryRun`"),
        ("{}", "no selector"),
        (r#"{"types":["Post"],"all":true}"#, "exactly one selector"),
        (
            r#"{"operation":"Feed","scope":{"sub":"alice"}}"#,
            "exactly one selector",
        ),
        (r#"{"tags":[]}"#, "`tags` is empty"),
        (r#"{"types":[]}"#, "`types` is empty"),
        (r#"{"tags":[42]}"#, "expected a string"),
        (r#"{"tags":null}"#, "invalid type: null"),
        (r#"{"types":["Post:1"]}"#, "go in `tags`"),
        (r#"{"operation":""}"#, "not a GraphQL operation name"),
        (r#"{"all":false}"#, "`all` must be true"),
        (r#"{"scope":{}}"#, "`scope` names no claim"),
        (r#"{"scope":{"org..id":"x"}}"#, "invalid claim path"),
        (r#"{"scope":"alice"}"#, "claim paths"),
    ];
    for (body, expected) in cases {
        let reply = send(&app, purge_request(Some(&bearer()), body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let message = reply.body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body}: {message:?} should contain {expected:?}"
        );
    }
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let (app, _) = admin_app();
    fill_three(&app).await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = Request::post("/admin/purge").header("authorization", bearer());
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        let reply = send(&app, req.body(Body::from(r#"{"all":true}"#)).unwrap()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert!(reply.body["error"].is_string());
    }
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let (app, _) = admin_app();
    fill_three(&app).await;

    // Exactly 64 KiB is read.
    let mut at_limit = r#"{"operation":"Nope"}"#.to_owned();
    at_limit.push_str(&" ".repeat(64 * 1024 - at_limit.len()));
    assert_purged(
        &send(&app, purge_request(Some(&bearer()), at_limit.clone())).await,
        0,
    );

    // One byte more is refused, though no length is declared.
    let over = format!("{at_limit} ");
    let reply = send(&app, purge_request(Some(&bearer()), over)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.body["error"].as_str().unwrap().contains("65536"));

    // A declared length over the limit is refused before any byte is read.
    let mut declared = purge_request(Some(&bearer()), r#"{"all":true}"#);
    declared
        .headers_mut()
        .insert("content-length", (64 * 1024 + 1).into());
    let reply = send(&app, declared).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.body["error"].is_string());

    // A large valid purge is refused, not run.
    let big_all = format!(r#"{{"all":true}}{}"#, " ".repeat(64 * 1024));
    let reply = send(&app, purge_request(Some(&bearer()), big_all)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn other_methods_are_405() {
    let (app, _) = admin_app();
    fill_three(&app).await;
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        for authorization in [None, Some(bearer())] {
            let mut req = Request::builder()
                .method(method)
                .uri("/admin/purge")
                .header("content-type", "application/json");
            if let Some(authorization) = &authorization {
                req = req.header("authorization", authorization);
            }
            let reply = send(&app, req.body(Body::from(r#"{"all":true}"#)).unwrap()).await;
            assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(reply.headers["allow"], "POST");
            assert!(reply.body["error"].is_string());
        }
    }
    assert_nothing_purged(&app).await;
}

#[tokio::test]
async fn admin_answers_are_not_cacheable() {
    let (app, _) = admin_app();
    let reply = purge(&app, json!({"all": true})).await;
    assert_eq!(reply.headers["cache-control"], "no-store");
    let reply = send(&app, purge_request(None, "{}")).await;
    assert_eq!(reply.headers["cache-control"], "no-store");
}

#[test]
fn short_admin_tokens_are_refused() {
    let err = AdminToken::new("short").unwrap_err();
    assert!(matches!(
        err,
        BuildError::WeakAdminToken { len: 5, min: 16 }
    ));
    let message = err.to_string();
    assert!(message.contains("admin token"), "{message}");
    assert!(message.contains("16"), "{message}");
    assert!(!message.contains("short"), "{message}");
    assert!(AdminToken::new("0123456789abcdef").is_ok());
}

#[test]
fn admin_token_debug_hides_the_secret() {
    let token = AdminToken::new(ADMIN_TOKEN).unwrap();
    let debug = format!("{token:?} {token:#?}");
    assert!(!debug.contains(ADMIN_TOKEN), "{debug}");
    assert!(!debug.contains("0123456789"), "{debug}");
    assert!(debug.contains("AdminToken"), "{debug}");
}
