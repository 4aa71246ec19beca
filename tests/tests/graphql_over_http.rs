//! GraphQL over HTTP, end to end over real TCP against the forum demo: the graphql-http
//! server audits (github.com/graphql/graphql-http, `src/audits/server.ts`), reproduced in
//! Rust, plus content negotiation, GET/HEAD safety, request limits and the demo's schema
//! limits.
//!
//! The MUST audits, each reproduced by `must_audits_pass` (on both GraphQL routes):
//! - 4655 MUST accept application/json and match the content-type
//! - 82A3 MUST use utf-8 encoding when responding
//! - BF61 MUST accept utf-8 encoded request
//! - 78D5 MUST assume utf-8 in request if encoding is unspecified
//! - 2C94 MUST accept POST requests
//! - 03D4 MUST accept application/json POST requests
//! - 13EE MUST allow string {query} parameter when accepting application/json
//! - B8B3 MUST allow string {operationName} parameter when accepting application/json
//! - 0220 / 0221 / 0222 MUST allow null {variables} / {operationName} / {extensions}
//!   parameter when accepting application/json
//! - 28B9 MUST allow map {variables} parameter when accepting application/json
//! - 1B7A MUST allow map {extensions} parameter when accepting application/json
//!
//! The SHOULD and MAY audits (22EB, 47DE, 80D8, 5A70, 9C48, 9ABE, A5BF, 423L, LKJ0-3,
//! 34A2, 6C00-3, 8161, 94B0-2, 4760-3, 2EA1, D6D5, 6A70, 58B0-3, 428F, B6DC, BCF8, B7N8,
//! 8764, 3E3A, 572B, FDE2, 7B9B, 865D, 556A, D586, 51FE, 74FF, 5E5B, 86EE) are reproduced
//! by `should_and_may_audits_pass`; the demo passes all of them.

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
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &[u8] = b"end-to-end-test-secret-of-32-bytes";
const GRJ: &str = "application/graphql-response+json";
const JSON: &str = "application/json";
const ROUTES: [&str; 2] = ["/graphql", "/graphql/nocache"];

async fn forum() -> (SocketAddr, Arc<schema::Forum>) {
    let forum = schema::Forum::seeded();
    let app = app::router(
        Arc::clone(&forum),
        app::layer(app::hmac_verifier(SECRET)).unwrap(),
    );
    (support::serve(app).await, forum)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|_| {
            panic!("not JSON: {}", String::from_utf8_lossy(&self.bytes));
        })
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    fn code(&self) -> String {
        self.json()["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("-")
            .to_owned()
    }
}

/// One request over a fresh TCP connection, with exactly the given headers.
async fn send(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let (status, headers, bytes) = support::exchange(
        addr,
        method,
        path_and_query,
        headers,
        Bytes::from(body.to_owned()),
    )
    .await;
    Reply {
        status,
        headers,
        bytes,
    }
}

async fn post(addr: SocketAddr, path: &str, accept: Option<&str>, body: &str) -> Reply {
    let mut headers = vec![("content-type", JSON)];
    if let Some(accept) = accept {
        headers.push(("accept", accept));
    }
    send(addr, Method::POST, path, &headers, body).await
}

fn query_string(params: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(params).unwrap()
}

async fn get(addr: SocketAddr, path: &str, accept: Option<&str>, params: &[(&str, &str)]) -> Reply {
    let uri = format!("{path}?{}", query_string(params));
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    send(addr, Method::GET, &uri, &headers, "").await
}

fn assert_no_errors(reply: &Reply, audit: &str) {
    let json = reply.json();
    assert!(json.get("errors").is_none(), "{audit}: {json}");
    assert!(json.get("data").is_some(), "{audit}: {json}");
}

