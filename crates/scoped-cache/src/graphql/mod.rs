//! async-graphql glue: a GraphQL-over-HTTP handler, and the one line that hands verified
//! [`Claims`] to resolvers.
//!
//! # The handler
//!
//! [`GraphQL`] is a tower service for any async-graphql [`Executor`](async_graphql::Executor).
//! It reads `GET`/`HEAD` query parameters and `POST` `application/json` bodies (batches
//! too), puts the request's verified [`Claims`] into each GraphQL request's data, and
//! answers as the [GraphQL-over-HTTP specification](https://graphql.github.io/graphql-over-http/draft/)
//! and the `graphql-http` audit suite expect:
//!
//! ```no_run
//! use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Schema};
//! use axum::Router;
//! use scoped_cache::Claims;
//! use scoped_cache::graphql::GraphQL;
//!
//! struct Query;
//!
//! #[Object]
//! impl Query {
//!     async fn me(&self, ctx: &Context<'_>) -> Option<String> {
//!         ctx.data_opt::<Claims>()?.subject().map(str::to_owned)
//!     }
//! }
//!
//! # async fn run(layer: scoped_cache::ScopedCacheLayer) -> std::io::Result<()> {
//! let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
//! let app = Router::new()
//!     .route_service("/graphql", GraphQL::new(schema))
//!     .layer(layer);
//! axum::serve(tokio::net::TcpListener::bind("127.0.0.1:8000").await?, app).await
//! # }
//! ```
//!
//! Hand-written handlers extract a [`GraphQLRequest`] and answer with the
//! [`GraphQLResponse`] its [`execute`](GraphQLRequest::execute) returns; the claims are
//! already in the request's data:
//!
//! ```
//! use async_graphql::{EmptyMutation, EmptySubscription, Schema};
//! use axum::{Router, extract::State, routing::get};
//! use scoped_cache::graphql::{GraphQLRequest, GraphQLResponse};
//!
//! # #[derive(Default)] struct Query;
//! # #[async_graphql::Object] impl Query { async fn ok(&self) -> bool { true } }
//! type AppSchema = Schema<Query, EmptyMutation, EmptySubscription>;
//!
//! async fn graphql(State(schema): State<AppSchema>, request: GraphQLRequest) -> GraphQLResponse {
//!     request.execute(&schema).await
//! }
//!
//! let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
//! let app: Router = Router::new()
//!     .route("/graphql", get(graphql).post(graphql))
//!     .with_state(schema);
//! ```
//!
//! # Media types and status codes
//!
//! The response media type follows the request's `Accept` header(s) (quality values and
//! wildcards count): `application/graphql-response+json` when the client prefers it,
//! `application/json` when it prefers that, accepts anything (`*/*`) or sends no `Accept`;
//! `406` when it accepts neither. Both carry `charset=utf-8` and `Vary: accept`.
//!
//! | the request | `application/graphql-response+json` | `application/json` |
//! | --- | --- | --- |
//! | executed (with or without field errors, even `data: null`) | 200 | 200 |
//! | document does not parse | 400 | 200 |
//! | validation, unknown or ambiguous operation, variable coercion, schema limits, over `max_selections` | 400 | 200 |
//! | body is not JSON, or empty | 400 | 400 |
//! | no `query`; `query`/`operationName` not strings; `variables`/`extensions` not objects; empty batch | 400 | 400 |
//! | document nests brackets more than 256 deep (the parser recurses) | 400 | 400 |
//! | `GET`/`HEAD` of a mutation or subscription | 405, `Allow: POST` | 405, `Allow: POST` |
//! | any method but `GET`, `HEAD`, `POST` | 405 | 405 |
//! | `POST` not `application/json` (missing, multipart uploads, another charset) | 415 | 415 |
//! | body over the limit | 413 | 413 |
//!
//! Every error body is GraphQL-shaped, `{"errors":[{"message":..,"extensions":{"code":..}}]}`,
//! and a request refused before execution has no `data` entry. `GET`/`HEAD` never execute
//! anything but a query: the document is parsed and its operation checked first (a `GET`
//! with only a persisted-query hash is answered `PersistedQueryNotFound`, and the client
//! resends it with its document). Batches (a JSON array) run each request and answer `200`
//! with an array.
//!
//! The body limit is axum's [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit): 2 MiB
//! unless the router sets another (`.layer(DefaultBodyLimit::max(bytes))`). Documents
//! are parsed once, by the handler, and handed to async-graphql parsed; a response is
//! serialised once. A document that selects more than
//! [`max_selections`](GraphQL::max_selections) fields ([`DEFAULT_MAX_SELECTIONS`]) once
//! each fragment is counted where it is spread is refused before async-graphql sees it:
//! async-graphql's own validation walks every spread anew, so a few hundred bytes of
//! fragments would otherwise cost seconds before the schema's limits refuse them.
//!
//! # Claims without the handler
//!
//! async-graphql-axum does not pass HTTP request extensions to resolvers, so with its
//! extractors the verified [`Claims`] have to be put into the GraphQL request's data;
//! [`with_claims`] is that one line.
//!
//! ```
//! use async_graphql::{EmptyMutation, EmptySubscription, Schema};
//! use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
//! use axum::extract::State;
//! use scoped_cache::Claims;
//!
//! # #[derive(Default)] struct Query;
//! # #[async_graphql::Object] impl Query { async fn ok(&self) -> bool { true } }
//! type AppSchema = Schema<Query, EmptyMutation, EmptySubscription>;
//!
//! async fn graphql(
//!     State(schema): State<AppSchema>,
//!     claims: Option<Claims>,
//!     request: GraphQLRequest,
//! ) -> GraphQLResponse {
//!     schema
//!         .execute(scoped_cache::graphql::with_claims(request.into_inner(), claims))
//!         .await
//!         .into()
//! }
//! ```
//!
//! # Entity tags
//!
//! So that the layer can purge stored responses when the entities in them change, add
//! its [`EntityTags`] extension to the schema; clients need not select `id` or
//! `__typename` for it:
//!
//! ```
//! # use async_graphql::{EmptyMutation, EmptySubscription, Schema};
//! # #[derive(Default)] struct Query;
//! # #[async_graphql::Object] impl Query { async fn ok(&self) -> bool { true } }
//! # fn demo(layer: scoped_cache::ScopedCacheLayer) {
//! let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
//!     .extension(layer.entity_tags())
//!     .finish();
//! # let _ = schema;
//! # }
//! ```

pub(crate) mod document;
mod http;
pub(crate) mod nesting;
pub(crate) mod schema;
mod tags;

pub use self::http::{
    DEFAULT_MAX_SELECTIONS, GraphQL, GraphQLRejection, GraphQLRejectionKind, GraphQLRequest,
    GraphQLResponse,
};
pub use self::tags::{DEFAULT_MAX_ENTITY_TAGS, EntityTags};
pub use crate::rejection::{
    GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED, NOT_ACCEPTABLE, UNSUPPORTED_MEDIA_TYPE,
};

use crate::Claims;

/// Puts `claims` (if any) into the request's data, where resolvers read them with
/// `ctx.data_opt::<Claims>()`.
pub fn with_claims(
    request: async_graphql::Request,
    claims: Option<Claims>,
) -> async_graphql::Request {
    match claims {
        Some(claims) => request.data(claims),
        None => request,
    }
}
