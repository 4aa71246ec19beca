//! The operators' admin router: purge cached entries and revoke tokens over HTTP, and see
//! how the cache is doing.
//!
//! [`router`] returns an axum [`Router`] that serves `POST /purge`, `POST /revoke`,
//! `GET /stats` (the last minute's answers by status, route, operation, rule and reason;
//! each cache against its bound; the Redis tier; readiness) and `GET /` (a live page that
//! charts the stats: `/admin` once nested there). Every request but the page's must carry
//! the admin token as `Authorization: Bearer <token>`; the page holds no data and asks for
//! the token, or takes it from the URL's fragment (`/admin#token=...`, never sent to the
//! server). Mount the
//! router **after** `.layer(layer)`, so the [`ScopedCacheLayer`]'s JWT verification does
//! not wrap it. The admin token is not a JWT, and the layer would refuse it.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
//! use axum::Router;
//! use jsonwebtoken::Algorithm;
//! use scoped_cache::admin::AdminToken;
//! use scoped_cache::graphql::GraphQL;
//! use scoped_cache::{RoutePolicy, Rule, ScopedCacheLayer, Verifier};
//!
//! struct Query;
//!
//! #[Object]
//! impl Query {
//!     async fn posts(&self) -> Vec<String> {
//!         vec!["welcome".into()]
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
//!     .default_rule(Rule::new().max_age(Duration::from_secs(60)))
//!     .route("/graphql", RoutePolicy::cached())
//!     .build()?;
//!
//! let app = Router::new()
//!     .route_service("/graphql", GraphQL::new(schema))
//!     .layer(layer.clone())
//!     // After `.layer(..)`: the admin routes are not behind JWT verification.
//!     .nest(
//!         "/admin",
//!         scoped_cache::admin::router(&layer, AdminToken::new(std::env::var("ADMIN_TOKEN")?)?),
//!     );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Then, from the operator's shell:
//!
//! ```text
//! curl -X POST localhost:8000/admin/purge -H "authorization: Bearer $ADMIN_TOKEN" \
//!   -H 'content-type: application/json' -d '{"types":["Post"]}'
//! {"purged":3,"shared":true}
//! curl -X POST localhost:8000/admin/revoke -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' -d '{"sub":"alice","issued_before":1800000000}'
//! {"revoked":true,"shared":true}
//! ```
//!
//! # Shared or not yet
//!
//! `"shared":true` (status `200`) means the change is fleet-wide: without a Redis tier
//! always; with one, Redis recorded it, and every instance applies it within
//! [`max_lag`](crate::RedisTier::max_lag). `"shared":false` comes with status **`202`**:
//! Redis did not record it in time (down, full of another's data, slower than the insert
//! timeout). It already holds on this instance, which serves nothing from Redis until
//! Redis has it and retries every second; the other instances may still serve what it
//! removed, or take the token, until then. Retrying the same request is safe.
//!
//! # `POST /purge`
//!
//! The body is a JSON object with exactly one selector. Each selector maps to a
//! [`Purge`]:
//!
//! | body | removes | same as |
//! | --- | --- | --- |
//! | `{"tags":["Post:1","User"]}` | entries tagged with any of these: an entity `Type:id` or a type | [`Purge::tags`] |
//! | `{"types":["Post"]}` | entries holding an object of any of these types | [`Purge::types`] |
//! | `{"operation":"Feed"}` | entries produced by the operation `Feed` | [`Purge::operation`] |
//! | `{"scope":{"sub":"alice","org.id":7}}` | entries whose bucket holds every one of these claim values (compared as JSON) | [`Purge::scope`] |
//! | `{"all":true}` | everything | [`Purge::all`] |
//!
//! The answer is `{"purged":N,"shared":..}`, `N` the entries removed (see above for
//! `shared` and the status). Type and
//! entity tags exist only when the schema has the [`EntityTags`](crate::graphql::EntityTags)
//! extension ([`ScopedCacheLayer::entity_tags`]). Without it, `tags` and `types` purges
//! find nothing and answer `{"purged":0,"shared":true}`.
//!
//! # `POST /revoke`
//!
//! The body is a JSON object in exactly one of three forms. Each maps to a [`Revoke`]
//! passed to [`ScopedCacheLayer::revoke`]:
//!
//! | body | revokes | same as |
//! | --- | --- | --- |
//! | `{"jti":"3f2a9c1e","exp":1800003600}` | the token whose `jti` is this; `exp` is its `exp` claim, and the revocation is kept until then (plus the verifiers' leeway) | [`Revoke::token_unix`] |
//! | `{"sub":"alice","issued_before":1800000000}` | every token of `alice`, of any issuer, issued before that time | [`Revoke::subject_unix`] |
//! | `{"sub":"alice","issued_before":1800000000,"iss":"https://login.example.com/"}` | the same, of that issuer only | [`Revoke::of_issuer`] |
//! | `{"iss":"https://login.example.com/","issued_before":1800000000}` | every token of that issuer issued before that time | [`Revoke::issuer_unix`] |
//! | `{"iss":"https://login.example.com/","issued_before":1800000000,"kid":"2024-rsa"}` | the same, verified by the key with this `kid` only | [`Revoke::key_id`] |
//!
//! Which one to use:
//!
//! | situation | revoke by |
//! | --- | --- |
//! | one session ends: a logout, a lost device | `jti` |
//! | a role change, a ban, "log out everywhere" | `sub` |
//! | a compromised signing key or identity provider | `iss` (with `kid` for one key) |
//!
//! Times are Unix seconds, whole and not negative. "Issued before" compares the token's
//! `iat` in whole seconds: `iat < issued_before` is revoked, and a token without `iat`
//! counts as issued before any time. To revoke every token issued until now, send the
//! current time (`date +%s`) plus one, since a token issued earlier in this same second
//! has `iat` equal to it. A token issued later still works, with the claims it now
//! carries. Revoking a subject also purges the cache buckets scoped to it (see
//! [`purge_on_revoke`](crate::ScopedCacheLayerBuilder::purge_on_revoke)).
//!
//! The answer is `{"revoked":true,"shared":..}` (see above for `shared` and the status): from the next request on, a matching token
//! gets `401` (`WWW-Authenticate: Bearer error="invalid_token", error_description="token
//! revoked"`, GraphQL code `UNAUTHENTICATED`), whether or not an answer for it is cached.
//! Without a Redis tier, revocations live in this process's memory: they reach every
//! clone of the layer, but not other replicas, and are forgotten on restart (send the
//! revocation to each replica). With one, Redis records them for the whole fleet, and
//! `shared` says whether it has.
//!
//! # Refusals
//!
//! Every refusal is JSON, `{"error":"...","code":"..."}` (the code of its
//! [`RefusalKind`], which the response's extensions also carry), and
//! purges or revokes nothing. The checks
//! run in this order:
//!
//! | status | when |
//! | --- | --- |
//! | `405` | the method is not the route's (`Allow: POST` for `/purge` and `/revoke`, `Allow: GET` for `/stats` and `/`) |
//! | `401` | the `Authorization: Bearer` credential is missing or wrong, with `WWW-Authenticate: Bearer realm="scoped-cache-admin"`. The body has not been read yet. |
//! | `415` | the `Content-Type` is not `application/json` (or `application/*+json`) |
//! | `413` | the body is larger than [`MAX_BODY_BYTES`] (64 KiB) |
//! | `400` | the body is not a JSON object, has unknown or repeated fields, or a field of the wrong type. For `/purge`: no selector or more than one, an empty list or string, a name that is not a GraphQL name, `"all": false`, an empty `scope`, or a claim path that does not parse. For `/revoke`: no form, fields of two forms (`jti` with `sub`, `exp` with `issued_before`, `kid` without `iss`), a missing `exp` or `issued_before`, an empty string, or a time that is not a whole number of seconds (negative, fractional, a string). The message names the field. |
//! | `503` | `/revoke` only: the revocation store is full ([`max_revocations`](crate::ScopedCacheLayerBuilder::max_revocations)) and none of its entries can be forgotten yet |
//!
//! Admin responses carry `Cache-Control: no-store`.
//!
//! # Security
//!
//! - The credential is compared in constant time: both sides are hashed with SHA-256 and
//!   the digests compared with [`subtle`], so neither the content nor the length of the
//!   token leaks through timing. [`AdminToken`] keeps only the digest.
//! - Nothing logs the token, claim values, or the `jti`, `sub`, `iss` or `kid` of a
//!   revocation. A purge logs its selector kind and count at `info`, a revocation its kind
//!   (`jti`, `sub` or `iss`) at `info`, and a refused credential logs at `warn`. Refusal
//!   messages never repeat a value from the body either, only field names.
//! - The router has no rate limit of its own. A random token of 16 bytes or more cannot be
//!   guessed online, but you can still put the router behind your network's admin
//!   boundary or a rate-limiting layer.