#[tokio::test]
async fn must_audits_pass() {
    let (addr, _) = forum().await;
    let typename = r#"{"query":"{ __typename }"}"#;
    for route in ROUTES {
        // 4655: application/json is accepted and matched.
        let reply = post(addr, route, Some(JSON), typename).await;
        assert_eq!(reply.status, StatusCode::OK, "4655 {route}");
        assert!(reply.content_type().contains(JSON), "4655 {route}");

        // 82A3: the response is UTF-8.
        let reply = post(addr, route, None, typename).await;
        assert_eq!(reply.status, StatusCode::OK, "82A3 {route}");
        assert!(std::str::from_utf8(&reply.bytes).is_ok(), "82A3 {route}");
        assert!(
            reply.content_type().contains("charset=utf-8"),
            "82A3 {route}"
        );

        // BF61: a UTF-8 request with a declared charset is accepted.
        let utf8 = json!({"query": "{ __type(name: \"Run🏃Swim🏊\") { name } }"}).to_string();
        let reply = send(
            addr,
            Method::POST,
            route,
            &[("content-type", "application/json; charset=utf-8")],
            &utf8,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "BF61 {route}");

        // 78D5, 2C94, 03D4: a JSON POST without a charset is UTF-8 and accepted.
        let reply = post(addr, route, None, typename).await;
        assert_eq!(reply.status, StatusCode::OK, "78D5/2C94/03D4 {route}");

        // 13EE: a string query, accepting application/json, has no errors.
        let reply = post(addr, route, Some(JSON), typename).await;
        assert_eq!(reply.status, StatusCode::OK, "13EE {route}");
        assert_no_errors(&reply, "13EE");

        // B8B3: a string operationName.
        let body = r#"{"operationName":"Query","query":"query Query { __typename }"}"#;
        let reply = post(addr, route, Some(JSON), body).await;
        assert_eq!(reply.status, StatusCode::OK, "B8B3 {route}");
        assert_no_errors(&reply, "B8B3");

        // 0220, 0221, 0222: null variables, operationName, extensions.
        for (audit, parameter) in [
            ("0220", "variables"),
            ("0221", "operationName"),
            ("0222", "extensions"),
        ] {
            let body = json!({"query": "{ __typename }", parameter: null}).to_string();
            let reply = post(addr, route, Some(JSON), &body).await;
            assert_eq!(reply.status, StatusCode::OK, "{audit} {route}");
            assert_no_errors(&reply, audit);
        }

        // 28B9: map variables.
        let body = json!({
            "query": "query Type($name: String!) { __type(name: $name) { name } }",
            "variables": {"name": "sometype"},
        })
        .to_string();
        let reply = post(addr, route, Some(JSON), &body).await;
        assert_eq!(reply.status, StatusCode::OK, "28B9 {route}");
        assert_no_errors(&reply, "28B9");

        // 1B7A: map extensions.
        let body = json!({"query": "{ __typename }", "extensions": {"some": "value"}}).to_string();
        let reply = post(addr, route, Some(JSON), &body).await;
        assert_eq!(reply.status, StatusCode::OK, "1B7A {route}");
        assert_no_errors(&reply, "1B7A");
    }
}

/// What a SHOULD or MAY audit expects.
enum Expect {
    Status(u16),
    Between(u16, u16),
}

