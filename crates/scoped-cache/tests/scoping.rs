//! Buckets: shared by equal claim values, never across different ones.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

const ME: &str = "{ renderId me { sub name } }";

#[tokio::test]
async fn refreshed_token_with_same_claims_hits() {
    let (app, counters) = app();
    let first = send(&app, query("/graphql", Some(&member("alice")), ME)).await;
    let refreshed = member("alice");
    assert_ne!(refreshed, member("alice"), "tokens differ in iat/exp/jti");
    let second = send(&app, query("/graphql", Some(&refreshed), ME)).await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(first.body, second.body);
    assert_eq!(counters.executions(), 1, "a HIT must not execute");
}

#[tokio::test]
async fn different_sub_misses_on_me_and_sees_its_own_data() {
    let (app, _) = app();
    let alice = send(&app, query("/graphql", Some(&member("alice")), ME)).await;
    let bob = send(&app, query("/graphql", Some(&member("bob")), ME)).await;
    assert_eq!(bob.x_cache(), "MISS");
    assert_eq!(alice.body["data"]["me"]["sub"], "alice");
    assert_eq!(bob.body["data"]["me"]["sub"], "bob");
    let alice_again = send(&app, query("/graphql", Some(&member("alice")), ME)).await;
    assert_eq!(alice_again.x_cache(), "HIT");
    assert_eq!(alice_again.body["data"]["me"]["sub"], "alice");
}

#[tokio::test]
async fn members_share_member_posts_bucket() {
    let (app, counters) = app();
    let q = "{ renderId memberPosts }";
    let alice = send(&app, query("/graphql", Some(&member("alice")), q)).await;
    let bob = send(&app, query("/graphql", Some(&member("bob")), q)).await;
    assert_eq!((alice.x_cache(), bob.x_cache()), ("MISS", "HIT"));
    assert_eq!(alice.body["data"]["renderId"], bob.body["data"]["renderId"]);
    assert_eq!(counters.executions(), 1);
}

#[tokio::test]
async fn guest_never_receives_member_data() {
    let (app, _) = app();
    let q = "{ memberPosts }";
    let member_reply = send(&app, query("/graphql", Some(&member("alice")), q)).await;
    assert!(member_reply.body["data"]["memberPosts"].is_array());

    let guest = token(json!({"sub": "gina", "name": "GINA", "role": "guest"}));
    for t in [Some(guest.as_str()), None] {
        for _ in 0..2 {
            let reply = send(&app, query("/graphql", t, q)).await;
            assert_eq!(reply.x_cache(), "MISS");
            assert_eq!(reply.code(), "FORBIDDEN");
            assert!(!reply.body.to_string().contains("roadmap"));
        }
    }
    let no_role = token(json!({"sub": "nora"}));
    let reply = send(&app, query("/graphql", Some(&no_role), q)).await;
    assert_eq!(reply.code(), "FORBIDDEN");
}

#[tokio::test]
async fn anonymous_and_authenticated_never_share_a_bucket() {
    let (app, _) = app();
    let q = "{ renderId publicPosts }";
    let anonymous = send(&app, query("/graphql", None, q)).await;
    let member_reply = send(&app, query("/graphql", Some(&member("alice")), q)).await;
    assert_eq!(
        (anonymous.x_cache(), member_reply.x_cache()),
        ("MISS", "MISS")
    );
    let other_member = send(&app, query("/graphql", Some(&member("bob")), q)).await;
    assert_eq!(
        other_member.x_cache(),
        "HIT",
        "public data is shared between authenticated callers"
    );
}

#[tokio::test]
async fn union_of_root_field_scopes_separates_users() {
    let (app, _) = app();
    let q = "{ memberPosts me { sub } }";
    let alice = send(&app, query("/graphql", Some(&member("alice")), q)).await;
    let bob = send(&app, query("/graphql", Some(&member("bob")), q)).await;
    assert_eq!(
        bob.x_cache(),
        "MISS",
        "me's `sub` scope joins memberPosts' `role` scope"
    );
    assert_eq!(alice.body["data"]["me"]["sub"], "alice");
    assert_eq!(bob.body["data"]["me"]["sub"], "bob");
}

