//! Hostile and tricky requests: nothing crashes, nothing runs where it must not, and every
//! input a handler can read is keyed or the request is not cached.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::OriginalUri;
use axum::response::IntoResponse;
use axum::routing::post;
use common::*;
use http::{HeaderMap, Request, StatusCode};
use scoped_cache::{RoutePolicy, Rule, Scope, ScopedCacheLayer};
use serde_json::{Value, json};

fn deep_list(n: usize) -> String {
    format!("{{ echo(b: {}\"x\"{}) }}", "[".repeat(n), "]".repeat(n))
}

fn deep_object(n: usize) -> String {
    format!("{{ echo(b: {}1{}) }}", "{a:".repeat(n), "}".repeat(n))
}

fn deep_directive(n: usize) -> String {
    format!(
        "{{ echo @include(if: {}true{}) }}",
        "[".repeat(n),
        "]".repeat(n)
    )
}

#[tokio::test]
async fn deeply_nested_documents_are_refused_before_any_parser_sees_them() {
    let (app, counters) = app();
    for document in [deep_list(2_000), deep_object(2_000), deep_directive(2_000)] {
        for path in ["/graphql", "/graphql/nocache"] {
            let reply = send(&app, query(path, None, &document)).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(reply.code(), "BAD_REQUEST");
            let reply = send(&app, get(path, None, &[("query", &document)])).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "GET {path}");
        }
        // A batch hides it in its second request; text/plain is parsed as JSON too.
        let batch = json!([{"query": "{ renderId }"}, {"query": document}]).to_string();
        let req = Request::post("/graphql/nocache")
            .header("content-type", "text/plain")
            .body(Body::from(batch))
            .unwrap();
        assert_eq!(send(&app, req).await.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(counters.executions(), 0);
    // Ordinary nesting still works.
    let fine = send(&app, query("/graphql", None, &deep_list(20))).await;
    assert_eq!(fine.status, StatusCode::OK);
}

#[tokio::test]
async fn a_multipart_request_is_checked_like_json() {
    let (app, counters) = app();
    let operations = json!({"query": deep_list(2_000)}).to_string();
    let body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{}}\r\n--B--\r\n"
    );
    let req = Request::post("/graphql/nocache")
        .header("content-type", "multipart/form-data; boundary=B")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn a_document_with_too_many_root_fields_is_passed_on_uncached() {
    let (app, _) = app();
    let fields: String = (0..2_000).map(|i| format!(" f{i}: renderId")).collect();
    // Aliases of one field are one root field: still cached.
    let aliased = send(&app, query("/graphql", None, &format!("{{{fields} }}"))).await;
    assert_eq!(aliased.x_cache(), "MISS");
    let distinct: String = (0..2_000).map(|i| format!(" f{i}")).collect();
    let reply = send(&app, query("/graphql", None, &format!("{{{distinct} }}"))).await;
    assert_eq!(reply.x_cache(), "BYPASS");
    // Past 128 KiB the layer does not analyse the document at all.
    let long = format!("{{ renderId }} #{}", "x".repeat(200 * 1024));
    let reply = send(&app, query("/graphql", None, &long)).await;
    assert_eq!(reply.x_cache(), "BYPASS");
}

