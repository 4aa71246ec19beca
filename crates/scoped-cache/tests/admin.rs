//! The admin router: `POST /admin/purge` and `POST /admin/revoke` over the real layered app.

mod common;

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use common::*;
use http::{Request, StatusCode};
use jsonwebtoken::get_current_timestamp;
use scoped_cache::admin::{self, AdminToken};
use scoped_cache::{BuildError, ScopedCacheLayer, ScopedCacheLayerBuilder};
use serde_json::json;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
const ME: &str = "{ renderId me { sub name } }";
const FEED: &str = "query Feed { publicPosts renderId }";
const OTHER: &str = "query Other { publicPosts(limit: 2) renderId }";

/// The fixture app with the admin router mounted as documented: after `.layer(..)`.
fn admin_app() -> (Router, Counters) {
    admin_app_with(builder())
}

fn admin_app_with(builder: ScopedCacheLayerBuilder) -> (Router, Counters) {
    let layer: ScopedCacheLayer = builder.build().unwrap();
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
    // A memory-only layer's purges are fleet-wide: every clone shares its store.
    assert_eq!(reply.body, json!({ "purged": n, "shared": true }));
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
    // The crate's one refusal vocabulary: the same code as a token refusal.
    assert_eq!(reply.body["code"], "UNAUTHENTICATED");
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
        assert_eq!(reply.body["code"], "BAD_REQUEST", "{body}");
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

// `POST /admin/revoke`

fn revoke_request(authorization: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/admin/revoke").header("content-type", "application/json");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    req.body(body.into()).unwrap()
}

async fn revoke(app: &Router, body: serde_json::Value) -> Reply {
    send(app, revoke_request(Some(&bearer()), body.to_string())).await
}

#[track_caller]
fn assert_revoked_ok(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, json!({ "revoked": true, "shared": true }));
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

/// The status of `me` as `token`: 200 while it works, 401 once revoked.
async fn me_status(app: &Router, token: &str) -> StatusCode {
    let reply = send(app, query("/graphql", Some(token), ME)).await;
    if reply.status == StatusCode::UNAUTHORIZED {
        assert_eq!(reply.body["errors"][0]["message"], "token revoked");
    }
    reply.status
}

fn alice_at(iat: u64) -> String {
    token(json!({"sub": "alice", "name": "ALICE", "role": "member", "iat": iat}))
}

#[tokio::test]
async fn revoke_by_jti_refuses_that_token_only() {
    let (app, _) = admin_app();
    let exp = get_current_timestamp() + 3600;
    let session = token(json!({"sub": "alice", "jti": "session-1", "exp": exp}));
    let other = member("alice");
    assert_eq!(me_status(&app, &session).await, StatusCode::OK);

    assert_revoked_ok(&revoke(&app, json!({"jti": "session-1", "exp": exp})).await);

    assert_eq!(me_status(&app, &session).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &other).await, StatusCode::OK);
    // Revoking it again is no error.
    assert_revoked_ok(&revoke(&app, json!({"jti": "session-1", "exp": exp})).await);
}