mod parse;
mod view;

use parse::*;
use std::borrow::Cow;
use std::fmt;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::throttle::Throttle;
use serde::de::DeserializeOwned;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::admin_token::{AdminToken, MAX_TOKEN_BYTES, MIN_TOKEN_BYTES};
use crate::cache::purge::Purge;
use crate::graphql::document::is_graphql_name;
use crate::layer::ScopedCacheLayer;
use crate::rejection::RefusalKind;
use crate::revocation::{Revoke, RevokeError};
use crate::wire::body::{self, BodyError};
use crate::wire::credential::{Authorization, authorization};
use crate::wire::media::{ResponseMedia, is_json};

/// The largest request body the admin routes read: 64 KiB. Larger bodies are answered with `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `WWW-Authenticate` challenge of a `401` from the admin routes.
const CHALLENGE: &str = r#"Bearer realm="scoped-cache-admin""#;

/// Error messages echo client input (field names, values serde could not read) at most
/// this long, so a refusal stays small whatever the body holds.
const MAX_MESSAGE_CHARS: usize = 300;

/// The admin router for `layer`: `POST /purge`, `POST /revoke` and `GET /stats`, guarded
/// by `token`, and the live stats page at `GET /`.
/// Mount it with `.nest("/admin", ..)` **after** `.layer(layer)`, so JWT verification
/// does not wrap it.
///
/// The purges and revocations reach every clone of `layer`. See the
/// [module docs](crate::admin) for the HTTP contract and an example.
pub fn router(layer: &ScopedCacheLayer, token: AdminToken) -> Router {
    let admin = Admin {
        layer: layer.clone(),
        token,
    };
    Router::new()
        .route("/purge", post(purge).fallback(method_not_allowed))
        .route("/revoke", post(revoke).fallback(method_not_allowed))
        .route(
            "/stats",
            get(view::stats).fallback(view::method_not_allowed),
        )
        .route("/", get(view::page).fallback(view::method_not_allowed))
        .with_state(admin)
}

