//! Property tests of hostile input, with the generators of `common::hostile`: whatever a
//! client sends, the layer never panics and never crashes the process (a stack overflow
//! aborts this whole binary), answers only with the statuses it may, shapes its own
//! refusals as GraphQL errors, never runs a mutation over GET or HEAD, answers a repeated
//! request alike, and lets no document cost more than linear work.
//!
//! Each property runs a bounded number of cases on one current-thread runtime, so requests
//! run on the test thread's 2 MiB stack, as on a tokio worker.

mod common;

use axum::Router;
use axum::body::Body;
use common::hostile::*;
use common::*;
use http::{Method, Request, StatusCode};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

type CaseResult = Result<(), TestCaseError>;

/// Runs `test` on `cases` values of `strategy`, each inside `runtime`.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(&tokio::runtime::Runtime, S::Value) -> CaseResult,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        // `PROPTEST_CASES` runs more (or fewer) cases, as with proptest's own macros.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        // Keep no regression files: the generators live in the repository instead.
        failure_persistence: None,
        // A failing case is shrunk for a bounded while, not for ever.
        max_shrink_iters: 512,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, |value| test(&runtime, value)) {
        panic!("{failure}");
    }
}

/// What the layer or the app may answer with; 5xx never (503 needs a JWKS source, and the
/// fixture verifies with a static HMAC key).
fn allowed(status: StatusCode) -> bool {
    status.is_success()
        || [304, 400, 401, 403, 404, 405, 406, 413, 415, 431].contains(&status.as_u16())
}

/// The layer answered this itself: it labels everything it passed on with `x-cache`.
fn answered_by_layer(reply: &Reply) -> bool {
    !reply.headers.contains_key("x-cache")
}

/// `{"errors":[{"message": <string>, "extensions": {"code": <string>}}, ..]}`.
fn is_graphql_error_body(body: &Value) -> bool {
    body["errors"].as_array().is_some_and(|errors| {
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e["message"].is_string() && e["extensions"]["code"].is_string())
    })
}

fn graphql_content_type(reply: &Reply) -> bool {
    reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/graphql-response+json")
        })
}

/// The properties every answer to every request must have.
fn check_answer(method: &Method, reply: &Reply) -> CaseResult {
    prop_assert!(
        allowed(reply.status),
        "status {}: {}",
        reply.status,
        reply.body
    );
    // The layer's own answers are all refusals (4xx, or 200 for request errors answered
    // as `application/json`, and for an unknown persisted query).
    if answered_by_layer(reply) {
        // axum's method routers drop the body of an answer to HEAD (RFC 9110); its
        // fallback does not, and hyper would over the wire.
        prop_assert!(
            is_graphql_error_body(&reply.body) || (method == Method::HEAD && reply.body == ""),
            "the layer's {} is not GraphQL-shaped: {}",
            reply.status,
            reply.body
        );
        prop_assert!(
            graphql_content_type(reply),
            "the layer's {} has content-type {:?}",
            reply.status,
            reply.headers.get("content-type")
        );
    }
    if method == Method::GET || method == Method::HEAD {
        prop_assert!(
            reply.body["data"]["touch"].is_null(),
            "a mutation ran over {method}: {}",
            reply.body
        );
    }
    Ok(())
}

fn cookie_app() -> (Router, Counters) {
    app_with(builder().token_cookie("session").build().unwrap())
}

#[test]
fn hostile_requests_get_allowed_graphql_shaped_and_repeatable_answers() {
    check(
        256,
        (hostile_request(), any::<bool>()),
        |runtime, (request, cookies)| {
            runtime.block_on(async {
                let (app, _) = if cookies { cookie_app() } else { app() };
                let first = send(&app, request.to_request()).await;
                check_answer(&request.method, &first)?;
                let second = send(&app, request.to_request()).await;
                check_answer(&request.method, &second)?;
                prop_assert_eq!(first.status, second.status, "not deterministic");
                if second.x_cache() == "HIT" {
                    prop_assert_eq!(first.x_cache(), "MISS", "a HIT nothing stored");
                    prop_assert_eq!(&first.body, &second.body, "a HIT differs from its MISS");
                }
                Ok(())
            })
        },
    );
}

