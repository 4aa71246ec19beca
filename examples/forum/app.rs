//! The forum app: schema, handler, and the scoped-cache layer. Shared by the example's
//! `main` and the end-to-end tests, so the tests check the demo itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::Redirect;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use metrics_exporter_prometheus::PrometheusHandle;
use scoped_cache::admin::AdminToken;
use scoped_cache::graphql::{GraphQLRequest, GraphQLResponse};
use scoped_cache::{
    BuildError, JwksSource, RoutePolicy, Rule, Scope, ScopedCacheLayer, ScopedCacheLayerBuilder,
    Verifier,
};

use crate::schema::{self, Forum, ForumSchema};

pub(crate) const ISSUER: &str = "forum-demo";
pub(crate) const AUDIENCE: &str = "forum-api";

/// Tokens signed with the shared HS256 secret, issued by `forum-demo`.
pub(crate) fn hmac_verifier(secret: &[u8]) -> Verifier {
    Verifier::hmac(Algorithm::HS256, secret).issuer([ISSUER])
}

/// Tokens signed by the keys of a JWKS. For an OIDC source the issuer is the source's;
/// for a plain JWKS URL it is `forum-demo`.
pub(crate) fn jwks_verifier(source: JwksSource) -> Verifier {
    if source.issuer().is_some() {
        Verifier::jwks(source)
    } else {
        Verifier::jwks(source).issuer([ISSUER])
    }
}

/// The layer the forum runs behind, with the forum's audience and leeway on `verifier`.
// The end-to-end tests build the demo's layer with it.
#[allow(dead_code)]
pub(crate) fn layer(verifier: Verifier) -> Result<ScopedCacheLayer, BuildError> {
    builder(verifier).build()
}

/// The forum's layer settings; `main` adds the Redis tier when `REDIS_URL` is set.
/// `examples/forum/forum.toml` holds the same settings (a test keeps them equal).
pub(crate) fn builder(verifier: Verifier) -> ScopedCacheLayerBuilder {
    with_schema(ScopedCacheLayer::builder())
        .verifier(
            verifier
                .audience([AUDIENCE])
                .leeway(Duration::from_secs(30)),
        )
        .default_rule(Rule::new().max_age(Duration::from_secs(60)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub", "name", "role"])))
        .rule(Rule::root_field("Query.memberPosts").scope(Scope::claims(["role"])))
        .rule(Rule::root_field("Query.post").scope(Scope::claims(["role"])))
        .rule(
            Rule::root_field("Query.ticker")
                .max_age(Duration::from_secs(2))
                .stale_while_revalidate(Duration::from_secs(30)),
        )
        // A new post belongs at the top of every list of posts. (Entries holding a post
        // that a mutation returns are purged anyway: the schema tags them.)
        .invalidate("Mutation.createPost", ["Post"])
        // Served by scoped_cache::graphql: one entry per media type, not per Accept spelling.
        .route("/graphql", RoutePolicy::cached().negotiated_accept())
        .route("/graphql/nocache", RoutePolicy::verify_only())
        .default_route(RoutePolicy::passthrough())
}

/// What only code can give a builder: the schema. Rules are checked against it, so a
/// misspelt root field fails at start-up, from code or from a file.
pub(crate) fn with_schema(builder: ScopedCacheLayerBuilder) -> ScopedCacheLayerBuilder {
    builder.schema(&schema::build(Arc::default(), None))
}

#[derive(Clone)]
struct AppState {
    schema: ForumSchema,
    forum: Arc<Forum>,
}

/// The whole app, with the layer applied to every route, without the admin routes.
#[allow(dead_code)] // The end-to-end tests serve it.
pub(crate) fn router(forum: Arc<Forum>, layer: ScopedCacheLayer) -> Router {
    router_with_admin(forum, layer, None, None)
}

/// The whole app; with an admin token, the operators' routes are mounted at `/admin`
/// (`POST /admin/purge`, `GET /admin/stats`, the live page at `GET /admin/`), outside the
/// layer: their credential is not a JWT. `GET /ready` answers readiness probes; with a
/// Prometheus recorder, `GET /metrics` serves its text.
pub(crate) fn router_with_admin(
    forum: Arc<Forum>,
    layer: ScopedCacheLayer,
    admin: Option<AdminToken>,
    metrics: Option<PrometheusHandle>,
) -> Router {
    let state = AppState {
        schema: schema::build(Arc::clone(&forum), Some(layer.entity_tags())),
        forum,
    };
    let app = Router::new()
        .route("/graphql", get(graphql).post(graphql))
        .route("/graphql/nocache", get(graphql).post(graphql))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
        .layer(layer.clone())
        // Outside the layer: probes and scrapers carry no JWT.
        .route("/ready", {
            let layer = layer.clone();
            get(move || ready(layer.clone()))
        });
    let app = match metrics {
        Some(handle) => app.route("/metrics", get(move || std::future::ready(handle.render()))),
        None => app,
    };
    match admin {
        Some(token) => app
            .nest("/admin", scoped_cache::admin::router(&layer, token))
            // The stats page is the router's `/`, which is `/admin` once nested.
            .route("/admin/", get(|| async { Redirect::permanent("/admin") })),
        None => app,
    }
}

/// `GET /ready`: `200` when the layer can serve with its guarantees, else `503`; the
/// body says which part is not ready.
async fn ready(layer: ScopedCacheLayer) -> (StatusCode, Json<scoped_cache::Readiness>) {
    let readiness = layer.readiness().await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

/// GraphQL over HTTP with scoped-cache's extractor: the verified claims are already in the
/// request's data, the response takes the media type the client accepts, and GET or HEAD
/// never runs a mutation. Requests it refuses never get here, so only executions count.
async fn graphql(State(state): State<AppState>, request: GraphQLRequest) -> GraphQLResponse {
    state.forum.executions.fetch_add(1, Ordering::Relaxed);
    request.execute(&state.schema).await
}

/// Mints a forum token, as the forum's identity provider would.
pub(crate) fn mint(
    secret: &[u8],
    sub: &str,
    name: &str,
    role: &str,
    valid_for: Duration,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "name": name,
        "role": role,
        "iat": now.as_secs(),
        "exp": (now + valid_for).as_secs(),
        // A distinct id per token, so a refreshed token differs in more than its times.
        "jti": format!("{}-{}", now.as_nanos(), sub),
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}
