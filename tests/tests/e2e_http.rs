//! The forum demo end to end over real TCP: the contract a new user checks with curl.

// The demo's JWKS helpers are exercised in `jwks.rs`.
#[allow(dead_code)]
#[path = "../../examples/forum/app.rs"]
mod app;
#[path = "../../examples/forum/schema.rs"]
mod schema;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::*;

const SECRET: &[u8] = b"end-to-end-test-secret-of-32-bytes";
const DAY: Duration = Duration::from_secs(86_400);

async fn forum() -> (SocketAddr, Arc<schema::Forum>) {
    let forum = schema::Forum::seeded();
    let app = app::router(
        Arc::clone(&forum),
        app::layer(app::hmac_verifier(SECRET)).unwrap(),
    );
    (serve(app).await, forum)
}

fn token(sub: &str, role: &str) -> String {
    app::mint(SECRET, sub, &sub.to_uppercase(), role, DAY)
}

const WELCOME_QUERY: &str = "{ renderId me { id name role } memberPosts { id title } }";

#[tokio::test]
async fn printed_curl_misses_then_hits_with_the_same_render_id() {
    let (addr, forum) = forum().await;
    let alice = token("alice", "member");
    let first = post(
        addr,
        "/graphql",
        Some(&alice),
        json!({"query": WELCOME_QUERY}),
    )
    .await;
    let second = post(
        addr,
        "/graphql",
        Some(&alice),
        json!({"query": WELCOME_QUERY}),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(
        first.body["data"]["renderId"],
        second.body["data"]["renderId"]
    );
    assert_eq!(
        first.body["data"]["me"],
        json!({"id": "alice", "name": "ALICE", "role": "member"})
    );
    assert_eq!(forum.executions.load(Ordering::SeqCst), 1);
    assert!(
        second.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );
}

#[tokio::test]
async fn refreshed_token_hits_and_another_user_sees_their_own_me() {
    let (addr, _) = forum().await;
    let first = post(
        addr,
        "/graphql",
        Some(&token("alice", "member")),
        json!({"query": WELCOME_QUERY}),
    )
    .await;
    let refreshed = app::mint(
        SECRET,
        "alice",
        "ALICE",
        "member",
        DAY + Duration::from_secs(90),
    );
    let again = post(
        addr,
        "/graphql",
        Some(&refreshed),
        json!({"query": WELCOME_QUERY}),
    )
    .await;
    assert_eq!(again.x_cache(), "HIT");
    assert_eq!(again.body, first.body);

    let bob = post(
        addr,
        "/graphql",
        Some(&token("bob", "member")),
        json!({"query": WELCOME_QUERY}),
    )
    .await;
    assert_eq!(bob.x_cache(), "MISS");
    assert_eq!(bob.body["data"]["me"]["id"], "bob");
    assert_ne!(bob.body["data"]["renderId"], first.body["data"]["renderId"]);
}

#[tokio::test]
async fn members_share_member_posts_and_guests_get_forbidden() {
    let (addr, _) = forum().await;
    let q = json!({"query": "{ renderId memberPosts { title } }"});
    let alice = post(addr, "/graphql", Some(&token("alice", "member")), q.clone()).await;
    let bob = post(addr, "/graphql", Some(&token("bob", "member")), q.clone()).await;
    assert_eq!((alice.x_cache(), bob.x_cache()), ("MISS", "HIT"));
    let admin = post(addr, "/graphql", Some(&token("ada", "admin")), q.clone()).await;
    assert_eq!(admin.x_cache(), "MISS", "admins are another role bucket");

    for t in [Some(token("gina", "guest")), None] {
        let reply = post(addr, "/graphql", t.as_deref(), q.clone()).await;
        assert_eq!(reply.code(), "FORBIDDEN");
        assert!(!reply.body.to_string().contains("roadmap"));
    }
}

#[tokio::test]
async fn get_shares_the_post_entry_and_mutations_over_get_are_405() {
    let (addr, _) = forum().await;
    let q = "query Feed($n: Int) { publicPosts(limit: $n) { id title } renderId }";
    let posted = post(
        addr,
        "/graphql",
        None,
        json!({"query": q, "variables": {"n": 3}, "operationName": "Feed"}),
    )
    .await;
    let got = get(
        addr,
        "/graphql",
        None,
        &[
            ("query", q),
            ("variables", r#"{"n":3}"#),
            ("operationName", "Feed"),
        ],
    )
    .await;
    assert_eq!((posted.x_cache(), got.x_cache()), ("MISS", "HIT"));
    assert_eq!(
        posted.body["data"]["publicPosts"].as_array().unwrap().len(),
        3
    );

    let m = "mutation { createPost(title: \"t\", body: \"b\") { id } }";
    let refused = get(
        addr,
        "/graphql",
        Some(&token("alice", "member")),
        &[("query", m)],
    )
    .await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn create_post_is_for_members_and_bypasses_the_cache() {
    let (addr, _) = forum().await;
    let m = json!({"query": "mutation { createPost(title: \"Hello\", body: \"World\") { id title author } }"});
    let created = post(addr, "/graphql", Some(&token("alice", "member")), m.clone()).await;
    assert_eq!(created.x_cache(), "BYPASS");
    assert_eq!(created.body["data"]["createPost"]["author"], "alice");
    let guest = post(addr, "/graphql", Some(&token("gina", "guest")), m).await;
    assert_eq!(guest.code(), "FORBIDDEN");
}

#[tokio::test]
async fn nocache_route_verifies_but_never_caches() {
    let (addr, forum) = forum().await;
    let q = json!({"query": "{ renderId }"});
    let a = post(
        addr,
        "/graphql/nocache",
        Some(&token("alice", "member")),
        q.clone(),
    )
    .await;
    let b = post(
        addr,
        "/graphql/nocache",
        Some(&token("alice", "member")),
        q.clone(),
    )
    .await;
    assert_eq!((a.x_cache(), b.x_cache()), ("BYPASS", "BYPASS"));
    assert_ne!(a.body["data"]["renderId"], b.body["data"]["renderId"]);
    assert_eq!(forum.executions.load(Ordering::SeqCst), 2);
    let bad = post(addr, "/graphql/nocache", Some("x.y.z"), q).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_tokens_are_graphql_shaped_401s_over_the_wire() {
    let (addr, forum) = forum().await;
    let wrong_secret = app::mint(
        b"some-other-secret-that-is-32-bytes",
        "alice",
        "A",
        "member",
        DAY,
    );
    let expired = app::mint(SECRET, "alice", "A", "member", Duration::ZERO);
    for bad in [wrong_secret.as_str(), "not-a-token"] {
        let reply = post(
            addr,
            "/graphql",
            Some(bad),
            json!({"query": "{ me { id } }"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "UNAUTHENTICATED");
        assert!(reply.headers.contains_key("www-authenticate"));
    }
    // `exp` = now is still inside the demo's 30 s leeway: accepted, as configured.
    let reply = post(
        addr,
        "/graphql",
        Some(&expired),
        json!({"query": "{ me { id } }"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(forum.executions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn health_passes_through_without_verification() {
    let (addr, _) = forum().await;
    let reply = request(addr, Method::GET, "/health", Some("garbage"), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "ok");
}

#[tokio::test]
async fn anonymous_me_is_null_and_public_posts_are_seeded() {
    let (addr, _) = forum().await;
    let reply = post(
        addr,
        "/graphql",
        None,
        json!({"query": "{ me { id } publicPosts { id } }"}),
    )
    .await;
    assert_eq!(reply.body["data"]["me"], serde_json::Value::Null);
    assert!(reply.body["data"]["publicPosts"].as_array().unwrap().len() >= 5);
}

#[tokio::test]
async fn accept_spellings_of_one_media_type_share_one_entry() {
    let (addr, forum) = forum().await;
    let body = bytes::Bytes::from(json!({"query": "{ publicPosts { id } renderId }"}).to_string());
    let ask = |accept: Option<&'static str>| {
        let body = body.clone();
        async move {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(accept) = accept {
                headers.push(("accept", accept));
            }
            exchange(addr, Method::POST, "/graphql", &headers, body).await
        }
    };
    let (status, first, _) = ask(Some("application/json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["x-cache"], "MISS");
    for spelling in [
        None,
        Some("*/*"),
        Some("application/json;q=0.9"),
        Some("application/*"),
    ] {
        let (_, headers, _) = ask(spelling).await;
        assert_eq!(headers["x-cache"], "HIT", "{spelling:?}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    // The other media type is another representation: an entry of its own.
    let (_, other, _) = ask(Some("application/graphql-response+json")).await;
    assert_eq!(other["x-cache"], "MISS");
    assert!(
        other["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/graphql-response+json")
    );
    assert_eq!(forum.executions.load(Ordering::SeqCst), 2);
}
