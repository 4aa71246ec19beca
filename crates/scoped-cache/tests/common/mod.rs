//! Shared fixtures: a real async-graphql schema behind an axum router with the layer.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_graphql::{
    Context, EmptySubscription, Error, ErrorExtensions, Object, Schema, SimpleObject,
};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use scoped_cache::{
    Claims, RoutePolicy, Rule, Scope, ScopedCacheLayer, ScopedCacheLayerBuilder, Verifier,
};
use serde_json::{Value, json};
use tower::ServiceExt;

pub(crate) const SECRET: &[u8] = b"integration-test-secret-32-bytes!";
pub(crate) const ISSUER: &str = "forum-demo";
pub(crate) const AUDIENCE: &str = "forum-api";

/// Counts executions of the schema: a HIT must not move it.
#[derive(Clone, Default)]
pub(crate) struct Counters {
    pub(crate) executions: Arc<AtomicU64>,
    renders: Arc<AtomicU64>,
}

impl Counters {
    pub(crate) fn executions(&self) -> u64 {
        self.executions.load(Ordering::SeqCst)
    }
}

#[derive(SimpleObject)]
pub(crate) struct Me {
    sub: Option<String>,
    name: Option<String>,
}

pub(crate) struct Query;

fn role(ctx: &Context<'_>) -> Option<String> {
    ctx.data_opt::<Claims>()?
        .claim_str("role")
        .map(str::to_owned)
}

#[Object]
impl Query {
    #[graphql(cache_control(private))]
    async fn me(&self, ctx: &Context<'_>) -> Option<Me> {
        let claims = ctx.data_opt::<Claims>()?;
        Some(Me {
            sub: claims.subject().map(str::to_owned),
            name: claims.claim_str("name").map(str::to_owned),
        })
    }

    #[graphql(cache_control(max_age = 30, private))]
    async fn member_posts(&self, ctx: &Context<'_>) -> Result<Vec<String>, Error> {
        match role(ctx).as_deref() {
            Some("member" | "admin") => {
                Ok(vec!["members: roadmap".into(), "members: budget".into()])
            }
            _ => Err(Error::new("members only").extend_with(|_, e| e.set("code", "FORBIDDEN"))),
        }
    }

    #[graphql(cache_control(max_age = 60))]
    async fn public_posts(&self, limit: Option<i32>) -> Vec<String> {
        let all = ["welcome", "rules", "release", "caching", "meetup"];
        all.iter()
            .take(limit.unwrap_or(5).max(0) as usize)
            .map(|s| s.to_string())
            .collect()
    }

    #[graphql(cache_control(max_age = 5))]
    async fn short_lived(&self) -> bool {
        true
    }

    #[graphql(cache_control(no_cache))]
    async fn never_cached(&self) -> bool {
        true
    }

    #[graphql(cache_control(private))]
    async fn private_unscoped(&self) -> bool {
        true
    }

    /// Reads `sub`, but no rule scopes it: must never be stored.
    async fn leaky(&self, ctx: &Context<'_>) -> Option<String> {
        ctx.data_opt::<Claims>()?.subject().map(str::to_owned)
    }

    async fn org(&self, ctx: &Context<'_>) -> Option<String> {
        let path = scoped_cache::ClaimPath::parse("org.id").ok()?;
        ctx.data_opt::<Claims>()?.get_str(&path).map(str::to_owned)
    }

    async fn echo(&self, a: Option<i32>, b: Option<String>) -> String {
        format!("{a:?}/{b:?}")
    }

    /// Takes a while, so concurrent requests overlap.
    async fn slow(&self, fail: Option<bool>) -> Result<bool, Error> {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if fail.unwrap_or(false) {
            return Err(Error::new("slow failure"));
        }
        Ok(true)
    }

    async fn boom(&self) -> Result<bool, Error> {
        Err(Error::new("boom"))
    }

    async fn render_id(&self, ctx: &Context<'_>) -> String {
        let counters = ctx.data_unchecked::<Counters>();
        format!("render-{}", counters.renders.fetch_add(1, Ordering::SeqCst))
    }
}

pub(crate) struct Mutation;

#[Object]
impl Mutation {
    async fn touch(&self) -> bool {
        true
    }
}

pub(crate) type TestSchema = Schema<Query, Mutation, EmptySubscription>;

#[derive(Clone)]
struct AppState {
    schema: TestSchema,
    counters: Counters,
}

