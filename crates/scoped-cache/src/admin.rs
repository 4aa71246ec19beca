//! The operators' admin router: purge cached entries and revoke tokens over HTTP.
//!
//! [`router`] returns an axum [`Router`] that serves `POST /purge` and `POST /revoke`.
//! Every request must carry the admin token as `Authorization: Bearer <token>`. Mount the
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
//! Revocations live in this process's memory: they reach every clone of the layer, but
//! not other replicas, and are forgotten on restart. Send the revocation to each replica.
//!
//! # Refusals
//!
//! Every refusal is JSON, `{"error":"..."}`, and purges or revokes nothing. The checks
//! run in this order:
//!
//! | status | when |
//! | --- | --- |
//! | `405` | the method is not `POST` (with `Allow: POST`) |
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

use std::borrow::Cow;
use std::fmt;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cache::purge::Purge;
use crate::error::BuildError;
use crate::graphql::document::is_graphql_name;
use crate::layer::ScopedCacheLayer;
use crate::revocation::{Revoke, RevokeError};
use crate::wire::body::{self, BodyError};
use crate::wire::credential::{Authorization, authorization};
use crate::wire::media::is_json;

/// The largest request body the admin routes read: 64 KiB. Larger bodies are answered with `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The shortest admin token [`AdminToken::new`] accepts, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The `WWW-Authenticate` challenge of a `401` from the admin routes.
const CHALLENGE: &str = r#"Bearer realm="scoped-cache-admin""#;

/// Error messages echo client input (field names, values serde could not read) at most
/// this long, so a refusal stays small whatever the body holds.
const MAX_MESSAGE_CHARS: usize = 300;

/// The shared secret operators present as `Authorization: Bearer <token>` to the
/// [admin router](router).
///
/// Only the SHA-256 digest of the secret is kept. `Debug` prints `AdminToken { .. }`. See
/// the [module docs](crate::admin) for an example.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Takes the admin secret, for example from an environment variable. Use a random one,
    /// such as the output of `openssl rand -hex 32`.
    ///
    /// # Errors
    ///
    /// - [`BuildError::WeakAdminToken`] when the secret is shorter than
    ///   [`MIN_TOKEN_BYTES`] (16) bytes.
    /// - [`BuildError::InvalidAdminToken`] when it holds anything other than visible ASCII
    ///   (a space, a control character such as a trailing newline read from a file, or a
    ///   non-ASCII character). A client could not send it in an `Authorization` header
    ///   as written.
    pub fn new(secret: impl Into<String>) -> Result<Self, BuildError> {
        let secret = secret.into();
        if secret.len() < MIN_TOKEN_BYTES {
            return Err(BuildError::WeakAdminToken {
                len: secret.len(),
                min: MIN_TOKEN_BYTES,
            });
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BuildError::InvalidAdminToken {
                reason: "it must be visible ASCII, without spaces or line breaks",
            });
        }
        Ok(Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this token, in time that reveals nothing about the secret:
    /// hashing makes both sides 32 bytes, and they are compared in constant time.
    fn verify(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken").finish_non_exhaustive()
    }
}

/// The admin router for `layer`: `POST /purge` and `POST /revoke`, guarded by `token`.
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
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be `content-type: application/json`",
        ));
    }
    read_body(&parts.headers, body).await
}

async fn purge(State(admin): State<Admin>, request: Request) -> Result<Response, Refusal> {
    let bytes = admitted(&admin, request).await?;
    let purge =
        parse_purge(&bytes).map_err(|message| Refusal::new(StatusCode::BAD_REQUEST, message))?;
    let purged = admin
        .layer
        .purge(&purge.purge)
        .await
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
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
    let revoke =
        parse_revoke(&bytes).map_err(|message| Refusal::new(StatusCode::BAD_REQUEST, message))?;
    // Only the kind is logged: a `jti`, `sub`, `iss` or `kid` identifies a person or a
    // session.
    let kind = revoke.kind;
    match admin.layer.revoke(&revoke.revoke).await {
        Ok(revoked) => {
            tracing::info!(
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
            Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        // `parse_revoke` refuses empty strings first; kept for the store's own checks.
        Err(e @ (RevokeError::Empty(_) | RevokeError::TooLong(_))) => {
            Err(Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))
        }
    }
}

async fn method_not_allowed() -> Refusal {
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed; use POST",
    )
}

