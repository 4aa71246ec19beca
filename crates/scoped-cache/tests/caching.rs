//! What is cached, under which key, and for how long.

mod common;

use std::time::Duration;

use axum::body::Body;
use common::*;
use http::{Request, StatusCode};
use serde_json::json;

#[tokio::test]
async fn hit_does_not_execute_and_returns_the_stored_execution() {
    let (app, counters) = app();
    let q = "{ renderId publicPosts }";
    let first = send(&app, query("/graphql", None, q)).await;
    let second = send(&app, query("/graphql", None, q)).await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(
        first.body["data"]["renderId"],
        second.body["data"]["renderId"]
    );
    assert_eq!(counters.executions(), 1);
    assert!(second.headers.contains_key("age"));
}

#[tokio::test]
async fn formatting_and_comments_do_not_change_the_key() {
    let (app, _) = app();
    send(
        &app,
        query(
            "/graphql",
            None,
            "query Feed { publicPosts(limit: 2) renderId }",
        ),
    )
    .await;
    let reformatted = "# the feed\nquery   Feed {\n  publicPosts( limit :2 ),\n  renderId\n}\n";
    let reply = send(
        &app,
        post(
            "/graphql",
            None,
            json!({"query": reformatted, "operationName": "Feed"}),
        ),
    )
    .await;
    // The operation name differs (absent vs "Feed"), so this is a different key...
    assert_eq!(reply.x_cache(), "MISS");
    let reply = send(&app, query("/graphql", None, reformatted)).await;
    // ...but without it, only formatting differs.
    assert_eq!(reply.x_cache(), "HIT");
}

#[tokio::test]
async fn variable_order_does_not_change_the_key() {
    let (app, _) = app();
    let q = "query E($a: Int, $b: String) { echo(a: $a, b: $b) renderId }";
    let first = send(
        &app,
        post(
            "/graphql",
            None,
            json!({"query": q, "variables": {"a": 1, "b": "x"}}),
        ),
    )
    .await;
    let body = format!(
        r#"{{"variables":{{"b":"x","a":1}},"query":{}}}"#,
        serde_json::to_string(q).unwrap()
    );
    let req = Request::post("/graphql")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let second = send(&app, req).await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    let other = send(
        &app,
        post(
            "/graphql",
            None,
            json!({"query": q, "variables": {"a": 2, "b": "x"}}),
        ),
    )
    .await;
    assert_eq!(other.x_cache(), "MISS");
    assert_eq!(other.body["data"]["echo"], "Some(2)/Some(\"x\")");
}