async fn graphql(
    State(state): State<AppState>,
    claims: Option<Claims>,
    req: GraphQLRequest,
) -> GraphQLResponse {
    state.counters.executions.fetch_add(1, Ordering::SeqCst);
    state
        .schema
        .execute(scoped_cache::graphql::with_claims(req.into_inner(), claims))
        .await
        .into()
}

/// The builder every test starts from: the demo's rules and routes.
pub(crate) fn builder() -> ScopedCacheLayerBuilder {
    ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(Algorithm::HS256, SECRET)
                .issuer([ISSUER, "second-idp"])
                .audience([AUDIENCE]),
        )
        .default_rule(Rule::new().max_age(Duration::from_secs(60)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub", "name", "role"])))
        .rule(Rule::root_field("Query.memberPosts").scope(Scope::claims(["role"])))
        .rule(Rule::root_field("Query.privateUnscoped"))
        .rule(Rule::root_field("Query.org").scope(Scope::claims(["org.id"])))
        .rule(Rule::operation("Debug").bypass())
        .route("/graphql", RoutePolicy::cached())
        .route("/graphql/nocache", RoutePolicy::verify_only())
        .route("/members", RoutePolicy::cached().require_auth(true))
        .route("/t/{tenant}/graphql", RoutePolicy::cached())
}

pub(crate) fn app_with(layer: ScopedCacheLayer) -> (Router, Counters) {
    let counters = Counters::default();
    let schema = Schema::build(Query, Mutation, EmptySubscription)
        .data(counters.clone())
        .finish();
    let state = AppState {
        schema,
        counters: counters.clone(),
    };
    let router = Router::new()
        .route("/graphql", routing::get(graphql).post(graphql))
        .route("/graphql/nocache", routing::get(graphql).post(graphql))
        .route("/members", routing::get(graphql).post(graphql))
        .route("/t/{tenant}/graphql", routing::post(graphql))
        .route(
            "/whoami",
            routing::get(|claims: Claims| async move {
                claims.subject().unwrap_or_default().to_owned()
            }),
        )
        .with_state(state)
        .layer(layer);
    (router, counters)
}

pub(crate) fn app() -> (Router, Counters) {
    app_with(builder().build().unwrap())
}

/// A token for `claims` merged over a valid `iss`, `aud`, `exp` and a unique `jti`.
pub(crate) fn token(claims: Value) -> String {
    token_with(Algorithm::HS256, SECRET, claims)
}

pub(crate) fn token_with(alg: Algorithm, secret: &[u8], claims: Value) -> String {
    static JTI: AtomicU64 = AtomicU64::new(0);
    let now = get_current_timestamp();
    let mut full = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600 + JTI.load(Ordering::SeqCst),
        "jti": format!("jti-{}", JTI.fetch_add(1, Ordering::SeqCst)),
    });
    for (k, v) in claims.as_object().cloned().unwrap_or_default() {
        full[k] = v;
    }
    encode(&Header::new(alg), &full, &EncodingKey::from_secret(secret)).unwrap()
}

pub(crate) fn member(sub: &str) -> String {
    token(json!({"sub": sub, "name": sub.to_uppercase(), "role": "member"}))
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    /// Why the answer was not a fresh hit, as the layer put it into the response's
    /// extensions.
    #[allow(dead_code)]
    pub(crate) reason: Option<scoped_cache::Reason>,
}

impl Reply {
    pub(crate) fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    pub(crate) fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("-")
    }
}

pub(crate) async fn send(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let reason = response.extensions().get::<scoped_cache::Reason>().copied();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply {
        status,
        headers,
        body,
        reason,
    }
}

pub(crate) fn post(path: &str, token: Option<&str>, body: Value) -> Request<Body> {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Body::from(body.to_string())).unwrap()
}

pub(crate) fn query(path: &str, token: Option<&str>, query: &str) -> Request<Body> {
    post(path, token, json!({ "query": query }))
}

pub(crate) fn get(path: &str, token: Option<&str>, params: &[(&str, &str)]) -> Request<Body> {
    let qs = serde_urlencoded::to_string(params).unwrap();
    let mut req = Request::get(format!("{path}?{qs}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Body::empty()).unwrap()
}
#[cfg(feature = "redis")]
pub(crate) mod fleet;
pub(crate) mod hostile;
#[cfg(feature = "redis")]
pub(crate) mod proxy;
#[cfg(feature = "redis")]
pub(crate) mod redis_cluster;
#[cfg(feature = "redis")]
pub(crate) mod redis_sentinel;
#[cfg(feature = "redis")]
pub(crate) mod redis_server;
#[cfg(feature = "redis")]
pub(crate) mod tls;
#[cfg(feature = "redis")]
pub(crate) mod topology;