/// A refused admin request: `{"error": message}` with its status. A `401` carries the
/// `WWW-Authenticate` challenge, a `405` the `Allow` header.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: Cow<'static, str>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = respond(
            self.status,
            &ErrorBody {
                error: &self.message,
            },
        );
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
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
    tracing::warn!(reason, "admin request refused");
    Err(Refusal::new(StatusCode::UNAUTHORIZED, reason))
}

/// Reads at most [`MAX_BODY_BYTES`]; beyond that, or on a declared length beyond it, `413`.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
    body::read_bounded(Some(headers), body, MAX_BODY_BYTES)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            ),
            BodyError::Unreadable => {
                Refusal::new(StatusCode::BAD_REQUEST, "the body could not be read")
            }
        })
}

/// What a purge request body is, for messages.
const EXPECTING: &str = "a JSON object with one of `tags`, `types`, `operation`, `scope` or `all`";

/// The body of `POST /purge`, before validation. Every field may be absent, but an
/// explicit `null` is refused (it fails to deserialize as the field's type).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default, deserialize_with = "present")]
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    operation: Option<String>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<ScopeClaims>,
    #[serde(default, deserialize_with = "present")]
    all: Option<bool>,
}

/// A field that is present must hold a value of its type: `null` is not "absent".
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The claims of a scope purge, in the order written, with no path given twice.
#[derive(Debug)]
struct ScopeClaims(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for ScopeClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;

        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = ScopeClaims;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of claim paths to claim values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ScopeClaims, A::Error> {
                let mut claims: Vec<(String, Value)> = Vec::new();
                while let Some((path, value)) = map.next_entry::<String, Value>()? {
                    if claims.iter().any(|(p, _)| *p == path) {
                        return Err(serde::de::Error::custom(format_args!(
                            "claim path `{}` appears twice in `scope`",
                            clip(&path)
                        )));
                    }
                    claims.push((path, value));
                }
                Ok(ScopeClaims(claims))
            }
        }

        deserializer.deserialize_map(ClaimsVisitor)
    }
}

/// A validated purge and the name of its selector, for logs.
#[derive(Debug)]
struct ParsedPurge {
    purge: Purge,
    kind: &'static str,
}

/// Reads a request body of type `T` from a JSON object; `expecting` says what the body
/// should be. The error is the `400` message.
fn from_object<T: DeserializeOwned>(body: &[u8], expecting: &str) -> Result<T, String> {
    let message = |e: serde_json::Error| {
        let message = e.to_string();
        if e.is_data() {
            clip(&message).to_owned()
        } else {
            format!("the body is not valid JSON: {}", clip(&message))
        }
    };
    // serde's derive also reads a struct from an array of its fields in order; only an
    // object is a request.
    if body.trim_ascii_start().first().is_some_and(|b| *b != b'{') {
        serde_json::from_slice::<IgnoredAny>(body).map_err(message)?;
        return Err(format!("the body must be {expecting}"));
    }
    serde_json::from_slice(body).map_err(message)
}