/// What the admin handlers share.
#[derive(Debug, Clone)]
struct Admin {
    layer: ScopedCacheLayer,
    token: AdminToken,
}

/// The checks every admin route runs, in order: the credential (before anything of the
/// body is looked at), the content type, the size. Returns the body.
async fn admitted(admin: &Admin, request: Request) -> Result<Bytes, Refusal> {
    let (parts, body) = request.into_parts();
    authorize(&admin.token, &parts.headers)?;
    if !is_json(&parts.headers) {
        return Err(Refusal::new(
            RefusalKind::UnsupportedMediaType,
            "the body must be `content-type: application/json`",
        ));
    }
    read_body(&parts.headers, body).await
}

async fn purge(State(admin): State<Admin>, request: Request) -> Result<Response, Refusal> {
    let bytes = admitted(&admin, request).await?;
    let purge = parse_purge(&bytes)
        .map_err(|message| Refusal::new(RefusalKind::InvalidParameters, message))?;
    let purged = admin
        .layer
        .purge(&purge.purge)
        .await
        .map_err(|e| Refusal::new(RefusalKind::InvalidParameters, e.to_string()))?;
    tracing::info!(
        selector = purge.kind,
        purged = purged.removed,
        shared = purged.fleet_wide,
        "admin purge"
    );
    Ok(respond(
        sharing_status(purged.fleet_wide),
        &PurgedBody {
            purged: purged.removed,
            shared: purged.fleet_wide,
        },
    ))
}

