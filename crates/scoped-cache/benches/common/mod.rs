//! The schema, handler and request driver both benchmarks use.
#![allow(dead_code)]

use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use http::Request;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use scoped_cache::{
    Claims, RoutePolicy, Rule, Scope, ScopedCacheLayer, ScopedCacheLayerBuilder, Verifier,
};
use tower::ServiceExt;

pub(crate) mod measure;

#[derive(SimpleObject)]
pub(crate) struct Post {
    id: u32,
    title: String,
}

pub(crate) struct Query;

#[Object]
impl Query {
    async fn public_posts(&self) -> Vec<Post> {
        (1..=5)
            .map(|id| Post {
                id,
                title: format!("post number {id}"),
            })
            .collect()
    }

    async fn me(&self, ctx: &Context<'_>) -> Option<String> {
        ctx.data_opt::<Claims>()?.subject().map(str::to_owned)
    }

    /// A new number per execution: two equal answers came from one execution.
    async fn render_id(&self) -> u64 {
        static RENDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }
}

pub(crate) type BenchSchema = Schema<Query, EmptyMutation, EmptySubscription>;

pub(crate) fn schema() -> BenchSchema {
    Schema::new(Query, EmptyMutation, EmptySubscription)
}

pub(crate) async fn graphql(
    State(schema): State<BenchSchema>,
    claims: Option<Claims>,
    req: GraphQLRequest,
) -> GraphQLResponse {
    schema
        .execute(scoped_cache::graphql::with_claims(req.into_inner(), claims))
        .await
        .into()
}

/// A POST of `query`, with a bearer token if given.
pub(crate) fn request(path: &str, token: Option<&str>, query: &str) -> Request<Body> {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Body::from(
        serde_json::json!({ "query": query }).to_string(),
    ))
    .unwrap()
}

/// One request through the router, body read to the end.
pub(crate) async fn call(app: &Router, req: Request<Body>) -> usize {
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

pub(crate) const SECRET: &[u8] = b"benchmark-secret-that-is-32-bytes";

/// The benchmarks' layer: HS256 (`iss` and `aud` = `bench`), an hour's max-age, `me`
/// scoped by `sub`, `/graphql` cached.
pub(crate) fn builder() -> ScopedCacheLayerBuilder {
    ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(Algorithm::HS256, SECRET)
                .issuer(["bench"])
                .audience(["bench"]),
        )
        .default_rule(Rule::new().max_age(std::time::Duration::from_secs(3600)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub"])))
        .route("/graphql", RoutePolicy::cached())
}

/// An HS256 token for `sub`, valid a day.
pub(crate) fn token(sub: &str) -> String {
    let now = get_current_timestamp();
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": sub, "iss": "bench", "aud": "bench", "iat": now, "exp": now + 86_400}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// The benchmarks' layer over `tier` (512 MiB of memory), and a router serving the
/// schema on `/graphql` through it.
#[cfg(feature = "redis")]
pub(crate) fn layered(tier: Option<scoped_cache::RedisTier>) -> (Router, ScopedCacheLayer) {
    let mut builder = builder().max_bytes(512 * 1024 * 1024);
    if let Some(tier) = tier {
        builder = builder.redis(tier);
    }
    let layer = builder.build().unwrap();
    let schema: BenchSchema = Schema::build(Query, EmptyMutation, EmptySubscription)
        .extension(layer.entity_tags())
        .finish();
    let router = Router::new()
        .route("/graphql", axum::routing::post(graphql))
        .with_state(schema)
        .layer(layer.clone());
    (router, layer)
}