/// Parses and validates a `POST /purge` body; the error is the `400` message.
fn parse_purge(body: &[u8]) -> Result<ParsedPurge, String> {
    let body: PurgeBody = from_object(body, EXPECTING)?;
    let PurgeBody {
        tags,
        types,
        operation,
        scope,
        all,
    } = body;
    let given: Vec<&str> = [
        ("tags", tags.is_some()),
        ("types", types.is_some()),
        ("operation", operation.is_some()),
        ("scope", scope.is_some()),
        ("all", all.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match given.as_slice() {
        [] => {
            return Err(
                "no selector: send one of `tags`, `types`, `operation`, `scope` or `all`".into(),
            );
        }
        [_] => {}
        several => {
            return Err(format!(
                "send exactly one selector; got `{}`",
                several.join("`, `")
            ));
        }
    }
    let (purge, kind) = if let Some(tags) = tags {
        non_empty("tags", &tags)?;
        for tag in &tags {
            let ty = tag.split_once(':').map_or(tag.as_str(), |(ty, _)| ty);
            if !is_graphql_name(ty) || tag.ends_with(':') {
                return Err(format!(
                    "tag `{}` is neither a type name (`Post`) nor an entity (`Post:42`)",
                    clip(tag)
                ));
            }
        }
        (Purge::tags(&tags), "tags")
    } else if let Some(types) = types {
        non_empty("types", &types)?;
        if let Some(ty) = types.iter().find(|ty| !is_graphql_name(ty)) {
            return Err(format!(
                "type `{}` is not a GraphQL type name; entities (`Post:42`) go in `tags`",
                clip(ty)
            ));
        }
        (Purge::types(&types), "types")
    } else if let Some(operation) = operation {
        if !is_graphql_name(&operation) {
            return Err(format!(
                "operation `{}` is not a GraphQL operation name",
                clip(&operation)
            ));
        }
        (Purge::operation(&operation), "operation")
    } else if let Some(ScopeClaims(claims)) = scope {
        if claims.is_empty() {
            return Err("`scope` names no claim; send {\"all\":true} to purge everything".into());
        }
        // The error names the path, never a value.
        let purge =
            Purge::scope(claims).map_err(|e| format!("`scope`: {}", clip(&e.to_string())))?;
        (purge, "scope")
    } else if all == Some(true) {
        (Purge::all(), "all")
    } else {
        return Err("`all` must be true".into());
    };
    Ok(ParsedPurge { purge, kind })
}

fn non_empty(field: &str, list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    Ok(())
}

/// `text`, cut to [`MAX_MESSAGE_CHARS`] characters.
fn clip(text: &str) -> &str {
    text.char_indices()
        .nth(MAX_MESSAGE_CHARS)
        .map_or(text, |(end, _)| &text[..end])
}

/// What a revoke request body is, for messages.
const REVOKE_FORMS: &str = r#"a JSON object in one of three forms: {"jti":..,"exp":..}, {"sub":..,"issued_before":..} (optionally with "iss") or {"iss":..,"issued_before":..} (optionally with "kid")"#;

/// The body of `POST /revoke`, before validation. Each field is read as any JSON value
/// and checked afterwards, so that a refusal names the field whose value is wrong (serde's
/// own type errors name the value, not the field). As in [`PurgeBody`], an explicit
/// `null` is not "absent".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default, deserialize_with = "present")]
    jti: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    sub: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    kid: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    issued_before: Option<Value>,
}

/// Pairs of fields that belong to different forms, in the order they are reported.
const CONFLICTS: [(&str, &str); 9] = [
    ("jti", "sub"),
    ("jti", "iss"),
    ("jti", "kid"),
    ("jti", "issued_before"),
    ("exp", "issued_before"),
    ("exp", "sub"),
    ("exp", "iss"),
    ("exp", "kid"),
    ("sub", "kid"),
];

/// A validated revocation, the name of its kind and whether it is narrowed (by `iss` or
/// `kid`), for logs.
#[derive(Debug)]
struct ParsedRevoke {
    revoke: Revoke,
    kind: &'static str,
    narrowed: bool,
}

/// Parses and validates a `POST /revoke` body; the error is the `400` message. Messages
/// name fields and JSON types, never a value from the body.
fn parse_revoke(body: &[u8]) -> Result<ParsedRevoke, String> {
    let body: RevokeBody = from_object(body, REVOKE_FORMS)?;
    let given = [
        ("jti", body.jti.is_some()),
        ("exp", body.exp.is_some()),
        ("sub", body.sub.is_some()),
        ("iss", body.iss.is_some()),
        ("kid", body.kid.is_some()),
        ("issued_before", body.issued_before.is_some()),
    ];
    let present = |field: &str| given.contains(&(field, true));
    if let Some((a, b)) = CONFLICTS.iter().find(|(a, b)| present(a) && present(b)) {
        return Err(format!(
            "`{a}` and `{b}` cannot be combined; send {REVOKE_FORMS}"
        ));
    }
    let RevokeBody {
        jti,
        exp,
        sub,
        iss,
        kid,
        issued_before,
    } = body;
    let jti = text("jti", jti)?;
    let exp = seconds("exp", exp)?;
    let sub = text("sub", sub)?;
    let iss = text("iss", iss)?;
    let kid = text("kid", kid)?;
    let issued_before = seconds("issued_before", issued_before)?;
    let missing_before = || {
        "missing `issued_before`: tokens issued before this time (Unix seconds) are revoked"
            .to_owned()
    };
    if let Some(jti) = jti {
        let exp = exp.ok_or("missing `exp`: the token's `exp` claim, in Unix seconds")?;
        return Ok(ParsedRevoke {
            revoke: Revoke::token_unix(jti, exp),
            kind: "jti",
            narrowed: false,
        });
    }
    if let Some(sub) = sub {
        let before = issued_before.ok_or_else(missing_before)?;
        let narrowed = iss.is_some();
        let mut revoke = Revoke::subject_unix(sub, before);
        if let Some(iss) = iss {
            revoke = revoke.of_issuer(iss);
        }
        return Ok(ParsedRevoke {
            revoke,
            kind: "sub",
            narrowed,
        });
    }
    if let Some(iss) = iss {
        let before = issued_before.ok_or_else(missing_before)?;
        let narrowed = kid.is_some();
        let mut revoke = Revoke::issuer_unix(iss, before);
        if let Some(kid) = kid {
            revoke = revoke.key_id(kid);
        }
        return Ok(ParsedRevoke {
            revoke,
            kind: "iss",
            narrowed,
        });
    }
    Err(if kid.is_some() {
        "`kid` needs `iss`: it narrows a revocation of that issuer's tokens to one key".into()
    } else if exp.is_some() {
        "missing `jti`: `exp` goes with the `jti` of the token to revoke".into()
    } else if issued_before.is_some() {
        "`issued_before` needs `sub` or `iss`: whose tokens to revoke".into()
    } else {
        format!("nothing to revoke; send {REVOKE_FORMS}")
    })
}

/// A string field that, when present, is a non-empty string.
fn text(field: &str, value: Option<Value>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Err(format!("`{field}` is empty")),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!(
            "`{field}` must be a string, not {}",
            json_type(&other)
        )),
    }
}