#[tokio::test]
async fn fragments_on_the_root_are_scoped_like_direct_fields() {
    let (app, _) = app();
    let q = "query { ...Mine } fragment Mine on Query { me { sub } }";
    send(&app, query("/graphql", Some(&member("alice")), q)).await;
    let bob = send(&app, query("/graphql", Some(&member("bob")), q)).await;
    assert_eq!(bob.x_cache(), "MISS");
    assert_eq!(bob.body["data"]["me"]["sub"], "bob");
}

#[tokio::test]
async fn a_claim_read_outside_the_scope_is_never_stored() {
    let (app, counters) = app();
    let alice = send(&app, query("/graphql", Some(&member("alice")), "{ leaky }")).await;
    let bob = send(&app, query("/graphql", Some(&member("bob")), "{ leaky }")).await;
    assert_eq!((alice.x_cache(), bob.x_cache()), ("MISS", "MISS"));
    assert_eq!(
        bob.body["data"]["leaky"], "bob",
        "bob must never see alice's value"
    );
    assert_eq!(counters.executions(), 2);
}

#[tokio::test]
async fn nested_claim_paths_choose_buckets() {
    let (app, _) = app();
    let t = |sub: &str, org: &str| token(json!({"sub": sub, "org": {"id": org, "name": sub}}));
    let a = send(&app, query("/graphql", Some(&t("a", "o1")), "{ org }")).await;
    let b = send(&app, query("/graphql", Some(&t("b", "o1")), "{ org }")).await;
    let c = send(&app, query("/graphql", Some(&t("c", "o2")), "{ org }")).await;
    assert_eq!(
        (a.x_cache(), b.x_cache(), c.x_cache()),
        ("MISS", "HIT", "MISS")
    );
    assert_eq!(c.body["data"]["org"], "o2");
}

#[tokio::test]
async fn scoped_responses_are_private_for_downstream_caches() {
    let (app, _) = app();
    for _ in 0..2 {
        let reply = send(&app, query("/graphql", Some(&member("alice")), ME)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("private")
        );
        assert!(
            reply.headers["vary"]
                .to_str()
                .unwrap()
                .contains("authorization")
        );
    }
}

#[tokio::test]
async fn private_response_without_scope_is_not_stored() {
    let (app, counters) = app();
    for _ in 0..2 {
        let reply = send(&app, query("/graphql", None, "{ privateUnscoped }")).await;
        assert_eq!(reply.x_cache(), "MISS");
    }
    assert_eq!(counters.executions(), 2);
}

#[tokio::test]
async fn same_sub_from_another_issuer_gets_its_own_bucket() {
    let (app, _) = app();
    let first = token(json!({"sub": "42", "name": "FIRST", "role": "member"}));
    let second =
        token(json!({"sub": "42", "name": "SECOND", "role": "member", "iss": "second-idp"}));
    send(&app, query("/graphql", Some(&first), "{ me { name } }")).await;
    let reply = send(&app, query("/graphql", Some(&second), "{ me { name } }")).await;
    assert_eq!(reply.x_cache(), "MISS", "{:?} {}", reply.status, reply.body);
    assert_eq!(reply.body["data"]["me"]["name"], "SECOND");
}

fn with_scheme(value: &str) -> http::Request<axum::body::Body> {
    http::Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", value)
        .body(axum::body::Body::from(r#"{"query":"{ me { sub } }"}"#))
        .unwrap()
}

#[tokio::test]
async fn other_authorization_schemes_are_refused() {
    let (app, counters) = app();
    let jwt = member("alice");
    for value in ["Basic dXNlcjpwYXNz".to_owned(), format!("Token {jwt}"), jwt] {
        let reply = send(&app, with_scheme(&value)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "UNAUTHENTICATED");
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_request\""),
            "{challenge}"
        );
    }
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn other_authorization_schemes_are_anonymous_when_ignored() {
    let (app, _) = app_with(builder().ignore_other_schemes(true).build().unwrap());
    let reply = send(&app, with_scheme("Basic dXNlcjpwYXNz")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["me"], serde_json::Value::Null);
}

#[tokio::test]
async fn an_answer_not_stored_is_private_to_an_authenticated_caller() {
    let (app, _) = app();
    // `leaky` reads `sub`, which no scope covers: executed, served, never stored.
    let reply = send(&app, query("/graphql", Some(&member("alice")), "{ leaky }")).await;
    assert_eq!(
        (reply.x_cache(), reply.body["data"]["leaky"].as_str()),
        ("MISS", Some("alice"))
    );
    let control = reply
        .headers
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        control.contains("private"),
        "a shared cache in front may not store it: {control:?}"
    );
}
