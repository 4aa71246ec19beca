//! A tower layer for axum + async-graphql servers that verifies bearer JWTs, hands the
//! verified claims to handlers and resolvers, and caches GraphQL responses in buckets
//! chosen by claim values, looked up before execution.
//!
//! A refreshed token with the same claim values still hits; everyone with the same
//! values shares a bucket; no bucket ever serves another bucket's data.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Schema};
//! use axum::Router;
//! use scoped_cache::graphql::GraphQL;
//! use jsonwebtoken::Algorithm;
//! use scoped_cache::{Claims, RoutePolicy, Rule, Scope, ScopedCacheLayer, Verifier};
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
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
//! let layer = ScopedCacheLayer::builder()
//!     .verifier(
//!         Verifier::hmac(Algorithm::HS256, std::env::var("JWT_SECRET")?)
//!             .issuer(["forum-demo"])
//!             .audience(["forum-api"]),
//!     )
//!     .schema(&schema) // a rule naming a root field the schema lacks fails build()
//!     .default_rule(Rule::new().max_age(Duration::from_secs(60)))
//!     .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub"])))
//!     .route("/graphql", RoutePolicy::cached())
//!     .build()?;
//!
//! // GraphQL over HTTP; verified `Claims` reach resolvers as `ctx.data_opt::<Claims>()`.
//! let app = Router::new().route_service("/graphql", GraphQL::new(schema)).layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What happens to a request
//!
//! 1. The route's [`RoutePolicy`] is found (axum's `MatchedPath`, the URI the client sent,
//!    or the URI the layer sees).
//! 2. The bearer token (`Authorization`, or a cookie) is verified; failures are a
//!    GraphQL-shaped 401 (see [`AuthError`]). Verified [`Claims`] go to the handler.
//! 3. The request is checked before anything parses it: bodies of any type are bounded,
//!    documents are bounded in nesting and in fields once fragments are expanded, GET and
//!    HEAD never carry a mutation, a cookie token never carries a cross-site request. Every
//!    check is linear; refusals are GraphQL-shaped 4xx in the media type the client accepts.
//! 4. On a cached route, the GraphQL request (POST JSON or GET) is read once per distinct
//!    text: its operation, root fields and [`Rule`]s give a decision and a key.
//! 5. The key combines the URI the client sent, `Host`, every `Accept` line, the key
//!    headers, the canonical document, operation name, canonical variables and extensions,
//!    and the **bucket**: the values of the scoped claims (and `iss`). A fresh entry is
//!    served with `x-cache: HIT` without running anything.
//! 6. On a miss the schema runs once, however many requests for the key arrive meanwhile
//!    (they wait for its stored response); a clean `200` result is stored for
//!    `min(rule max-age, response max-age)`.
//! 7. Every answer gets its cache headers in one place: `x-cache`, `Cache-Control:
//!    private` where the answer is scoped, one `Vary` line, `Age` and a bucket-bound `ETag`.
//!
//! In the source, one function runs these steps in this order, `Pipeline::handle` in
//! `src/pipeline/mod.rs`, and each step is a module beside it: `intake` (checks and
//! preparation), `lookup` (key, bucket, coalescing), `miss` (execution), `keep` (what is
//! stored, a pure decision), `respond` (headers) and `uncached` (bypasses and the purges
//! mutations make). Token verification (`jwt/`) and the cache (`cache/`, `tier/`) share
//! HTTP formats through a leaf module (`wire/`), never each other.
//!
//! # Freshness
//!
//! Entries leave the cache when their max-age ends, when a mutation changes what they hold,
//! or when they are purged: [`EntityTags`](graphql::EntityTags) (one line on the schema:
//! `.extension(layer.entity_tags())`) tags each entry with the entities it holds;
//! [`invalidate`](ScopedCacheLayerBuilder::invalidate) declares what a mutation field
//! changes; [`ScopedCacheLayer::purge`] removes entries by tag, type, entity, operation,
//! claim scope or all, and [`admin::router`] serves that to operators. [`Rule`]s may serve
//! stale answers while revalidating or when revalidation fails (`x-cache: STALE`), cached
//! answers carry bucket-bound `ETag`s (`304` on `If-None-Match`), and [`Scope::auto`] learns
//! a field's scope from the claims its resolvers read.
//!
//! # How scoping keeps data private
//!
//! - Buckets are built from claim values, never from the token, and never from `exp`,
//!   `iat`, `nbf` or `jti`. Values are length-prefixed and canonical, so no two distinct
//!   value sets share a bucket. Claim-scoped buckets include `iss`. Anonymous and
//!   authenticated callers never share one.
//! - Every claim a resolver reads through [`Claims`] is recorded. If the response read a
//!   claim the operation's scope does not cover, it is served but **not stored**, and a
//!   warning names the claim path. A too-narrow scope costs hits, never privacy.
//! - Responses async-graphql marks `private` are stored only under a claim scope.
//! - Scoped responses, and uncached answers to authenticated callers, leave with
//!   `Cache-Control: private` and `Vary: Authorization`, so a CDN in front cannot share them.
//! - Mutations, subscriptions, errors, non-200s, `Set-Cookie`, `no-store`, and responses
//!   that vary on a header outside the key are never stored; a hit replays only
//!   representation headers (`Content-Type`, `Cache-Control`, ...).
//!
//! The limit: reads that bypass [`Claims`] (a resolver that looks at raw headers, or a
//! database keyed by something the token does not carry) are invisible to the check. Keep
//! request-dependent data behind claims.
//!
//! # Keys
//!
//! Static keys ([`Key`], [`Verifier::hmac`], PEM, JWK) or a [`JwksSource`]: a JWKS URL or
//! OIDC discovery, shared by every verifier that holds it, refreshed in the background,
//! rate-limited against forged-`kid` floods, and trusted for a bounded time while the
//! provider is down. A verified-token cache takes signature verification off repeated
//! requests.
//!
//! # Feature flags
//!
//! - `redis`: Redis as the shared tier (`RedisTier`): responses, tags, purges,
//!   revocations and fleet-wide coalescing, shared by every instance. Off by default.
//! - `config`: [`config::Config`], the builder's settings read from a TOML file (secrets
//!   from the environment variables it names). Off by default.
//!
//! # Operating it
//!
//! Every answer that is not a fresh hit carries a [`Reason`] (in its extensions, the
//! metrics, the request's span, and the [`X_CACHE_REASON`] header for whoever
//! [`Explain`] allows). Metrics go through the [`metrics`] facade (names in
//! [`observe::names`]); [`ScopedCacheLayer::readiness`] answers readiness probes;
//! [`admin::router`] serves the stats as JSON and a live page.
//!
//! The crate verifies with jsonwebtoken's `aws_lc_rs` backend and installs it as the
//! process default at `build()`, so a dependency that turns on jsonwebtoken's
//! `rust_crypto` feature cannot make verification panic.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod admin_token;
mod backend;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals;
mod builder;
mod cache;
mod canonical;
mod claims;
mod clock;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
mod error;
mod future;
pub mod graphql;
mod guard;
mod hash;
mod health;
mod jwt;
mod layer;
pub mod observe;
mod pipeline;
mod rejection;
mod report;
mod revocation;
mod route;
mod scope;
mod service;
mod task;
#[cfg(test)]
pub(crate) mod test_helpers;
mod throttle;
#[cfg(feature = "redis")]
mod tier;
mod wire;