#[test]
fn a_hit_answers_exactly_what_executing_the_request_would() {
    check(256, sibling_requests(), |runtime, requests| {
        runtime.block_on(async {
            let (shared, _) = app();
            for request in &requests {
                let reply = send(&shared, request.to_request()).await;
                check_answer(&request.method, &reply)?;
                if reply.x_cache() == "HIT" {
                    let (fresh, _) = app();
                    let executed = send(&fresh, request.to_request()).await;
                    prop_assert_eq!(executed.status, reply.status);
                    prop_assert_eq!(
                        &executed.body,
                        &reply.body,
                        "a HIT answered another request's response"
                    );
                    prop_assert_eq!(
                        executed.headers.get("content-type"),
                        reply.headers.get("content-type")
                    );
                }
            }
            Ok(())
        })
    });
}

#[test]
fn mutations_never_run_over_get_or_head() {
    let routes = select(&["/graphql", "/graphql/nocache", "/members"][..]);
    let accept = proptest::option::of(accept_header());
    let auth = proptest::option::of(authorization_header());
    check(
        128,
        (
            mutation_query_string(),
            select(vec![Method::GET, Method::HEAD]),
            routes,
            accept,
            auth,
        ),
        |runtime, (query, method, path, accept, auth)| {
            runtime.block_on(async {
                let (app, counters) = app();
                let mut builder = Request::builder()
                    .method(method.clone())
                    .uri(format!("{path}?{query}"));
                if let Some(accept) = accept
                    .as_deref()
                    .and_then(|a| a.parse::<http::HeaderValue>().ok())
                {
                    builder = builder.header("accept", accept);
                }
                if let Some(auth) = auth
                    .as_deref()
                    .and_then(|a| http::HeaderValue::from_bytes(a).ok())
                {
                    builder = builder.header("authorization", auth);
                }
                let reply = send(&app, builder.body(Body::empty()).unwrap()).await;
                check_answer(&method, &reply)?;
                prop_assert!(
                    !reply.status.is_success(),
                    "{method} {path}?{query} answered {}: {}",
                    reply.status,
                    reply.body
                );
                prop_assert_eq!(counters.executions(), 0, "the handler ran");
                Ok(())
            })
        },
    );
}

/// How a deep document is sent.
#[derive(Debug, Clone, Copy)]
enum Transport {
    PostJson,
    PostBatch,
    PostTextPlain,
    Get,
    Multipart,
}

fn deep_request(transport: Transport, path: &str, document: &str) -> Request<Body> {
    let one = json!({ "query": document }).to_string();
    let post = |content_type: &str, body: String| {
        Request::post(path)
            .header("content-type", content_type)
            .header("authorization", format!("Bearer {}", member("deep")))
            .body(Body::from(body))
            .unwrap()
    };
    match transport {
        Transport::PostJson => post("application/json", one),
        Transport::PostTextPlain => post("text/plain", one),
        Transport::PostBatch => post(
            "application/json",
            json!([{"query": "{ renderId }"}, {"query": document}]).to_string(),
        ),
        Transport::Multipart => post(
            "multipart/form-data; boundary=B",
            format!(
                "--B\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{one}\r\n\
                 --B\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{}}\r\n--B--\r\n"
            ),
        ),
        Transport::Get => {
            let mut req = get(path, None, &[("query", document)]);
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {}", member("deep")).parse().unwrap(),
            );
            req
        }
    }
}