#[tokio::test]
async fn revoke_by_sub_refuses_tokens_issued_before_and_purges_their_buckets() {
    let (app, counters) = admin_app();
    let t = get_current_timestamp();
    let old = alice_at(t - 1);
    fill(&app, Some(&old), ME).await;
    fill(&app, Some(&member("bob")), ME).await;

    assert_revoked_ok(&revoke(&app, json!({"sub": "alice", "issued_before": t})).await);

    assert_eq!(me_status(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(counters.executions(), 2);
    // Her next token works, and her `me` bucket was purged though its claims are equal.
    assert_eq!(x_cache(&app, Some(&alice_at(t)), ME).await, "MISS");
    assert_eq!(x_cache(&app, Some(&member("bob")), ME).await, "HIT");
}

#[tokio::test]
async fn revoke_by_sub_of_one_issuer() {
    let (app, _) = admin_app();
    let t = get_current_timestamp();
    let of_first = alice_at(t - 1);
    let of_second = token(json!({"sub": "alice", "iss": "second-idp", "iat": t - 1}));

    let body = json!({"sub": "alice", "issued_before": t, "iss": "second-idp"});
    assert_revoked_ok(&revoke(&app, body).await);

    assert_eq!(me_status(&app, &of_second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &of_first).await, StatusCode::OK);
}

#[tokio::test]
async fn revoke_by_iss_and_by_key() {
    let (app, _) = admin_app();
    let t = get_current_timestamp();
    let of_first = alice_at(t - 1);
    let of_second = token(json!({"sub": "bob", "iss": "second-idp", "iat": t - 1}));

    // The fixture's keys have no `kid`: a revocation of one key matches none of them.
    let body = json!({"iss": "forum-demo", "issued_before": t, "kid": "2024-rsa"});
    assert_revoked_ok(&revoke(&app, body).await);
    assert_eq!(me_status(&app, &of_first).await, StatusCode::OK);

    assert_revoked_ok(&revoke(&app, json!({"iss": "second-idp", "issued_before": t})).await);
    assert_eq!(me_status(&app, &of_second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &of_first).await, StatusCode::OK);
    let later = token(json!({"sub": "bob", "iss": "second-idp", "iat": t}));
    assert_eq!(me_status(&app, &later).await, StatusCode::OK);
}

#[tokio::test]
async fn revoke_with_a_bad_credential_is_401_and_revokes_nothing() {
    let (app, _) = admin_app();
    let t = get_current_timestamp();
    let old = alice_at(t - 1);
    let body = json!({"sub": "alice", "issued_before": t + 60}).to_string();
    let wrong = [
        None,
        Some("Bearer wrong-token-wrong-token-wrong-token".to_owned()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        // A valid user JWT of the app is no admin credential.
        Some(format!("Bearer {old}")),
    ];
    for authorization in &wrong {
        let reply = send(&app, revoke_request(authorization.as_deref(), body.clone())).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(
            reply.headers["www-authenticate"],
            r#"Bearer realm="scoped-cache-admin""#
        );
        assert!(reply.body["error"].is_string(), "{:?}", reply.body);
    }
    // Checked before the body, its content type and its size.
    let bad = Some("Bearer wrong-token-wrong-token-wrong");
    for body in ["not json", "{}", r#"{"jti":"","exp":-1}"#] {
        let reply = send(&app, revoke_request(bad, body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let req = Request::post("/admin/revoke")
        .header("content-type", "text/plain")
        .body(Body::from("x".repeat(100 * 1024)))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::UNAUTHORIZED);

    assert_eq!(me_status(&app, &old).await, StatusCode::OK);
    assert_eq!(me_status(&app, &member("alice")).await, StatusCode::OK);
}

#[tokio::test]
async fn malformed_revocations_are_400_naming_the_field_and_revoke_nothing() {
    let (app, _) = admin_app();
    let t = get_current_timestamp();
    let exp = t + 3600;
    let session = token(json!({"sub": "alice", "jti": "j1", "exp": exp, "iat": t - 1}));
    let cases = [
        ("not json".to_owned(), "not valid JSON"),
        (r#"["j1",1]"#.to_owned(), "must be a JSON object"),
        ("{}".to_owned(), "nothing to revoke"),
        (
            format!(r#"{{"jti":"j1","exp":{exp},"why":"x"}}"#),
            "unknown field `why`",
        ),
        // Wrong types, negative and fractional numbers.
        (
            r#"{"jti":"j1","exp":"soon"}"#.to_owned(),
            "`exp` must be a number",
        ),
        (
            r#"{"jti":"j1","exp":-1}"#.to_owned(),
            "`exp` must be a whole number",
        ),
        (
            format!(r#"{{"jti":"j1","exp":{exp}.5}}"#),
            "`exp` must be a whole number",
        ),
        (
            format!(r#"{{"jti":1,"exp":{exp}}}"#),
            "`jti` must be a string",
        ),
        (
            format!(r#"{{"jti":null,"exp":{exp}}}"#),
            "`jti` must be a string",
        ),
        (
            r#"{"sub":"alice","issued_before":"now"}"#.to_owned(),
            "`issued_before` must be a number",
        ),
        (
            format!(r#"{{"sub":"alice","issued_before":{t}.25}}"#),
            "`issued_before` must be a whole number",
        ),
        (
            r#"{"sub":"alice","issued_before":-1}"#.to_owned(),
            "`issued_before` must be a whole number",
        ),
        (
            format!(r#"{{"sub":"alice","issued_before":{t},"iss":7}}"#),
            "`iss` must be a string",
        ),
        // Missing parts.
        (r#"{"jti":"j1"}"#.to_owned(), "missing `exp`"),
        (r#"{"sub":"alice"}"#.to_owned(), "missing `issued_before`"),
        (
            r#"{"iss":"forum-demo"}"#.to_owned(),
            "missing `issued_before`",
        ),
        (format!(r#"{{"exp":{exp}}}"#), "missing `jti`"),
        // Two forms at once.
        (
            format!(r#"{{"jti":"j1","exp":{exp},"sub":"alice"}}"#),
            "`jti` and `sub` cannot be combined",
        ),
        (
            format!(r#"{{"jti":"j1","exp":{exp},"issued_before":{t}}}"#),
            "`jti` and `issued_before` cannot be combined",
        ),
        (
            format!(r#"{{"exp":{exp},"sub":"alice","issued_before":{t}}}"#),
            "`exp` and `issued_before` cannot be combined",
        ),
        (
            format!(r#"{{"sub":"alice","issued_before":{t},"kid":"k1"}}"#),
            "`sub` and `kid` cannot be combined",
        ),
        (
            format!(r#"{{"kid":"k1","issued_before":{t}}}"#),
            "`kid` needs `iss`",
        ),
        // Empty strings.
        (format!(r#"{{"jti":"","exp":{exp}}}"#), "`jti` is empty"),
        (
            format!(r#"{{"sub":"","issued_before":{t}}}"#),
            "`sub` is empty",
        ),
        (
            format!(r#"{{"sub":"alice","issued_before":{t},"iss":""}}"#),
            "`iss` is empty",
        ),
        (
            format!(r#"{{"iss":"forum-demo","issued_before":{t},"kid":""}}"#),
            "`kid` is empty",
        ),
    ];
    for (body, expected) in &cases {
        let reply = send(&app, revoke_request(Some(&bearer()), body.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.headers["cache-control"], "no-store");
        let message = reply.body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body}: {message:?} should contain {expected:?}"
        );
        // Nothing was revoked: neither the session nor alice.
        assert_eq!(me_status(&app, &session).await, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn revoke_is_json_only_bounded_and_post_only() {
    let (app, _) = admin_app();
    let t = get_current_timestamp();
    let old = alice_at(t - 1);
    let body = json!({"sub": "alice", "issued_before": t}).to_string();

    let req = Request::post("/admin/revoke")
        .header("authorization", bearer())
        .header("content-type", "text/plain")
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(
        send(&app, req).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    let over = format!("{body}{}", " ".repeat(64 * 1024));
    let reply = send(&app, revoke_request(Some(&bearer()), over)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.body["error"].is_string());

    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let req = Request::builder()
            .method(method)
            .uri("/admin/revoke")
            .header("authorization", bearer())
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let reply = send(&app, req).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.headers["allow"], "POST");
        assert!(reply.body["error"].is_string());
    }
    assert_eq!(me_status(&app, &old).await, StatusCode::OK);

    // Exactly 64 KiB is read, and revokes.
    let mut at_limit = body.clone();
    at_limit.push_str(&" ".repeat(64 * 1024 - at_limit.len()));
    assert_revoked_ok(&send(&app, revoke_request(Some(&bearer()), at_limit)).await);
    assert_eq!(me_status(&app, &old).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoke_into_a_full_store_is_503_and_records_nothing() {
    let (app, _) = admin_app_with(builder().max_revocations(1));
    let t = get_current_timestamp();
    let bob = token(json!({"sub": "bob", "iat": t - 1}));

    assert_revoked_ok(&revoke(&app, json!({"sub": "alice", "issued_before": t})).await);
    let reply = revoke(&app, json!({"sub": "bob", "issued_before": t})).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let message = reply.body["error"].as_str().unwrap();
    assert!(message.contains("full"), "{message}");
    assert_eq!(me_status(&app, &bob).await, StatusCode::OK);
}

/// Records every event and span field, at every level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Capture {
    fn push(&self, level: tracing::Level, fields: Fields) {
        self.0.lock().unwrap().push((level, fields.0));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        self.push(*span.metadata().level(), fields);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut fields = Fields(String::new());
        values.record(&mut fields);
        self.push(tracing::Level::TRACE, fields);
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.push(*event.metadata().level(), fields);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn revoke_logs_its_kind_and_never_the_names() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let (app, _) = admin_app();
    let t = get_current_timestamp();
    // Other tests of this binary run on other threads without a subscriber, and one of
    // them may have registered a callsite while this one was being set: it then caches
    // "never". Register every callsite once, then have their interest computed again.
    for body in [
        json!({"jti": "warm-up", "exp": t + 60}),
        json!({"sub": "warm-up", "issued_before": t}),
        json!({"iss": "warm-up", "issued_before": t}),
    ] {
        assert_revoked_ok(&revoke(&app, body).await);
    }
    tracing::callsite::rebuild_interest_cache();
    capture.0.lock().unwrap().clear();

    for body in [
        json!({"jti": "secret-jti-4a1f", "exp": t + 60}),
        json!({"sub": "secret-sub-9c2e", "issued_before": t, "iss": "secret-iss-77b0"}),
        json!({"iss": "secret-iss-3d5a", "issued_before": t, "kid": "secret-kid-e18c"}),
    ] {
        assert_revoked_ok(&revoke(&app, body).await);
    }
    // Refusals too.
    let reply = revoke(&app, json!({"sub": "secret-sub-0000", "issued_before": -1})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        !reply.body.to_string().contains("secret"),
        "{:?}",
        reply.body
    );

    let logs = capture.0.lock().unwrap().clone();
    let revokes: Vec<&String> = logs
        .iter()
        .filter(|(level, text)| *level == tracing::Level::INFO && text.contains("message=revoked"))
        .map(|(_, text)| text)
        .collect();
    assert_eq!(revokes.len(), 3, "{logs:#?}");
    for (kind, text) in ["jti", "sub", "iss"].iter().zip(&revokes) {
        assert!(text.contains(&format!("kind=\"{kind}\"")), "{text}");
    }
    for (level, text) in &logs {
        assert!(!text.contains("secret"), "{level}: {text}");
    }
}