pub use self::builder::ScopedCacheLayerBuilder;
pub use self::cache::purge::{Purge, PurgeError, Purged};
pub use self::cache::store::CacheStats;
pub use self::cache::{X_CACHE, X_CACHE_INVALIDATION, X_CACHE_TIER};
pub use self::claims::Claims;
pub use self::error::BuildError;
pub use self::future::ResponseFuture;
pub use self::health::{Readiness, TierHealth, Usage};
pub use self::jwt::{JwksSource, JwksSourceBuilder, Key, KeyFetchError, Verifier};
pub use self::layer::ScopedCacheLayer;
pub use self::observe::{Explain, Reason, X_CACHE_EXPLAIN, X_CACHE_REASON};
pub use self::rejection::{
    AUTH_UNAVAILABLE, AuthError, AuthErrorKind, BAD_REQUEST, FORBIDDEN, METHOD_NOT_ALLOWED,
    PERSISTED_QUERY_NOT_FOUND, RefusalKind, UNAUTHENTICATED, UNAVAILABLE,
};
pub use self::revocation::{MAX_NAME_BYTES, Revoke, RevokeError, Revoked};
pub use self::route::RoutePolicy;
pub use self::scope::{ClaimPath, Rule, Scope};
pub use self::service::ScopedCache;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::tier::RedisTier;
pub use jsonwebtoken::Algorithm;

// The README shows the Redis tier too: its examples compile with the `redis` feature on, as
// in the README's test command.
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