#[test]
fn documents_nested_past_the_limit_are_refused_and_none_crashes() {
    let transports = select(
        &[
            Transport::PostJson,
            Transport::PostBatch,
            Transport::PostTextPlain,
            Transport::Get,
            Transport::Multipart,
        ][..],
    );
    let routes = select(&["/graphql", "/graphql/nocache", "/members"][..]);
    check(
        192,
        (deep_document(), transports, routes),
        |runtime, (document, transport, path)| {
            runtime.block_on(async {
                let (app, _) = app();
                let request = deep_request(transport, path, &document.text);
                let method = request.method().clone();
                let reply = send(&app, request).await;
                check_answer(&method, &reply)?;
                let refused = answered_by_layer(&reply)
                    && reply.status == StatusCode::BAD_REQUEST
                    && reply.code() == "BAD_REQUEST";
                if document.depth > MAX_NESTING {
                    prop_assert!(
                        refused,
                        "nesting {} passed on: {} {} {}",
                        document.depth,
                        reply.status,
                        reply.x_cache(),
                        reply.body
                    );
                } else if raw_bracket_depth(&document.text) <= RAW_NESTING {
                    // Past the raw bound (brackets inside strings and comments count too)
                    // the layer refuses by design, whatever the real nesting.
                    prop_assert!(!refused, "nesting {} refused", document.depth);
                }
                Ok(())
            })
        },
    );
}

/// The guard's last-resort bound: bracket nesting counted over the raw text, strings and
/// comments included (README, "Hostile input").
const RAW_NESTING: usize = 512;