/// A time field that, when present, is a whole, non-negative number of Unix seconds.
fn seconds(field: &str, value: Option<Value>) -> Result<Option<u64>, String> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{field}` must be a whole number of Unix seconds, 0 or more")),
        Some(other) => Err(format!(
            "`{field}` must be a number of Unix seconds, not {}",
            json_type(&other)
        )),
    }
}

/// The JSON type of `value`, for messages that must not repeat the value itself.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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
mod tests {
    use super::*;

    #[test]
    fn short_tokens_are_refused_and_name_the_problem() {
        let err = AdminToken::new("short").unwrap_err();
        assert!(matches!(
            err,
            BuildError::WeakAdminToken { len: 5, min: 16 }
        ));
        assert_eq!(
            err.to_string(),
            "admin token is 5 bytes; at least 16 are required"
        );
        assert!(AdminToken::new("x".repeat(15)).is_err());
        assert!(AdminToken::new("x".repeat(16)).is_ok());
    }

    #[test]
    fn tokens_that_cannot_be_sent_are_refused() {
        for bad in [
            "0123456789abcdef\n",
            "0123456789 abcdef",
            "0123456789abcdéf",
        ] {
            assert!(
                matches!(
                    AdminToken::new(bad),
                    Err(BuildError::InvalidAdminToken { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let token = AdminToken::new("super-secret-admin-token").unwrap();
        let debug = format!("{token:?}");
        assert_eq!(debug, "AdminToken { .. }");
    }

    #[test]
    fn verify_compares_the_whole_token() {
        let token = AdminToken::new("super-secret-admin-token").unwrap();
        assert!(token.verify(b"super-secret-admin-token"));
        assert!(!token.verify(b"super-secret-admin-toke"));
        assert!(!token.verify(b"super-secret-admin-tokenX"));
        assert!(!token.verify(b""));
    }

    fn kind(body: &str) -> Result<&'static str, String> {
        parse_purge(body.as_bytes()).map(|p| p.kind)
    }

    #[test]
    fn each_selector_parses_to_its_purge() {
        let parsed = |body: &str| parse_purge(body.as_bytes()).unwrap().purge;
        assert_eq!(
            parsed(r#"{"tags":["Post:1","User"]}"#),
            Purge::tags(["Post:1", "User"])
        );
        assert_eq!(parsed(r#"{"types":["Post"]}"#), Purge::types(["Post"]));
        assert_eq!(parsed(r#"{"operation":"Feed"}"#), Purge::operation("Feed"));
        assert_eq!(
            parsed(r#"{"scope":{"sub":"alice","org.id":7}}"#),
            Purge::scope([("sub", Value::from("alice")), ("org.id", Value::from(7))]).unwrap()
        );
        assert_eq!(parsed(r#"{"all":true}"#), Purge::all());
        assert_eq!(kind(r#"{"scope":{"sub":"alice"}}"#), Ok("scope"));
    }

    #[test]
    fn malformed_bodies_have_clear_messages() {
        let cases = [
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            ("tags", "not valid JSON"),
            (r#"{"all":true} x"#, "not valid JSON"),
            ("[]", "the body must be a JSON object with one of"),
            (r#"[["Post"]]"#, "the body must be a JSON object"),
            (r#""all""#, "the body must be a JSON object"),
            (" [1", "not valid JSON"),
            ("{}", "no selector"),
            (r#"{"tag":["Post"]}"#, "unknown field `tag`"),
            (
                r#"{"tags":["Post"],"all":true}"#,
                "exactly one selector; got `tags`, `all`",
            ),
            (r#"{"tags":null}"#, "invalid type: null"),
            (r#"{"tags":[]}"#, "`tags` is empty"),
            (r#"{"types":[]}"#, "`types` is empty"),
            (
                r#"{"tags":[1]}"#,
                "invalid type: integer `1`, expected a string",
            ),
            (r#"{"tags":"Post"}"#, "expected a sequence"),
            (r#"{"tags":[""]}"#, "neither a type name"),
            (r#"{"tags":["Post:"]}"#, "neither a type name"),
            (r#"{"tags":[":1"]}"#, "neither a type name"),
            (
                r#"{"types":["Post:1"]}"#,
                "entities (`Post:42`) go in `tags`",
            ),
            (r#"{"operation":""}"#, "not a GraphQL operation name"),
            (r#"{"operation":"Feed "}"#, "not a GraphQL operation name"),
            (r#"{"all":false}"#, "`all` must be true"),
            (r#"{"all":"yes"}"#, "expected a boolean"),
            (r#"{"scope":{}}"#, "`scope` names no claim"),
            (r#"{"scope":["sub"]}"#, "an object of claim paths"),
            (r#"{"scope":{"org..id":"x"}}"#, "invalid claim path"),
            (r#"{"scope":{"sub":"a","sub":"b"}}"#, "appears twice"),
        ];
        for (body, expected) in cases {
            let message = kind(body).expect_err(body);
            assert!(
                message.contains(expected),
                "{body}: {message:?} should contain {expected:?}"
            );
        }
    }

    fn revoke(body: &str) -> Result<Revoke, String> {
        parse_revoke(body.as_bytes()).map(|p| p.revoke)
    }

    #[test]
    fn each_revoke_form_parses_to_its_revocation() {
        assert_eq!(
            revoke(r#"{"jti":"3f2a","exp":1800003600}"#),
            Ok(Revoke::token_unix("3f2a", 1_800_003_600))
        );
        assert_eq!(
            revoke(r#"{"sub":"alice","issued_before":1800000000}"#),
            Ok(Revoke::subject_unix("alice", 1_800_000_000))
        );
        assert_eq!(
            revoke(r#"{"issued_before":1800000000,"iss":"idp","sub":"alice"}"#),
            Ok(Revoke::subject_unix("alice", 1_800_000_000).of_issuer("idp"))
        );
        assert_eq!(
            revoke(r#"{"iss":"idp","issued_before":0}"#),
            Ok(Revoke::issuer_unix("idp", 0))
        );
        assert_eq!(
            revoke(r#"{"iss":"idp","issued_before":1800000000,"kid":"k1"}"#),
            Ok(Revoke::issuer_unix("idp", 1_800_000_000).key_id("k1"))
        );
        // The largest time JSON can say exactly.
        assert_eq!(
            revoke(&format!(r#"{{"jti":"j","exp":{}}}"#, u64::MAX)),
            Ok(Revoke::token_unix("j", u64::MAX))
        );
        let kinds = |body: &str| {
            let parsed = parse_revoke(body.as_bytes()).unwrap();
            (parsed.kind, parsed.narrowed)
        };
        assert_eq!(kinds(r#"{"jti":"j","exp":1}"#), ("jti", false));
        assert_eq!(kinds(r#"{"sub":"a","issued_before":1}"#), ("sub", false));
        assert_eq!(
            kinds(r#"{"sub":"a","issued_before":1,"iss":"i"}"#),
            ("sub", true)
        );
        assert_eq!(kinds(r#"{"iss":"i","issued_before":1}"#), ("iss", false));
        assert_eq!(
            kinds(r#"{"iss":"i","issued_before":1,"kid":"k"}"#),
            ("iss", true)
        );
    }

    #[test]
    fn malformed_revocations_name_the_field() {
        let cases = [
            ("", "not valid JSON"),
            (r#"{"jti":"j","exp":1"#, "not valid JSON"),
            ("[]", "the body must be a JSON object in one of three forms"),
            (r#"["j",1]"#, "the body must be a JSON object"),
            ("{}", "nothing to revoke"),
            (
                r#"{"jti":"j","exp":1,"reason":"x"}"#,
                "unknown field `reason`",
            ),
            (r#"{"jti":"j","jti":"k","exp":1}"#, "duplicate field `jti`"),
            // Wrong types, negative and fractional numbers.
            (r#"{"jti":"j","exp":"soon"}"#, "`exp` must be a number"),
            (r#"{"jti":"j","exp":-1}"#, "`exp` must be a whole number"),
            (r#"{"jti":"j","exp":1.5}"#, "`exp` must be a whole number"),
            (r#"{"jti":"j","exp":1e3}"#, "`exp` must be a whole number"),
            (
                r#"{"jti":"j","exp":18446744073709551616}"#,
                "`exp` must be a whole number",
            ),
            (
                r#"{"jti":"j","exp":null}"#,
                "`exp` must be a number of Unix seconds, not null",
            ),
            (
                r#"{"jti":7,"exp":1}"#,
                "`jti` must be a string, not a number",
            ),
            (
                r#"{"jti":null,"exp":1}"#,
                "`jti` must be a string, not null",
            ),
            (
                r#"{"sub":["alice"],"issued_before":1}"#,
                "`sub` must be a string, not an array",
            ),
            (
                r#"{"sub":"a","issued_before":"1800000000"}"#,
                "`issued_before` must be a number",
            ),
            (
                r#"{"sub":"a","issued_before":-5}"#,
                "`issued_before` must be a whole number",
            ),
            (
                r#"{"sub":"a","issued_before":1,"iss":{}}"#,
                "`iss` must be a string, not an object",
            ),
            (
                r#"{"iss":"i","issued_before":1,"kid":true}"#,
                "`kid` must be a string, not a boolean",
            ),
            // Missing parts.
            (r#"{"jti":"j"}"#, "missing `exp`"),
            (r#"{"sub":"a"}"#, "missing `issued_before`"),
            (r#"{"sub":"a","iss":"i"}"#, "missing `issued_before`"),
            (r#"{"iss":"i","kid":"k"}"#, "missing `issued_before`"),
            (r#"{"exp":1}"#, "missing `jti`"),
            (
                r#"{"issued_before":1}"#,
                "`issued_before` needs `sub` or `iss`",
            ),
            // Two forms at once.
            (
                r#"{"jti":"j","exp":1,"sub":"a"}"#,
                "`jti` and `sub` cannot be combined",
            ),
            (
                r#"{"jti":"j","exp":1,"iss":"i"}"#,
                "`jti` and `iss` cannot be combined",
            ),
            (
                r#"{"jti":"j","issued_before":1}"#,
                "`jti` and `issued_before` cannot be combined",
            ),
            (
                r#"{"exp":1,"issued_before":1}"#,
                "`exp` and `issued_before` cannot be combined",
            ),
            (
                r#"{"sub":"a","exp":1}"#,
                "`exp` and `sub` cannot be combined",
            ),
            (
                r#"{"sub":"a","issued_before":1,"kid":"k"}"#,
                "`sub` and `kid` cannot be combined",
            ),
            (r#"{"kid":"k","issued_before":1}"#, "`kid` needs `iss`"),
            (r#"{"kid":"k"}"#, "`kid` needs `iss`"),
            // Empty strings.
            (r#"{"jti":"","exp":1}"#, "`jti` is empty"),
            (r#"{"sub":"","issued_before":1}"#, "`sub` is empty"),
            (
                r#"{"sub":"a","issued_before":1,"iss":""}"#,
                "`iss` is empty",
            ),
            (r#"{"iss":"","issued_before":1}"#, "`iss` is empty"),
            (
                r#"{"iss":"i","issued_before":1,"kid":""}"#,
                "`kid` is empty",
            ),
        ];
        for (body, expected) in cases {
            let message = revoke(body).expect_err(body);
            assert!(
                message.contains(expected),
                "{body}: {message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn revocation_messages_never_repeat_values() {
        for body in [
            r#"{"jti":"secret-jti","exp":"secret-exp"}"#,
            r#"{"sub":"secret-sub","issued_before":"secret-time"}"#,
            r#"{"sub":"secret-sub","issued_before":1,"kid":"secret-kid"}"#,
            r#"{"iss":"secret-iss","issued_before":1.5}"#,
            r#"{"iss":["secret-iss"],"issued_before":1}"#,
        ] {
            let message = revoke(body).unwrap_err();
            assert!(!message.contains("secret"), "{body}: {message}");
        }
    }

    #[test]
    fn claim_values_never_appear_in_messages() {
        let message = kind(r#"{"scope":{"org..id":"secret-value"}}"#).unwrap_err();
        assert!(!message.contains("secret-value"), "{message}");
    }

    #[test]
    fn messages_are_bounded() {
        let long = "a".repeat(10_000);
        let message = kind(&format!(r#"{{"{long}":1}}"#)).unwrap_err();
        assert!(message.len() < 2 * MAX_MESSAGE_CHARS, "{}", message.len());
    }
}