async fn revoke(State(admin): State<Admin>, request: Request) -> Result<Response, Refusal> {
    let bytes = admitted(&admin, request).await?;
    let revoke = parse_revoke(&bytes)
        .map_err(|message| Refusal::new(RefusalKind::InvalidParameters, message))?;
    // Only the kind is logged: a `jti`, `sub`, `iss` or `kid` identifies a person or a
    // session.
    let kind = revoke.kind;
    match admin.layer.revoke(&revoke.revoke).await {
        Ok(revoked) => {
            // The layer logs the revocation itself at INFO; this adds how it came.
            tracing::debug!(
                kind,
                narrowed = revoke.narrowed,
                shared = revoked.fleet_wide,
                "admin revoke"
            );
            Ok(respond(
                sharing_status(revoked.fleet_wide),
                &RevokedBody {
                    revoked: true,
                    shared: revoked.fleet_wide,
                },
            ))
        }
        Err(e @ RevokeError::Full(_)) => {
            tracing::warn!(kind, "admin revoke refused: the revocation store is full");
            Err(Refusal::new(RefusalKind::Unavailable, e.to_string()))
        }
        // `parse_revoke` refuses empty strings first; kept for the store's own checks.
        Err(e @ (RevokeError::Empty(_) | RevokeError::TooLong(_))) => {
            Err(Refusal::new(RefusalKind::InvalidParameters, e.to_string()))
        }
    }
}

async fn method_not_allowed() -> Refusal {
    Refusal::new(
        RefusalKind::MethodNotAllowed,
        "method not allowed; use POST",
    )
}

/// A refused admin request: `{"error": message, "code": ..}`, with the status and code of
/// its [`RefusalKind`] (the crate's one vocabulary) and the kind in the response's
/// extensions; the message says what exactly was wrong. A `401` carries the
/// `WWW-Authenticate` challenge, a `405` `Allow: POST`.
#[derive(Debug)]
struct Refusal {
    kind: RefusalKind,
    message: Cow<'static, str>,
    /// The methods a `405` names.
    allow: &'static str,
}

impl Refusal {
    fn new(kind: RefusalKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            allow: "POST",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // Operators' requests are JSON either way: the status of the GraphQL-over-HTTP
        // media type, where a refusal is never a `200`.
        let status = self.kind.status(ResponseMedia::GraphqlResponseJson);
        let mut response = respond(
            status,
            &ErrorBody {
                error: &self.message,
                code: self.kind.code(),
            },
        );
        let headers = response.headers_mut();
        match self.kind {
            RefusalKind::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
            }
            RefusalKind::MethodNotAllowed => {
                headers.insert(ALLOW, HeaderValue::from_static(self.allow));
            }
            _ => {}
        }
        response.extensions_mut().insert(self.kind);
        response
    }
}

/// Checks the `Authorization: Bearer` credential; the refusal is a `401`.
fn authorize(token: &AdminToken, headers: &HeaderMap) -> Result<(), Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let credential = match (values.next(), values.next()) {
        (Some(value), None) => match authorization(value.as_bytes()) {
            Authorization::Bearer(credential) => Some(credential),
            Authorization::EmptyBearer | Authorization::Other => None,
        },
        // Several `Authorization` headers: ambiguous, refused like a missing one.
        _ => None,
    };
    let reason = match credential {
        Some(credential) if token.verify(credential) => return Ok(()),
        Some(_) => "invalid admin credential",
        None => "missing admin credential; send `authorization: Bearer <token>`",
    };
    // A client can send wrong credentials as fast as it likes: one line a minute.
    static REFUSALS: Throttle = Throttle::new();
    if let Some(held_back) = REFUSALS.due() {
        tracing::warn!(
            reason,
            refused_since_last_warning = held_back,
            "admin request refused (one warning a minute)"
        );
    }
    Err(Refusal::new(RefusalKind::Unauthorized, reason))
}

/// Reads at most [`MAX_BODY_BYTES`]; beyond that, or on a declared length beyond it, `413`.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
    body::read_bounded(Some(headers), body, MAX_BODY_BYTES)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => Refusal::new(
                RefusalKind::BodyTooLarge,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            ),
            BodyError::Unreadable => {
                Refusal::new(RefusalKind::BodyUnreadable, "the body could not be read")
            }
        })
}

#[derive(Serialize)]
struct PurgedBody {
    purged: u64,
    shared: bool,
}

#[derive(Serialize)]
struct RevokedBody {
    revoked: bool,
    shared: bool,
}

/// `200` for a fleet-wide change, `202` for one that holds here and waits for Redis.
fn sharing_status(fleet_wide: bool) -> StatusCode {
    if fleet_wide {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'static str,
}

/// A JSON answer that no cache keeps.
fn respond(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests;