#[tokio::test]
async fn request_bodies_are_bounded_whatever_their_content_type() {
    let (app, counters) = app_with(builder().max_request_bytes(1024).build().unwrap());
    let big = format!(
        "{{\"query\":\"{{ renderId }}\",\"x\":\"{}\"}}",
        "a".repeat(4096)
    );
    for content_type in [
        None,
        Some("text/plain"),
        Some("multipart/form-data; boundary=B"),
        Some("application/octet-stream"),
    ] {
        for path in ["/graphql", "/graphql/nocache", "/elsewhere"] {
            let mut req = Request::post(path);
            if let Some(content_type) = content_type {
                req = req.header("content-type", content_type);
            }
            let reply = send(&app, req.body(Body::from(big.clone())).unwrap()).await;
            assert_eq!(
                reply.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{content_type:?} {path}"
            );
            assert_eq!(reply.code(), "BAD_REQUEST");
        }
    }
    // A declared length beyond the bound is refused without reading the body.
    let req = Request::post("/graphql/nocache")
        .header("content-length", "1073741824")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn no_mutation_runs_over_get_or_head_on_any_verifying_route() {
    let (app, counters) = app();
    for path in ["/graphql", "/graphql/nocache"] {
        for params in [
            &[("query", "mutation { touch }")][..],
            &[("query", "mutation { touch }"), ("x", "1")],
            &[("query", "mutation M { touch }"), ("operationName", "M")],
        ] {
            let reply = send(&app, get(path, None, params)).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{path} {params:?}"
            );
            assert_eq!(reply.headers["allow"], "POST");
            assert_eq!(reply.code(), "METHOD_NOT_ALLOWED");
        }
        // A second `query` (or `operationName`) is refused outright.
        let reply = send(
            &app,
            get(
                path,
                None,
                &[("query", "{ renderId }"), ("query", "mutation { touch }")],
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        // HEAD is routed to the GET handler, which would read a mutation from the body.
        let head = Request::head(path)
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"query": "mutation { touch }"}).to_string(),
            ))
            .unwrap();
        assert_ne!(send(&app, head).await.status, StatusCode::OK);
        let head = Request::head(format!("{path}?query=mutation%7Btouch%7D"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&app, head).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
    assert_eq!(counters.executions(), 0);
    // A query over GET still works on both.
    let reply = send(
        &app,
        get("/graphql/nocache", None, &[("query", "{ renderId }")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_persisted_query_over_get_is_answered_by_the_layer() {
    let (app, counters) = app();
    let ext = r#"{"persistedQuery":{"version":1,"sha256Hash":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;
    let reply = send(&app, get("/graphql/nocache", None, &[("extensions", ext)])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.code(), "PERSISTED_QUERY_NOT_FOUND");
    assert_eq!(counters.executions(), 0);
}

fn cookie_app() -> (Router, Counters) {
    app_with(builder().token_cookie("session").build().unwrap())
}

fn with_cookie(mut req: Request<Body>, token: &str) -> Request<Body> {
    req.headers_mut()
        .insert("cookie", format!("session={token}").parse().unwrap());
    req
}

#[tokio::test]
async fn a_cookie_token_never_carries_a_cross_site_request() {
    let (app, counters) = cookie_app();
    let alice = member("alice");
    let mutation = json!({"query": "mutation { touch }"}).to_string();
    let form = Request::post("/graphql/nocache")
        .header("content-type", "text/plain")
        .body(Body::from(mutation.clone()))
        .unwrap();
    let reply = send(&app, with_cookie(form, &alice)).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let cross = Request::post("/graphql/nocache")
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(Body::from(mutation.clone()))
        .unwrap();
    assert_eq!(
        send(&app, with_cookie(cross, &alice)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(counters.executions(), 0);
    // Same-origin JSON with the cookie runs; a bearer header needs none of this.
    let same = Request::post("http://forum.example/graphql/nocache")
        .header("content-type", "application/json")
        .header("origin", "http://forum.example")
        .body(Body::from(mutation.clone()))
        .unwrap();
    assert_eq!(
        send(&app, with_cookie(same, &alice)).await.status,
        StatusCode::OK
    );
    let bearer = Request::post("/graphql/nocache")
        .header("content-type", "text/plain")
        .header("authorization", format!("Bearer {alice}"))
        .body(Body::from(mutation))
        .unwrap();
    assert_eq!(send(&app, bearer).await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_gets_a_graphql_shaped_400_in_the_accepted_media_type() {
    let (app, counters) = app();
    for (accept, expected) in [
        (None, "application/json"),
        (Some("application/json"), "application/json"),
        (
            Some("application/graphql-response+json"),
            "application/graphql-response+json",
        ),
    ] {
        let mut req = Request::post("/graphql").header("content-type", "application/json");
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let reply = send(&app, req.body(Body::from("{\"query\": 1")).unwrap()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "BAD_REQUEST");
        assert!(reply.headers.contains_key("vary"));
        let content_type = reply.headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(expected), "{content_type}");
    }
    // The layer's 401s honour Accept too.
    let req = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .header("authorization", "Bearer not.a.token")
        .body(Body::from("{}"))
        .unwrap();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Like every answer on a verifying route, a refusal says what it depends on.
    let vary = reply.headers["vary"].to_str().unwrap();
    assert!(
        vary.contains("authorization") && vary.contains("accept"),
        "{vary}"
    );
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/graphql-response+json")
    );
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn bypassed_answers_vary_and_are_private_when_authenticated() {
    let (app, _) = app();
    let alice = member("alice");
    let reply = send(
        &app,
        query("/graphql/nocache", Some(&alice), "{ renderId }"),
    )
    .await;
    assert_eq!(reply.x_cache(), "BYPASS");
    assert!(
        reply.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );
    assert!(reply.headers.contains_key("vary"));
    let anonymous = send(&app, query("/graphql/nocache", None, "{ renderId }")).await;
    assert!(anonymous.headers.contains_key("vary"));
}

// --- Inputs outside the GraphQL request -------------------------------------------------

/// A handler that answers with everything a handler commonly reads, plus a per-response id.
fn echo_app(layer: ScopedCacheLayer, vary: Option<&'static str>) -> (Router, Arc<AtomicU64>) {
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    let handler = move |OriginalUri(uri): OriginalUri, headers: HeaderMap| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let header = |name: &str| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            };
            let body = json!({"data": {
                "uri": uri.to_string(),
                "forwarded": header("x-forwarded-host"),
                "host": header("host"),
                "accept": header("accept"),
                "run": n,
            }});
            let mut response = axum::Json(body).into_response();
            response
                .headers_mut()
                .insert("x-request-id", n.to_string().parse().unwrap());
            if let Some(vary) = vary {
                response.headers_mut().insert("vary", vary.parse().unwrap());
            }
            response
        }
    };
    // The tenant router carries the layer itself, so it sees the URI with the prefix stripped.
    let tenant = Router::new()
        .route("/graphql", post(handler.clone()))
        .layer(layer.clone());
    let router = Router::new()
        .route("/graphql", post(handler))
        .layer(layer)
        .nest("/t/{tenant}", tenant);
    (router, runs)
}

fn echo_layer() -> ScopedCacheLayer {
    builder().build().unwrap()
}

fn echo_post(path: &str) -> http::request::Builder {
    Request::post(path).header("content-type", "application/json")
}

async fn run(app: &Router, req: http::request::Builder) -> (String, Value, HeaderMap) {
    let reply = send(
        app,
        req.body(Body::from(json!({"query": "{ renderId }"}).to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    (reply.x_cache().to_owned(), reply.body, reply.headers)
}

#[tokio::test]
async fn every_input_a_handler_reads_is_keyed() {
    let (app, runs) = echo_app(echo_layer(), None);
    let cases = [
        // Nested routers strip their prefix before the layer runs.
        (echo_post("/t/acme/graphql"), echo_post("/t/globex/graphql")),
        // A POST's query string.
        (echo_post("/graphql?lang=en"), echo_post("/graphql?lang=fr")),
        // Forwarding headers and Host.
        (
            echo_post("/graphql").header("x-forwarded-host", "a.example"),
            echo_post("/graphql").header("x-forwarded-host", "b.example"),
        ),
        (
            echo_post("/graphql").header("host", "a.example"),
            echo_post("/graphql").header("host", "b.example"),
        ),
        // Every Accept line, not only the first.
        (
            echo_post("/graphql")
                .header("accept", "application/json")
                .header("accept", "text/a"),
            echo_post("/graphql")
                .header("accept", "application/json")
                .header("accept", "text/b"),
        ),
    ];
    for (first, second) in cases {
        let (status, a, _) = run(&app, first).await;
        assert_eq!(status, "MISS");
        let (status, b, _) = run(&app, second).await;
        assert_eq!(status, "MISS", "{b}");
        assert_ne!(a, b);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_hit_replays_representation_headers_only() {
    let (app, _) = echo_app(echo_layer(), None);
    let (status, first, headers) = run(&app, echo_post("/graphql")).await;
    assert_eq!(status, "MISS");
    assert_eq!(headers["x-request-id"], "0");
    let (status, second, headers) = run(&app, echo_post("/graphql")).await;
    assert_eq!(status, "HIT");
    assert_eq!(first, second);
    assert!(!headers.contains_key("x-request-id"));
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn a_response_varying_on_a_header_outside_the_key_is_not_stored() {
    for vary in ["Cookie", "Authorization", "Origin", "*"] {
        let (app, runs) = echo_app(echo_layer(), Some(vary));
        run(&app, echo_post("/graphql")).await;
        let (status, _, _) = run(&app, echo_post("/graphql")).await;
        assert_eq!(status, "MISS", "{vary}");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
    // A header put in the key makes it storable.
    let layer = builder().key_headers(["origin"]).build().unwrap();
    let (app, _) = echo_app(layer, Some("Origin"));
    run(&app, echo_post("/graphql").header("origin", "https://a")).await;
    let (status, _, _) = run(&app, echo_post("/graphql").header("origin", "https://a")).await;
    assert_eq!(status, "HIT");
    let (status, _, _) = run(&app, echo_post("/graphql").header("origin", "https://b")).await;
    assert_eq!(status, "MISS");
}

// --- Configuration that must not fail open -----------------------------------------------

#[tokio::test]
async fn a_route_policy_matches_under_a_nested_prefix() {
    let layer = builder()
        .route("/api/graphql", RoutePolicy::cached().require_auth(true))
        .build()
        .unwrap();
    let (inner, counters) = app_with(layer);
    let app = Router::new().nest("/api", inner);
    let reply = send(&app, query("/api/graphql", None, "{ renderId }")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(counters.executions(), 0);
}

#[tokio::test]
async fn an_outer_layer_sees_the_claims_an_inner_layer_handed_to_resolvers() {
    // The inner layer scopes `memberPosts` by role; the outer one was left public.
    let inner = builder().build().unwrap();
    let outer = ScopedCacheLayer::builder()
        .verifier(
            scoped_cache::Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .default_rule(Rule::new().scope(Scope::public()))
        .route("/graphql", RoutePolicy::cached())
        .build()
        .unwrap();
    let (app, _) = app_with(inner);
    let app = app.layer(outer);
    let alice = member("alice");
    let guest = token(json!({"sub": "gina", "role": "guest"}));
    let member_reply = send(&app, query("/graphql", Some(&alice), "{ memberPosts }")).await;
    assert!(member_reply.body["data"]["memberPosts"].is_array());
    for _ in 0..2 {
        let guest_reply = send(&app, query("/graphql", Some(&guest), "{ memberPosts }")).await;
        assert_eq!(guest_reply.code(), "FORBIDDEN", "{:?}", guest_reply.body);
    }
    // An inner hit reports its scope to the outer layer as well.
    let again = send(
        &app,
        query("/graphql", Some(&member("bob")), "{ memberPosts }"),
    )
    .await;
    assert!(again.body["data"]["memberPosts"].is_array());
    let guest_reply = send(&app, query("/graphql", Some(&guest), "{ memberPosts }")).await;
    assert_eq!(guest_reply.code(), "FORBIDDEN");
}

#[tokio::test]
async fn the_deepest_nesting_allowed_is_safe_for_the_layer_and_the_schema() {
    // Test threads have 2 MiB stacks and this is a debug build: the worst case for the
    // parser's recursion. 256 is the most `max_nesting` accepts.
    let (app, _) = app_with(builder().max_nesting(256).build().unwrap());
    let selections = format!("{}renderId{}", "{ me ".repeat(255), "}".repeat(255));
    for document in [
        deep_list(255),
        deep_object(255),
        deep_directive(254),
        selections,
    ] {
        for path in ["/graphql", "/graphql/nocache"] {
            let reply = send(&app, query(path, None, &document)).await;
            assert!(
                reply.status == StatusCode::OK || reply.status == StatusCode::BAD_REQUEST,
                "{}",
                reply.status
            );
        }
    }
}

#[tokio::test]
async fn a_long_chain_of_fragments_crashes_nothing() {
    // Not nested at all, yet each spread leads to the next: recursion on spreads (in the
    // layer's analysis or the schema's validation) would overflow the stack.
    let (app, _) = app();
    let mut doc = String::from("{ ...F0 }");
    for i in 0..20_000 {
        doc.push_str(&format!(
            " fragment F{i} on Query {{ renderId ...F{} }}",
            i + 1
        ));
    }
    doc.push_str(" fragment F20000 on Query { renderId }");
    for path in ["/graphql", "/graphql/nocache"] {
        let reply = send(&app, query(path, None, &doc)).await;
        assert!(reply.status.is_client_error() || reply.status.is_success());
    }
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_before_the_schema_expands_it() {
    // 20 levels of fragments that each spread the next twice: about 800 bytes that the
    // schema would validate and execute as a million fields.
    let (app, counters) = app();
    let mut bomb = String::from("query Bomb { ...F0 }");
    for i in 0..20 {
        bomb.push_str(&format!(
            " fragment F{i} on Query {{ ...F{} ...F{} }}",
            i + 1,
            i + 1
        ));
    }
    bomb.push_str(" fragment F20 on Query { renderId }");
    for path in ["/graphql", "/graphql/nocache"] {
        // Answered like a validation failure: 200 for legacy `application/json` clients.
        let reply = send(&app, query(path, None, &bomb)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.code(), "GRAPHQL_VALIDATION_FAILED");
        assert!(reply.body.get("data").is_none());
        let mut req = get(path, None, &[("query", &bomb)]);
        req.headers_mut().insert(
            "accept",
            "application/graphql-response+json".parse().unwrap(),
        );
        let reply = send(&app, req).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "GET {path}");
        assert_eq!(reply.code(), "GRAPHQL_VALIDATION_FAILED");
    }
    assert_eq!(counters.executions(), 0);
    // Fragments used the ordinary way still work.
    let fine = "{ ...P ...P } fragment P on Query { publicPosts renderId }";
    assert_eq!(
        send(&app, query("/graphql", None, fine)).await.status,
        StatusCode::OK
    );
}

#[test]
fn the_schema_survives_the_layers_last_resort_bound() {
    // However the guard's lexer could be fooled, no document reaching the schema nests
    // deeper than 512 brackets in its raw text. Run the schema there, on a 2 MiB stack
    // (tokio's worker default), unoptimised.
    let n = 510;
    let documents = [
        format!("{{ echo(b: {}\"x\"{}) }}", "[".repeat(n), "]".repeat(n)),
        format!("{{ echo(b: {}1{}) }}", "{a:".repeat(n), "}".repeat(n)),
        format!("{{{}renderId{} }}", " me {".repeat(n), "}".repeat(n)),
    ];
    let ran = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let (app, _) = app();
            for document in &documents {
                let req = Request::post("/graphql/nocache")
                    .header("content-type", "application/json")
                    .body(Body::from(json!({ "query": document }).to_string()))
                    .unwrap();
                // Through the layer (it refuses: 510 > 64) and straight to the handler.
                let reply = runtime.block_on(send(&app, req));
                assert_eq!(reply.status, StatusCode::BAD_REQUEST);
                let schema =
                    async_graphql::Schema::new(Query, Mutation, async_graphql::EmptySubscription);
                let _ = runtime.block_on(schema.execute(document.as_str()));
            }
        })
        .unwrap()
        .join();
    assert!(ran.is_ok());
}

#[tokio::test]
async fn a_persisted_mutation_never_runs_over_get() {
    use async_graphql::extensions::apollo_persisted_queries::{
        ApolloPersistedQueries, LruCacheStorage,
    };
    use sha2::{Digest, Sha256};

    let schema = async_graphql::Schema::build(Query, Mutation, async_graphql::EmptySubscription)
        .extension(ApolloPersistedQueries::new(LruCacheStorage::new(64)))
        .finish();
    let handler = move |req: async_graphql_axum::GraphQLRequest| {
        let schema = schema.clone();
        async move { async_graphql_axum::GraphQLResponse::from(schema.execute(req.into_inner()).await) }
    };
    let app = Router::new()
        .route(
            "/graphql",
            axum::routing::get(handler.clone()).post(handler.clone()),
        )
        .route(
            "/graphql/nocache",
            axum::routing::get(handler.clone()).post(handler),
        )
        .layer(builder().build().unwrap());
    let mutation = "mutation { touch }";
    let hash: String = Sha256::digest(mutation.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let persisted = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}}).to_string();
    for path in ["/graphql", "/graphql/nocache"] {
        // The app learns the document the ordinary way, by POST.
        let register = common::post(
            path,
            None,
            json!({"query": mutation, "extensions": persisted.parse::<Value>().unwrap()}),
        );
        assert_eq!(send(&app, register).await.body["data"]["touch"], true);
        let repeated = format!(
            r#"{{"persistedQuery":{{"sha256Hash":"x"}},"persistedQuery":{{"version":1,"sha256Hash":"{hash}"}}}}"#
        );
        for params in [
            vec![("extensions", persisted.as_str())],
            vec![("query", ""), ("extensions", persisted.as_str())],
            vec![("extensions", repeated.as_str())],
        ] {
            let reply = send(&app, get(path, None, &params)).await;
            assert!(
                reply.body["data"]["touch"].is_null(),
                "{path} {params:?}: {}",
                reply.body
            );
            assert!(
                reply.status == StatusCode::METHOD_NOT_ALLOWED
                    || reply.code() == "PERSISTED_QUERY_NOT_FOUND",
                "{path} {params:?}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
}

#[tokio::test]
async fn a_request_in_array_form_is_checked_too() {
    // serde reads `["{ doc }"]` as a request whose `query` is the array's first element.
    let (app, counters) = app();
    for path in ["/graphql", "/graphql/nocache"] {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(json!([deep_list(2_000)]).to_string()))
            .unwrap();
        assert_eq!(
            send(&app, req).await.status,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    assert_eq!(counters.executions(), 0);
}

/// A body that promises 64 bytes (small enough to be stored) and fails instead.
struct FailingBody;

impl http_body::Body for FailingBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::other("the upstream went away"))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(64)
    }
}

#[tokio::test]
async fn a_body_that_fails_is_a_labelled_502_never_stored() {
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    let handler = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            let mut response = Body::new(FailingBody).into_response();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        }
    };
    let app = Router::new()
        .route("/graphql", post(handler))
        .layer(echo_layer());
    let alice = member("alice");
    for _ in 0..2 {
        let reply = send(
            &app,
            echo_post("/graphql")
                .header("authorization", format!("Bearer {alice}"))
                .body(Body::from(json!({"query": "{ renderId }"}).to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        // Like any answer the layer did not store: labelled, varying on the token, and
        // private to the caller it was made for.
        assert_eq!(reply.x_cache(), "MISS");
        assert!(reply.headers.contains_key("vary"));
        assert!(
            reply.headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("private")
        );
        assert_eq!(
            reply.body["errors"][0]["extensions"]["code"],
            "INTERNAL_SERVER_ERROR"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "never stored");
}

#[tokio::test]
async fn a_miss_and_a_hit_carry_one_vary_line() {
    let (app, _) = echo_app(echo_layer(), Some("Accept, Host"));
    for expected in ["MISS", "HIT"] {
        let reply = send(
            &app,
            echo_post("/graphql")
                .body(Body::from(json!({"query": "{ renderId }"}).to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(reply.x_cache(), expected);
        let lines: Vec<_> = reply.headers.get_all("vary").iter().collect();
        assert_eq!(lines.len(), 1, "{expected}: {lines:?}");
        let names = lines[0].to_str().unwrap().to_ascii_lowercase();
        for name in ["authorization", "accept", "host"] {
            assert!(names.split(", ").any(|n| n == name), "{expected}: {names}");
        }
    }
}

/// Sends `large` and, meanwhile, a small request, on this test's one thread: the small
/// one must be answered while the large one's examination (seconds, unoptimized) is still
/// running on the blocking pool, or it held the thread a worker would be.
async fn answered_while_examined(app: &Router, large: Request<Body>) -> common::Reply {
    let big = tokio::spawn({
        let app = app.clone();
        async move { send(&app, large).await }
    });
    // Lets the large request start: it runs until it waits for its examination.
    tokio::task::yield_now().await;
    let small = send(
        app,
        common::post("/graphql", None, json!({"query": "{ renderId }"})),
    )
    .await;
    assert_eq!(small.status, StatusCode::OK);
    assert!(!big.is_finished(), "the large request held the runtime");
    big.await.unwrap()
}

fn large_document() -> String {
    let fields = "renderId ".repeat(100_000);
    format!("{{ {fields} ...F }} fragment F on Query {{ renderId }}")
}

#[tokio::test]
async fn a_large_document_is_examined_off_the_runtime() {
    let (app, _) = app();
    let large = json!({ "query": large_document() });
    assert!(large.to_string().len() > 800 * 1024);
    let big = answered_while_examined(&app, common::post("/graphql", None, large)).await;
    assert_eq!(big.code(), "GRAPHQL_VALIDATION_FAILED", "{:?}", big.body);
}

#[tokio::test]
async fn a_large_multipart_request_is_examined_off_the_runtime() {
    let (app, counters) = app();
    let operations = json!({ "query": large_document() }).to_string();
    let body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{}}\r\n--B--\r\n"
    );
    let large = Request::post("/graphql/nocache")
        .header("content-type", "multipart/form-data; boundary=B")
        .body(Body::from(body))
        .unwrap();
    let big = answered_while_examined(&app, large).await;
    assert_eq!(big.code(), "GRAPHQL_VALIDATION_FAILED", "{:?}", big.body);
    assert_eq!(counters.executions(), 1, "only the small request ran");
}
