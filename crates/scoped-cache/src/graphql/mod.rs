//! async-graphql glue.
//!
//! async-graphql-axum does not pass HTTP request extensions to resolvers, so the verified
//! [`Claims`] have to be put into the GraphQL request's data; [`with_claims`] is that one line.
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

pub(crate) mod document;
pub(crate) mod schema;

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
