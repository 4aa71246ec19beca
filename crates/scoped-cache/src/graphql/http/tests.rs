use async_graphql::{EmptySubscription, Object, Schema, SimpleObject};
use axum::Router;
use axum::routing::post;
use http::Request;
use http::header::ACCEPT;
use tower::ServiceExt;

use super::*;
use crate::rejection::{
    BAD_REQUEST, GRAPHQL_PARSE_FAILED, NOT_ACCEPTABLE, PERSISTED_QUERY_NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
};

struct Query;

#[derive(SimpleObject)]
struct Item {
    id: i32,
}

#[Object]
impl Query {
    async fn hello(&self) -> &str {
        "world"
    }
    async fn item(&self, id: i32) -> async_graphql::Result<Item> {
        if id < 0 {
            return Err("no such item".into());
        }
        Ok(Item { id })
    }
    async fn subject(&self, ctx: &async_graphql::Context<'_>) -> Option<String> {
        ctx.data_opt::<Claims>()?.subject().map(str::to_owned)
    }
}

struct Mutation;

#[Object]
impl Mutation {
    async fn touch(&self) -> bool {
        true
    }
}

fn service() -> GraphQL<Schema<Query, Mutation, EmptySubscription>> {
    GraphQL::new(Schema::new(Query, Mutation, EmptySubscription))
}

async fn call(req: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
    let response = service().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!("not JSON: {}", String::from_utf8_lossy(&bytes));
    });
    (parts.status, parts.headers, json)
}