fn raw_bracket_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for byte in text.bytes() {
        match byte {
            b'{' | b'[' | b'(' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// How often `renderId` has run in `app` so far.
async fn renders(app: &Router) -> u64 {
    let reply = send(app, query("/graphql/nocache", None, "{ renderId }")).await;
    reply.body["data"]["renderId"]
        .as_str()
        .and_then(|r| r.strip_prefix("render-"))
        .and_then(|n| n.parse().ok())
        .expect("renderId answers render-N")
}

/// The bound on expanded field selections the fragment properties configure.
const MAX_SELECTIONS: u64 = 1_000;

fn bounded_app() -> (Router, Counters) {
    app_with(builder().max_selections(MAX_SELECTIONS).build().unwrap())
}

#[test]
fn fragment_webs_cost_work_linear_in_their_size() {
    let routes = select(&["/graphql", "/graphql/nocache"][..]);
    check(64, (fragment_web(), routes), |runtime, (web, path)| {
        runtime.block_on(async {
            let (app, _) = bounded_app();
            let before = renders(&app).await;
            let reply = send(&app, query(path, None, &web.text)).await;
            check_answer(&Method::POST, &reply)?;
            // A document expanding past the bound never reaches the server.
            if !web.cyclic && web.leaves() > MAX_SELECTIONS {
                prop_assert!(
                    answered_by_layer(&reply),
                    "{} leaves passed on: {} {} {}",
                    web.leaves(),
                    reply.status,
                    reply.x_cache(),
                    reply.body
                );
            }
            // The probe itself ran once.
            let ran = renders(&app).await - before - 1;
            prop_assert!(
                ran <= MAX_SELECTIONS.max(web.text.len() as u64),
                "{} resolver runs for a {}-byte document ({} leaves), answered {} {}",
                ran,
                web.text.len(),
                web.leaves(),
                reply.status,
                reply.x_cache()
            );
            Ok(())
        })
    });
}

/// Documents 1k to 100k root fields or fragments wide (1 MiB at most) complete, and are
/// passed on uncached or refused by the layer. Their timing is the criterion benchmark's
/// concern; here a quadratic or exponential step would show as a test that does not finish.
#[tokio::test]
async fn growing_documents_complete_and_are_never_cached() {
    let (app, _) = app();
    let fields = |n: usize| {
        format!(
            "{{{} }}",
            (0..n).map(|i| format!(" f{i}")).collect::<String>()
        )
    };
    let fragments = |n: usize| {
        let spreads: String = (0..n).map(|i| format!(" ...F{i}")).collect();
        let definitions: String = (0..n)
            .map(|i| format!(" fragment F{i} on Query {{ f{i} }}"))
            .collect();
        format!("{{{spreads} }}{definitions}")
    };
    let documents = [
        fields(1_000),
        fields(10_000),
        fields(100_000),
        fragments(1_000),
        fragments(10_000),
        fragments(20_000),
    ];
    for document in &documents {
        let body = json!({ "query": document }).to_string();
        assert!(body.len() <= 1 << 20, "{}", body.len());
        for path in ["/graphql", "/graphql/nocache"] {
            let reply = send(&app, query(path, None, document)).await;
            assert!(allowed(reply.status), "{}", reply.status);
            // Passed on uncached, or refused by the layer (a 4xx, or a 200 with errors for
            // an `application/json` client).
            assert!(
                reply.x_cache() == "BYPASS"
                    || answered_by_layer(&reply) && is_graphql_error_body(&reply.body),
                "{} bytes: {} {}",
                document.len(),
                reply.status,
                reply.x_cache()
            );
        }
    }
    // Past the request bound: refused before anything reads it.
    let reply = send(&app, query("/graphql", None, &fields(200_000))).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(is_graphql_error_body(&reply.body));
}

// --- Regressions: the smallest known inputs for each property above ---------------------

/// `""""` is two empty strings to GraphQL; a scanner that reads every `"""` as an opening
/// block string stops counting there. At 2,000 levels this overflows the stack (in the
/// layer's own parse on cached routes and for GETs, in the server's otherwise).
#[tokio::test]
async fn quotes_before_deep_nesting_do_not_hide_it() {
    let (app, counters) = app();
    for kind in [
        Nesting::AfterQuadrupleQuote,
        Nesting::AfterTripleQuoteString,
    ] {
        let document = DeepDocument::new(kind, 100, 0);
        for transport in [Transport::PostJson, Transport::Get] {
            for path in ["/graphql", "/graphql/nocache"] {
                let reply = send(&app, deep_request(transport, path, &document.text)).await;
                assert_eq!(
                    (reply.status, reply.x_cache()),
                    (StatusCode::BAD_REQUEST, "-"),
                    "{kind:?} {transport:?} {path}: {}",
                    reply.body
                );
            }
        }
    }
    assert_eq!(counters.executions(), 0);
}

/// async-graphql asserts (panics) that an `operations` part is not itself multipart.
#[tokio::test]
async fn a_multipart_operations_part_of_a_multipart_type_does_not_panic() {
    let (app, _) = app();
    let body = "--B\r\nContent-Disposition: form-data; name=\"operations\"\r\n\
                Content-Type: multipart/mixed\r\n\r\n{\"query\":\"{ renderId }\"}\r\n--B--\r\n";
    for path in ["/graphql", "/graphql/nocache"] {
        let req = Request::post(path)
            .header("content-type", "multipart/form-data; boundary=B")
            .body(Body::from(body))
            .unwrap();
        let reply = send(&app, req).await;
        assert!(allowed(reply.status), "{path}: {}", reply.status);
    }
}

/// The same tree behind `[""""]`, which a scanner taking `"""` for a block string reads as
/// one string to the end of the document: it must still be counted (async-graphql walks
/// every spread path before it validates, so 4^14 paths take minutes).
#[tokio::test]
async fn quotes_before_fragment_spreads_do_not_hide_them() {
    let web = FragmentWeb::new(8, 4, false, false).hidden();
    for path in ["/graphql", "/graphql/nocache"] {
        let (app, _) = bounded_app();
        let reply = send(&app, query(path, None, &web.text)).await;
        assert!(
            answered_by_layer(&reply) && is_graphql_error_body(&reply.body),
            "{path}: 65,536 leaves passed on: {} {} {}",
            reply.status,
            reply.x_cache(),
            reply.body
        );
    }
}

/// Eleven fragments each spreading the next twice: 2,048 executions of one field for a
/// 470-byte document (2^25 take minutes).
#[tokio::test]
async fn an_exponential_fragment_tree_is_not_executed_in_full() {
    let web = FragmentWeb::new(11, 2, false, false);
    for path in ["/graphql", "/graphql/nocache"] {
        let (app, _) = bounded_app();
        let before = renders(&app).await;
        let reply = send(&app, query(path, None, &web.text)).await;
        let ran = renders(&app).await - before - 1;
        assert!(
            ran <= MAX_SELECTIONS,
            "{path}: {ran} runs for {} bytes, answered {} {}",
            web.text.len(),
            reply.status,
            reply.x_cache()
        );
    }
}