#[tokio::test]
async fn should_and_may_audits_pass() {
    let (addr, _) = forum().await;
    let typename = r#"{"query":"{ __typename }"}"#;
    let type_query = "query Type($name: String!) { __type(name: $name) { name } }";
    let unknown_field = r#"{"query":"{ 8f31403dfe404bccbb0e835f2629c6a7 }"}"#;
    let coercion =
        r#"{"query":"query CoerceFailure($id: ID!){ __typename }","variables":{"id":null}}"#;
    // (audit, accept, body, expectation, response must have no errors, must have no data)
    let mut posts: Vec<(String, Option<&str>, String, Expect, bool, bool)> = vec![
        (
            "22EB".into(),
            Some(GRJ),
            typename.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "47DE".into(),
            Some("*/*"),
            typename.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "80D8".into(),
            None,
            typename.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "A5BF".into(),
            None,
            String::new(),
            Expect::Status(400),
            false,
            false,
        ),
        (
            "423L".into(),
            Some(GRJ),
            r#"{"notquery":"{ __typename }"}"#.into(),
            Expect::Status(400),
            false,
            false,
        ),
        (
            "34A2".into(),
            Some(GRJ),
            typename.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "8161".into(),
            Some(GRJ),
            r#"{"operationName":"Query","query":"query Query { __typename }"}"#.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "2EA1".into(),
            Some(GRJ),
            json!({"query": type_query, "variables": {"name": "sometype"}}).to_string(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "428F".into(),
            Some(GRJ),
            json!({"query": "{ __typename }", "extensions": {"some": "value"}}).to_string(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "B6DC".into(),
            Some(JSON),
            r#"{ "not a JSON"#.into(),
            Expect::Between(200, 599),
            false,
            false,
        ),
        (
            "BCF8".into(),
            Some(JSON),
            r#"{ "not a JSON"#.into(),
            Expect::Status(400),
            false,
            false,
        ),
        (
            "B7N8".into(),
            Some(GRJ),
            r#"{ "not a JSON"#.into(),
            Expect::Status(400),
            false,
            false,
        ),
        (
            "8764".into(),
            None,
            r#"{"qeury":"{ __typename }"}"#.into(),
            Expect::Between(400, 599),
            false,
            false,
        ),
        (
            "3E3A".into(),
            None,
            r#"{"qeury":"{ __typename }"}"#.into(),
            Expect::Status(400),
            false,
            false,
        ),
        (
            "572B".into(),
            Some(JSON),
            r#"{"query":"{"}"#.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "FDE2".into(),
            Some(JSON),
            unknown_field.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "7B9B".into(),
            Some(JSON),
            coercion.into(),
            Expect::Status(200),
            false,
            false,
        ),
        (
            "865D".into(),
            Some(GRJ),
            r#"{"query":"{"}"#.into(),
            Expect::Between(400, 599),
            false,
            false,
        ),
        (
            "556A".into(),
            Some(GRJ),
            r#"{"query":"{"}"#.into(),
            Expect::Status(400),
            false,
            false,
        ),
        (
            "D586".into(),
            Some(GRJ),
            r#"{"query":"{"}"#.into(),
            Expect::Status(400),
            false,
            true,
        ),
        (
            "51FE".into(),
            Some(GRJ),
            unknown_field.into(),
            Expect::Between(400, 599),
            false,
            false,
        ),
        (
            "74FF".into(),
            Some(GRJ),
            unknown_field.into(),
            Expect::Status(400),
            false,
            false,
        ),
        (
            "5E5B".into(),
            Some(GRJ),
            unknown_field.into(),
            Expect::Status(400),
            false,
            true,
        ),
        (
            "86EE".into(),
            Some(GRJ),
            coercion.into(),
            Expect::Status(400),
            false,
            false,
        ),
    ];
    let invalid = [
        json!({"obj": "ect"}),
        json!(0),
        json!(false),
        json!(["array"]),
    ];
    for (i, value) in invalid.iter().enumerate() {
        let body = json!({"query": value}).to_string();
        posts.push((
            format!("LKJ{i}"),
            None,
            body,
            Expect::Status(400),
            false,
            false,
        ));
        let body = json!({"operationName": value, "query": "{ __typename }"}).to_string();
        posts.push((
            format!("6C0{i}"),
            None,
            body,
            Expect::Status(400),
            false,
            false,
        ));
    }
    for (i, value) in ["string".into(), json!(0), json!(false), json!(["array"])]
        .iter()
        .enumerate()
    {
        let body = json!({"query": "{ __typename }", "variables": value}).to_string();
        posts.push((
            format!("476{i}"),
            None,
            body,
            Expect::Status(400),
            false,
            false,
        ));
        let body = json!({"query": "{ __typename }", "extensions": value}).to_string();
        posts.push((
            format!("58B{i}"),
            None,
            body,
            Expect::Status(400),
            false,
            false,
        ));
    }
    for (i, parameter) in ["variables", "operationName", "extensions"]
        .iter()
        .enumerate()
    {
        let body = json!({"query": "{ __typename }", *parameter: null}).to_string();
        posts.push((
            format!("94B{i}"),
            Some(GRJ),
            body,
            Expect::Status(200),
            true,
            false,
        ));
    }

    for route in ROUTES {
        for (audit, accept, body, expect, no_errors, no_data) in &posts {
            let reply = if audit == "A5BF" {
                send(addr, Method::POST, route, &[("content-type", JSON)], "").await
            } else {
                post(addr, route, *accept, body).await
            };
            let status = reply.status.as_u16();
            match expect {
                Expect::Status(want) => assert_eq!(status, *want, "{audit} {route}"),
                Expect::Between(low, high) => {
                    assert!(
                        (*low..=*high).contains(&status),
                        "{audit} {route}: {status}"
                    )
                }
            }
            if *no_errors {
                assert_no_errors(&reply, audit);
            }
            if *no_data {
                assert!(reply.json().get("data").is_none(), "{audit} {route}");
            }
            if audit == "22EB" {
                assert!(reply.content_type().contains(GRJ), "22EB {route}");
            }
            if audit == "47DE" || audit == "80D8" {
                assert!(reply.content_type().contains(JSON), "{audit} {route}");
            }
        }

        // 9ABE: a POST without a content type is a 4xx.
        let reply = send(addr, Method::POST, route, &[], typename).await;
        assert!(reply.status.is_client_error(), "9ABE {route}");

        // 5A70: a GET with only `query`.
        let reply = get(addr, route, None, &[("query", "{ __typename }")]).await;
        assert_eq!(reply.status, StatusCode::OK, "5A70 {route}");

        // 9C48: no mutation over GET.
        let reply = get(
            addr,
            route,
            Some(GRJ),
            &[("query", "mutation { __typename }")],
        )
        .await;
        assert!(reply.status.is_client_error(), "9C48 {route}");

        // D6D5, 6A70: URL-encoded JSON variables over GET.
        for (audit, accept) in [("D6D5", GRJ), ("6A70", JSON)] {
            let params = [
                ("query", type_query),
                ("variables", r#"{"name":"sometype"}"#),
            ];
            let reply = get(addr, route, Some(accept), &params).await;
            assert_eq!(reply.status, StatusCode::OK, "{audit} {route}");
            assert_no_errors(&reply, audit);
        }
    }
}

#[tokio::test]
async fn responses_take_the_media_type_the_client_prefers() {
    let (addr, _) = forum().await;
    let body = r#"{"query":"{ publicPosts(limit: 1) { id } }"}"#;
    let graphql = "application/graphql-response+json; charset=utf-8";
    let json = "application/json; charset=utf-8";
    for route in ROUTES {
        for (accept, want) in [
            (vec![], json),
            (vec![""], json),
            (vec!["*/*"], json),
            (vec!["application/*"], json),
            (vec![JSON], json),
            (vec![GRJ], graphql),
            (
                vec!["application/graphql-response+json, application/json;q=0.9"],
                graphql,
            ),
            (
                vec!["application/graphql-response+json;q=0.5, application/json"],
                json,
            ),
            (
                vec!["application/json, application/graphql-response+json"],
                graphql,
            ),
            (
                vec!["text/html", "application/graphql-response+json"],
                graphql,
            ),
            (vec!["text/html, */*;q=0.1"], json),
        ] {
            let mut headers = vec![("content-type", JSON)];
            headers.extend(accept.iter().map(|a| ("accept", *a)));
            let reply = send(addr, Method::POST, route, &headers, body).await;
            assert_eq!(reply.status, StatusCode::OK, "{accept:?} {route}");
            assert_eq!(reply.content_type(), want, "{accept:?} {route}");
            assert_eq!(reply.json()["data"]["publicPosts"][0]["id"], "5");
        }
    }
}

#[tokio::test]
async fn nothing_acceptable_is_a_graphql_shaped_406() {
    let (addr, forum) = forum().await;
    for route in ROUTES {
        for accept in [
            "text/html",
            "application/json;q=0, text/*",
            "application/xml",
        ] {
            let reply = post(addr, route, Some(accept), r#"{"query":"{ renderId }"}"#).await;
            assert_eq!(reply.status, StatusCode::NOT_ACCEPTABLE, "{accept} {route}");
            assert_eq!(reply.code(), "NOT_ACCEPTABLE");
        }
    }
    assert_eq!(forum.executions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn request_errors_are_graphql_shaped_with_status_by_media_type() {
    let (addr, forum) = forum().await;
    // (body, status as graphql-response+json, status as json, code)
    let cases = [
        (r#"{ "not a JSON"#, 400, 400, "BAD_REQUEST"),
        (
            r#"{"query":"{ renderId }","variables":[7]}"#,
            400,
            400,
            "BAD_REQUEST",
        ),
        (r#"{"variables":{}}"#, 400, 400, "BAD_REQUEST"),
        (r#"{"query":"{"}"#, 400, 200, "GRAPHQL_PARSE_FAILED"),
        (
            r#"{"query":"{ nope }"}"#,
            400,
            200,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            r#"{"query":"query($n: Int) { publicPosts(limit: $n) { id } }","variables":{"n":"x"}}"#,
            400,
            200,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            r#"{"query":"query A { renderId } query B { renderId }"}"#,
            400,
            200,
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ];
    for route in ROUTES {
        for (body, graphql_status, json_status, code) in cases {
            for (accept, status) in [(GRJ, graphql_status), (JSON, json_status)] {
                let reply = post(addr, route, Some(accept), body).await;
                assert_eq!(
                    reply.status.as_u16(),
                    status,
                    "{body} as {accept} on {route}"
                );
                assert_eq!(reply.code(), code, "{body}");
                let json = reply.json();
                assert!(json.get("data").is_none(), "{body}: {json}");
                assert!(json["errors"][0]["message"].is_string(), "{json}");
                assert!(!reply.content_type().is_empty());
            }
        }
    }
    // Only documents that parsed reached the schema.
    let parsed = 3 * 2 * ROUTES.len() as u64;
    assert_eq!(forum.executions.load(Ordering::SeqCst), parsed);
}

#[tokio::test]
async fn get_and_head_never_run_mutations() {
    let (addr, _) = forum().await;
    let alice = app::mint(
        SECRET,
        "alice",
        "Alice",
        "member",
        Duration::from_secs(3600),
    );
    let bearer = format!("Bearer {alice}");
    let mutation = "mutation { createPost(title: \"t\", body: \"b\") { id } }";
    let count_posts = || async {
        let reply = post(
            addr,
            "/graphql/nocache",
            None,
            r#"{"query":"{ publicPosts(limit: 100) { id } }"}"#,
        )
        .await;
        reply.json()["data"]["publicPosts"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count_posts().await;
    for route in ROUTES {
        for method in [Method::GET, Method::HEAD] {
            for (params, label) in [
                (vec![("query", mutation)], "mutation"),
                (
                    vec![
                        (
                            "query",
                            "query Q { renderId } mutation M { createPost(title: \"t\", body: \"b\") { id } }",
                        ),
                        ("operationName", "M"),
                    ],
                    "named mutation",
                ),
                (vec![("query", "subscription { renderId }")], "subscription"),
            ] {
                let uri = format!("{route}?{}", query_string(&params));
                let reply = send(
                    addr,
                    method.clone(),
                    &uri,
                    &[("authorization", bearer.as_str())],
                    "",
                )
                .await;
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {label} {route}"
                );
                assert_eq!(reply.headers["allow"], "POST", "{method} {label} {route}");
            }
        }
    }
    assert_eq!(count_posts().await, before, "no post was created");
    // The same mutation over POST runs.
    let body = json!({"query": mutation}).to_string();
    let reply = send(
        addr,
        Method::POST,
        "/graphql/nocache",
        &[("content-type", JSON), ("authorization", bearer.as_str())],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(count_posts().await, before + 1);
}

#[tokio::test]
async fn head_runs_queries_without_a_body() {
    let (addr, _) = forum().await;
    for route in ROUTES {
        let uri = format!(
            "{route}?{}",
            query_string(&[("query", "{ publicPosts { id } }")])
        );
        let reply = send(addr, Method::HEAD, &uri, &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{route}");
        assert!(reply.bytes.is_empty());
    }
}

#[tokio::test]
async fn other_methods_and_bodies_are_refused() {
    let (addr, forum) = forum().await;
    for route in ROUTES {
        let reply = send(
            addr,
            Method::PUT,
            route,
            &[("content-type", JSON)],
            r#"{"query":"{ renderId }"}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{route}");

        for content_type in [
            "text/plain",
            "application/graphql",
            "multipart/form-data; boundary=x",
        ] {
            let reply = send(
                addr,
                Method::POST,
                route,
                &[("content-type", content_type)],
                r#"{"query":"{ renderId }"}"#,
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type} {route}"
            );
        }
    }
    assert_eq!(forum.executions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn batches_answer_an_array() {
    let (addr, _) = forum().await;
    let body = r#"[{"query":"{ publicPosts(limit: 1) { id } }"},{"query":"{ nope }"}]"#;
    let reply = post(addr, "/graphql/nocache", Some(GRJ), body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json[0]["data"]["publicPosts"][0]["id"], "5");
    assert!(json[1].get("data").is_none());
    assert_eq!(
        json[1]["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
}

/// `levels` fragments, each spreading the next `width` times: `width^levels` fields once
/// expanded, in a few hundred bytes.
fn fragment_bomb(levels: usize, width: usize) -> String {
    let mut doc = String::from("query { ...F0 }");
    for i in 0..levels {
        let spreads = format!(" ...F{}", i + 1).repeat(width);
        doc.push_str(&format!(" fragment F{i} on Query {{{spreads} }}"));
    }
    doc.push_str(&format!(" fragment F{levels} on Query {{ renderId }}"));
    doc
}

#[tokio::test]
async fn fragment_bombs_are_refused_before_async_graphql_sees_them() {
    let (addr, _) = forum().await;
    // The demo's `limit_recursive_depth(20)` would stop 20x2 cheaply; 12x4 and 15x3 stay
    // under every schema limit and cost async-graphql about 6 s of validation (release
    // build) before `limit_complexity` refuses them. Both the layer (`max_selections`)
    // and the handler count fields with each fragment once and refuse all three first.
    for (levels, width) in [(20, 2), (12, 4), (15, 3)] {
        let body = json!({"query": fragment_bomb(levels, width)}).to_string();
        assert!(body.len() < 1000);
        for route in ROUTES {
            let started = Instant::now();
            let reply = post(addr, route, Some(GRJ), &body).await;
            let took = started.elapsed();
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{levels}x{width} {route}"
            );
            // The layer's guard refuses it on these verifying routes; the handler would too.
            let json = reply.json();
            assert!(json.get("data").is_none(), "{json}");
            assert!(json["errors"][0]["message"].is_string(), "{json}");
            assert!(
                took < Duration::from_secs(1),
                "{levels}x{width} took {took:?}"
            );
        }
    }
}

const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}"#;

#[tokio::test]
async fn schema_limits_allow_real_queries_and_refuse_abuse() {
    let (addr, _) = forum().await;
    let alice = app::mint(
        SECRET,
        "alice",
        "Alice",
        "member",
        Duration::from_secs(3600),
    );
    let bearer = format!("Bearer {alice}");
    let run = |query: String| {
        let bearer = bearer.clone();
        async move {
            let body = json!({"query": query}).to_string();
            send(
                addr,
                Method::POST,
                "/graphql/nocache",
                &[
                    ("content-type", JSON),
                    ("accept", GRJ),
                    ("authorization", bearer.as_str()),
                ],
                &body,
            )
            .await
        }
    };
    for query in [
        INTROSPECTION,
        "{ renderId me { id name role } memberPosts { id title } }",
        "{ publicPosts(limit: 3) { id title body author } }",
        "{ post(id: 6) { id title body author } }",
        "mutation { createPost(title: \"t\", body: \"b\") { id title body author } }",
        "{ publicPosts @include(if: true) { id @skip(if: false) } }",
    ] {
        let reply = run(query.to_owned()).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
        assert_no_errors(&reply, query);
    }

    let deep = format!(
        "{{ __schema {{ types {}{{ name }}{} }} }}",
        "{ fields { type ".repeat(8),
        " } }".repeat(8)
    );
    let wide: String = (0..301).map(|i| format!(" a{i}: renderId")).collect();
    let directives = "{ renderId @skip(if: false) @skip(if: false) @skip(if: false) @skip(if: false) @skip(if: false) }";
    let chain: String = {
        let mut doc = String::from("{ ...F0 }");
        for i in 0..25 {
            doc.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
        }
        doc + " fragment F25 on Query { renderId }"
    };
    for (query, label) in [
        (deep, "depth"),
        (format!("{{{wide} }}"), "complexity"),
        (directives.to_owned(), "directives"),
        (chain, "recursive depth"),
    ] {
        let reply = run(query).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{label}");
        assert!(reply.json().get("data").is_none(), "{label}");
    }
}