#[tokio::test]
async fn get_and_post_share_a_key() {
    let (app, counters) = app();
    let q = "query P($n: Int) { publicPosts(limit: $n) renderId }";
    let posted = send(
        &app,
        post("/graphql", None, json!({"query": q, "variables": {"n": 2}})),
    )
    .await;
    let got = send(
        &app,
        get(
            "/graphql",
            None,
            &[("query", q), ("variables", r#"{"n":2}"#)],
        ),
    )
    .await;
    assert_eq!((posted.x_cache(), got.x_cache()), ("MISS", "HIT"));
    assert_eq!(posted.body, got.body);
    assert_eq!(counters.executions(), 1);
}

#[tokio::test]
async fn mutation_bypasses() {
    let (app, counters) = app();
    for _ in 0..2 {
        let reply = send(
            &app,
            query("/graphql", Some(&member("u1")), "mutation { touch }"),
        )
        .await;
        assert_eq!(reply.x_cache(), "BYPASS");
        assert_eq!(reply.body["data"]["touch"], true);
    }
    assert_eq!(counters.executions(), 2);
}

#[tokio::test]
async fn mutation_over_get_is_405_before_execution() {
    let (app, counters) = app();
    let reply = send(
        &app,
        get("/graphql", None, &[("query", "mutation { touch }")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "METHOD_NOT_ALLOWED");
    assert_eq!(reply.headers["allow"], "POST");
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn error_responses_are_not_cached() {
    let (app, counters) = app();
    for _ in 0..2 {
        let reply = send(&app, query("/graphql", None, "{ boom }")).await;
        assert_eq!(reply.x_cache(), "MISS");
        assert!(reply.body["errors"].is_array());
    }
    let invalid = send(&app, query("/graphql", None, "{ noSuchField }")).await;
    assert_eq!(invalid.x_cache(), "MISS");
    assert_eq!(counters.executions(), 3);
}

#[tokio::test]
async fn syntax_errors_and_batches_pass_through_uncached() {
    let (app, counters) = app();
    let reply = send(&app, query("/graphql", None, "{ publicPosts ")).await;
    assert_eq!(reply.x_cache(), "BYPASS");
    let batch = json!([{"query": "{ publicPosts }"}, {"query": "{ renderId }"}]);
    for _ in 0..2 {
        let reply = send(&app, post("/graphql", None, batch.clone())).await;
        assert_eq!(
            reply.x_cache(),
            "BYPASS",
            "a batch is the server's to answer, never cached whole"
        );
    }
    assert_eq!(
        counters.executions(),
        1,
        "only the syntax error reached the schema"
    );
}

#[tokio::test]
async fn no_cache_responses_are_not_stored() {
    let (app, counters) = app();
    send(&app, query("/graphql", None, "{ neverCached }")).await;
    send(&app, query("/graphql", None, "{ neverCached }")).await;
    assert_eq!(counters.executions(), 2);
}

#[tokio::test]
async fn bypass_rule_by_operation_name() {
    let (app, counters) = app();
    for _ in 0..2 {
        let reply = send(
            &app,
            post(
                "/graphql",
                None,
                json!({"query": "query Debug { renderId }", "operationName": "Debug"}),
            ),
        )
        .await;
        assert_eq!(reply.x_cache(), "BYPASS");
    }
    assert_eq!(counters.executions(), 2);
}

#[tokio::test]
async fn accept_header_separates_keys() {
    let (app, _) = app();
    let with_accept = |accept: &str| {
        Request::post("/graphql")
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(Body::from(r#"{"query":"{ renderId }"}"#))
            .unwrap()
    };
    let json = send(&app, with_accept("application/json")).await;
    let gql = send(&app, with_accept("application/graphql-response+json")).await;
    assert_eq!((json.x_cache(), gql.x_cache()), ("MISS", "MISS"));
    assert_eq!(
        send(&app, with_accept("application/json")).await.x_cache(),
        "HIT"
    );
}

#[tokio::test]
async fn persisted_query_hash_alone_hits_once_the_document_was_seen() {
    let (app, counters) = app();
    let q = "{ publicPosts renderId }";
    let hash = sha256_hex(q);
    let ext = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    let full = send(
        &app,
        post("/graphql", None, json!({"query": q, "extensions": ext})),
    )
    .await;
    let hash_only = send(&app, post("/graphql", None, json!({"extensions": ext}))).await;
    assert_eq!((full.x_cache(), hash_only.x_cache()), ("MISS", "HIT"));
    assert_eq!(full.body, hash_only.body);
    assert_eq!(counters.executions(), 1);
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn oversized_request_body_is_413() {
    let (app, counters) = app_with(builder().max_request_bytes(64).build().unwrap());
    let reply = send(
        &app,
        query(
            "/graphql",
            None,
            &format!("{{ publicPosts }} # {}", "x".repeat(100)),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn oversized_response_is_served_but_not_stored() {
    let (app, counters) = app_with(builder().max_entry_bytes(16).build().unwrap());
    for _ in 0..2 {
        let reply = send(&app, query("/graphql", None, "{ publicPosts }")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body["data"]["publicPosts"][0], "welcome");
    }
    assert_eq!(counters.executions(), 2);
}

#[tokio::test]
async fn per_route_toggle() {
    let (app, counters) = app();
    let q = "{ renderId publicPosts }";
    for _ in 0..2 {
        let reply = send(&app, query("/graphql/nocache", Some(&member("u1")), q)).await;
        assert_eq!(reply.x_cache(), "BYPASS");
    }
    assert_eq!(counters.executions(), 2);
    let bad = send(&app, query("/graphql/nocache", Some("bad.token.here"), q)).await;
    assert_eq!(
        bad.status,
        StatusCode::UNAUTHORIZED,
        "verify-only routes still verify"
    );
    send(&app, query("/graphql", None, q)).await;
    assert_eq!(
        send(&app, query("/graphql", None, q)).await.x_cache(),
        "HIT"
    );
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_rule_max_age() {
    let (app, counters) = app();
    let q = "{ renderId }";
    send(&app, query("/graphql", None, q)).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    let fresh = send(&app, query("/graphql", None, q)).await;
    assert_eq!(fresh.x_cache(), "HIT");
    assert_eq!(fresh.headers["age"], "59");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        send(&app, query("/graphql", None, q)).await.x_cache(),
        "MISS"
    );
    assert_eq!(counters.executions(), 2);
}

#[tokio::test(start_paused = true)]
async fn async_graphql_max_age_caps_the_ttl() {
    let (app, _) = app();
    let q = "{ shortLived }";
    send(&app, query("/graphql", None, q)).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(
        send(&app, query("/graphql", None, q)).await.x_cache(),
        "HIT"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        send(&app, query("/graphql", None, q)).await.x_cache(),
        "MISS"
    );
}

#[tokio::test(start_paused = true)]
async fn rule_max_age_caps_a_longer_response_max_age() {
    let layer = builder()
        .rule(scoped_cache::Rule::root_field("Query.publicPosts").max_age(Duration::from_secs(10)))
        .build()
        .unwrap();
    let (app, _) = app_with(layer);
    send(&app, query("/graphql", None, "{ publicPosts }")).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        send(&app, query("/graphql", None, "{ publicPosts }"))
            .await
            .x_cache(),
        "MISS"
    );
}

#[tokio::test]
async fn operation_rule_applies_without_operation_name() {
    let (app, counters) = app();
    for _ in 0..2 {
        let reply = send(&app, query("/graphql", None, "query Debug { renderId }")).await;
        assert_eq!(reply.x_cache(), "BYPASS");
    }
    assert_eq!(counters.executions(), 2);
}

#[tokio::test]
async fn path_parameters_separate_keys() {
    let (app, _) = app();
    let a = send(&app, query("/t/a/graphql", None, "{ renderId }")).await;
    let b = send(&app, query("/t/b/graphql", None, "{ renderId }")).await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"));
    assert_ne!(a.body["data"]["renderId"], b.body["data"]["renderId"]);
    assert_eq!(
        send(&app, query("/t/a/graphql", None, "{ renderId }"))
            .await
            .x_cache(),
        "HIT"
    );
}

#[tokio::test]
async fn unknown_request_fields_are_not_cached() {
    let (app, _) = app();
    for _ in 0..2 {
        let reply = send(
            &app,
            post(
                "/graphql",
                None,
                json!({"query": "{ renderId }", "locale": "fr"}),
            ),
        )
        .await;
        assert_eq!(reply.x_cache(), "BYPASS");
    }
}

async fn concurrently(app: &axum::Router, n: usize, q: &'static str) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, query("/graphql", None, q)).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_on_one_key_execute_once() {
    let (app, counters) = app();
    let replies = concurrently(&app, 8, "{ slow renderId }").await;
    assert_eq!(counters.executions(), 1);
    let misses = replies.iter().filter(|r| r.x_cache() == "MISS").count();
    assert_eq!(misses, 1);
    assert!(replies.iter().all(|r| r.body == replies[0].body));
}

#[tokio::test(start_paused = true)]
async fn waiters_execute_themselves_when_the_leader_stores_nothing() {
    let (app, counters) = app();
    let replies = concurrently(&app, 4, "{ slow(fail: true) }").await;
    assert_eq!(
        counters.executions(),
        4,
        "an error is never handed to another request"
    );
    assert!(replies.iter().all(|r| r.x_cache() == "MISS"));
}

#[tokio::test(start_paused = true)]
async fn coalescing_can_be_turned_off() {
    let (app, counters) = app_with(builder().coalesce_misses(false).build().unwrap());
    concurrently(&app, 4, "{ slow }").await;
    assert_eq!(counters.executions(), 4);
}