fn post_json(accept: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post("/graphql").header(CONTENT_TYPE, "application/json");
    if let Some(accept) = accept {
        builder = builder.header(ACCEPT, accept);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn get(accept: &str, query: &str) -> Request<Body> {
    Request::get(format!(
        "/graphql?{}",
        serde_urlencoded::to_string([("query", query)]).unwrap()
    ))
    .header(ACCEPT, accept)
    .body(Body::empty())
    .unwrap()
}

const GRJ: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

#[tokio::test]
async fn post_answers_in_the_accepted_media_type() {
    for (accept, content_type) in [
        (Some(JSON), "application/json; charset=utf-8"),
        (None, "application/json; charset=utf-8"),
        (Some("*/*"), "application/json; charset=utf-8"),
        (
            Some(GRJ),
            "application/graphql-response+json; charset=utf-8",
        ),
    ] {
        let (status, headers, body) = call(post_json(accept, r#"{"query":"{ hello }"}"#)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], content_type, "{accept:?}");
        assert_eq!(body, serde_json::json!({"data": {"hello": "world"}}));
    }
}

#[tokio::test]
async fn unacceptable_is_406_graphql_shaped() {
    let (status, headers, body) =
        call(post_json(Some("text/html"), r#"{"query":"{ hello }"}"#)).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(headers[CONTENT_TYPE], "application/json; charset=utf-8");
    assert_eq!(body["errors"][0]["extensions"]["code"], NOT_ACCEPTABLE);
}

#[tokio::test]
async fn request_errors_have_no_data_and_media_dependent_status() {
    let cases = [
        // (body, GRJ status, JSON status, code)
        (r#"{"query":"{"}"#, 400, 200, GRAPHQL_PARSE_FAILED),
        (
            r#"{"query":"{ nope }"}"#,
            400,
            200,
            GRAPHQL_VALIDATION_FAILED,
        ),
        (
            r#"{"query":"query Q($id: Int!) { item(id: $id) { id } }","variables":{"id":"x"}}"#,
            400,
            200,
            GRAPHQL_VALIDATION_FAILED,
        ),
        (
            r#"{"query":"{ hello }","operationName":"Nope"}"#,
            400,
            200,
            GRAPHQL_VALIDATION_FAILED,
        ),
        (r#"{ "not a JSON"#, 400, 400, BAD_REQUEST),
        (r#"{"qeury":"{ hello }"}"#, 400, 400, BAD_REQUEST),
        (r#"{"query":{"obj":"ect"}}"#, 400, 400, BAD_REQUEST),
        (
            r#"{"query":"{ hello }","variables":"x"}"#,
            400,
            400,
            BAD_REQUEST,
        ),
        (
            r#"{"query":"{ hello }","operationName":0}"#,
            400,
            400,
            BAD_REQUEST,
        ),
        (
            r#"{"query":"{ hello }","extensions":[1]}"#,
            400,
            400,
            BAD_REQUEST,
        ),
        (r#"[]"#, 400, 400, BAD_REQUEST),
        ("", 400, 400, BAD_REQUEST),
    ];
    for (body, graphql_status, json_status, code) in cases {
        for (accept, status) in [(GRJ, graphql_status), (JSON, json_status)] {
            let (got, _, json) = call(post_json(Some(accept), body)).await;
            assert_eq!(got.as_u16(), status, "{body} as {accept}");
            assert_eq!(json["errors"][0]["extensions"]["code"], code, "{body}");
            assert!(json.get("data").is_none(), "{body}: {json}");
            assert!(json["errors"][0]["message"].is_string());
        }
    }
}

#[tokio::test]
async fn field_errors_are_200_with_data() {
    let (status, _, body) = call(post_json(
        Some(GRJ),
        r#"{"query":"{ hello item(id: -1) { id } }"}"#,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["hello"], "world");
    assert_eq!(body["errors"][0]["path"][0], "item");
}

#[tokio::test]
async fn null_variables_operation_name_and_extensions_are_absent() {
    let body = r#"{"query":"{ hello }","variables":null,"operationName":null,"extensions":null,"other":1}"#;
    let (status, _, json) = call(post_json(Some(JSON), body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, serde_json::json!({"data": {"hello": "world"}}));
}

#[tokio::test]
async fn get_runs_queries_and_refuses_everything_else() {
    let (status, _, body) = call(get(GRJ, "{ hello }")).await;
    assert_eq!(
        (status, body["data"]["hello"].as_str()),
        (StatusCode::OK, Some("world"))
    );

    for method in [Method::GET, Method::HEAD] {
        let mut req = get(GRJ, "mutation { touch }");
        *req.method_mut() = method.clone();
        let response = service().oneshot(req).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(response.headers()[ALLOW], "POST");
    }
    let (status, _, body) = call(get(JSON, "query A { hello } mutation B { touch }")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        GRAPHQL_VALIDATION_FAILED
    );
    let (status, _, _) = call(get(GRJ, "query A { hello } mutation B { touch }")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = call(get(GRJ, "{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        GRAPHQL_PARSE_FAILED
    );
}

#[tokio::test]
async fn get_with_only_a_persisted_query_hash_asks_for_the_document() {
    let ext = r#"{"persistedQuery":{"version":1,"sha256Hash":"abc"}}"#;
    let uri = format!(
        "/graphql?{}",
        serde_urlencoded::to_string([("extensions", ext)]).unwrap()
    );
    let (status, _, body) = call(Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        PERSISTED_QUERY_NOT_FOUND
    );
}

#[tokio::test]
async fn other_methods_and_media_types_are_refused() {
    let put = Request::put("/graphql").body(Body::empty()).unwrap();
    let response = service().oneshot(put).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[ALLOW], "GET, HEAD, POST");

    for content_type in [
        None,
        Some("multipart/form-data; boundary=x"),
        Some("text/plain"),
        Some("application/json; charset=latin1"),
    ] {
        let mut builder = Request::post("/graphql");
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        let req = builder
            .body(Body::from(r#"{"query":"{ hello }"}"#))
            .unwrap();
        let (status, _, body) = call(req).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            UNSUPPORTED_MEDIA_TYPE
        );
    }
    let req = Request::post("/graphql")
        .header(CONTENT_TYPE, "Application/JSON; Charset=\"UTF-8\"")
        .body(Body::from(r#"{"query":"{ hello }"}"#))
        .unwrap();
    assert_eq!(call(req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bodies_beyond_the_default_limit_are_413() {
    let big = format!(
        r#"{{"query":"{{ hello }}","pad":"{}"}}"#,
        "x".repeat(3 << 20)
    );
    let (status, _, body) = call(post_json(None, &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errors"][0]["extensions"]["code"], BAD_REQUEST);

    // The router's DefaultBodyLimit applies.
    let app = Router::new()
        .route_service("/graphql", service())
        .layer(axum::extract::DefaultBodyLimit::max(64));
    let padded = format!(r#"{{"query":"{{ hello }}","pad":"{}"}}"#, "x".repeat(64));
    let response = app.oneshot(post_json(None, &padded)).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn deeply_nested_documents_are_refused_before_parsing() {
    let deep = format!(r#"{{"query":"{}"}}"#, "{a".repeat(100_000));
    let (status, _, body) = call(post_json(Some(JSON), &deep)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["message"], "document nests too deeply");
}

#[tokio::test]
async fn parse_error_messages_are_bounded() {
    let long = format!(r#"{{"query":"{{ hello {} !"}}"#, "x ".repeat(10_000));
    let (_, _, body) = call(post_json(Some(JSON), &long)).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(),
        "{}",
        message.len()
    );
}

#[tokio::test]
async fn batches_run_each_request() {
    let body = r#"[{"query":"{ hello }"},{"query":"{"},{"query":"{ item(id: 2) { id } }"}]"#;
    let (status, _, json) = call(post_json(Some(GRJ), body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json[0]["data"]["hello"], "world");
    assert!(json[1].get("data").is_none());
    assert_eq!(
        json[1]["errors"][0]["extensions"]["code"],
        GRAPHQL_VALIDATION_FAILED
    );
    assert_eq!(json[2]["data"]["item"]["id"], 2);
}

#[tokio::test]
async fn claims_reach_resolvers() {
    let claims = Claims::new(
        serde_json::json!({"sub": "alice"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let mut req = post_json(Some(JSON), r#"{"query":"{ subject }"}"#);
    req.extensions_mut().insert(claims);
    let (_, _, body) = call(req).await;
    assert_eq!(body["data"]["subject"], "alice");
}

#[tokio::test]
async fn extractor_and_response_work_in_a_handler() {
    let schema = Schema::new(Query, Mutation, EmptySubscription);
    let app = Router::new().route(
        "/graphql",
        post(|request: GraphQLRequest| async move { request.data(7_u8).execute(&schema).await }),
    );
    let response = app
        .oneshot(post_json(Some(GRJ), r#"{"query":"{ hello }"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/graphql-response+json; charset=utf-8"
    );
}

#[tokio::test]
async fn documents_over_the_selection_limit_are_refused_before_execution() {
    let limited = || service().max_selections(3);
    let body = r#"{"query":"{ a: hello b: hello c: hello d: hello }"}"#;
    for (accept, status) in [(GRJ, StatusCode::BAD_REQUEST), (JSON, StatusCode::OK)] {
        let response = limited()
            .oneshot(post_json(Some(accept), body))
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(json.get("data").is_none());
        assert_eq!(
            json["errors"][0]["extensions"]["code"],
            GRAPHQL_VALIDATION_FAILED
        );
    }
    let batch = r#"[{"query":"{ hello }"},{"query":"{ a: hello b: hello c: hello d: hello }"},{"query":"{ item(id: 1) { id } }"}]"#;
    let response = limited()
        .oneshot(post_json(Some(GRJ), batch))
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json[0]["data"]["hello"], "world");
    assert_eq!(
        json[1]["errors"][0]["extensions"]["code"],
        GRAPHQL_VALIDATION_FAILED
    );
    assert_eq!(json[2]["data"]["item"]["id"], 1);
}

#[test]
fn content_type_checks() {
    let check = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        is_utf8_json(&headers)
    };
    assert!(check("application/json"));
    assert!(check("application/json;charset=utf-8"));
    assert!(check("application/json; boundary=x"));
    assert!(!check("application/jsonx"));
    assert!(!check("application/graphql"));
    assert!(!check("application/json; charset=utf-16"));
    let mut twice = HeaderMap::new();
    twice.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    twice.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    assert!(!is_utf8_json(&twice));
}
