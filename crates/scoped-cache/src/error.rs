//! Configuration errors returned by [`ScopedCacheLayerBuilder::build`](crate::ScopedCacheLayerBuilder::build).

use jsonwebtoken::Algorithm;

/// A problem with the layer's configuration, found by `build()`.
///
/// Setters never fail; the first problem they meet is kept and returned here, so a
/// configuration is either fully valid or not built at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `.verifier(..)` was never called.
    #[error("no verifier configured; call `.verifier(..)`")]
    MissingVerifier,
    /// The verifier has no key to check signatures with.
    #[error(
        "the verifier has no keys; add one with `Verifier::hmac`, `Verifier::from_rsa_pem`, `Verifier::from_jwk` or `.key(..)`"
    )]
    NoKeys,
    /// A key could not be parsed.
    #[error("key for {alg:?} could not be read")]
    InvalidKey {
        /// The algorithm the key was given for.
        alg: Algorithm,
        /// Why jsonwebtoken rejected it.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A JWK could not be used as given.
    #[error("unusable JWK: {reason}")]
    InvalidJwk {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An algorithm was allowed for a key of another family.
    #[error("algorithm {alg:?} cannot be used with a {key_kind} key")]
    AlgorithmKeyMismatch {
        /// The algorithm asked for.
        alg: Algorithm,
        /// The kind of key it was asked for (`hmac`, `rsa`, `ec p-256`, ...).
        key_kind: &'static str,
    },
    /// An HMAC secret shorter than the hash output.
    #[error("{alg:?} secret is {len} bytes; at least {min} are required")]
    WeakSecret {
        /// The HMAC algorithm.
        alg: Algorithm,
        /// Length of the secret given.
        len: usize,
        /// The least length accepted (the hash output size).
        min: usize,
    },
    /// An RSA key with a modulus below 2048 bits.
    #[error("RSA key has {bits} bits; at least 2048 are required")]
    WeakRsaKey {
        /// Size of the modulus.
        bits: usize,
    },
    /// A key's algorithm list was emptied.
    #[error("a key must allow at least one algorithm")]
    NoAlgorithms,
    /// A claim path could not be parsed.
    #[error("invalid claim path `{path}`: {reason}")]
    InvalidClaimPath {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A scope names a claim that changes with every token, which would defeat caching
    /// and is never allowed to choose a bucket.
    #[error("claim `{0}` changes with every token and cannot be part of a scope")]
    VolatileScopeClaim(String),
    /// A rule's root field is not written as `Query.field`, `Mutation.field` or `Subscription.field`.
    #[error("invalid root field `{0}`: write it as `Query.field`")]
    InvalidRootField(String),
    /// A rule's max-age exceeds a year.
    #[error("max-age longer than a year; use a year for \"never expires\"")]
    MaxAgeTooLong,
    /// A verifier accepts tokens for any audience without saying so.
    #[error(
        "no audience configured; call `.audience([..])`, or `.any_audience()` to accept tokens meant for other services"
    )]
    AudienceNotConfigured,
    /// Two rules match the same root field or operation name.
    #[error("rule for `{0}` is configured twice")]
    DuplicateRule(String),
    /// More rules than fit a label (65,533).
    #[error("too many rules: at most 65533")]
    TooManyRules,
    /// A route path does not start with `/`.
    #[error("route `{0}` must start with `/`")]
    InvalidRoute(String),
    /// The same route path was configured twice.
    #[error("route `{0}` is configured twice")]
    DuplicateRoute(String),
    /// A size or count that must be positive was zero.
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    /// A key-source URL that does not parse or is not http(s).
    #[error("invalid key source URL `{0}`")]
    InvalidUrl(String),
    /// `min_refresh_interval` is longer than `refresh_interval`, or `max_stale` shorter.
    #[error("intervals must satisfy `min_refresh_interval` <= `refresh_interval` <= `max_stale`")]
    InvalidInterval,
    /// A duration setting is beyond its documented maximum.
    #[error("`{field}` is longer than the maximum of {max:?}")]
    DurationTooLong {
        /// The setting, as named by its setter (`fetch_timeout`, `leeway`, ...).
        field: &'static str,
        /// The longest value accepted.
        max: std::time::Duration,
    },
    /// A verifier with several key sources (more than one JWKS source, or static keys plus
    /// a JWKS source) accepts several issuers, and not every source says which it vouches for.
    #[error(
        "a verifier with several key sources and several issuers needs `.issuer([..])` on every key and JWKS source"
    )]
    UnboundKeySource,
    /// An issuer binding (`Key::issuer`, `JwksSourceBuilder::issuer`) that cannot be used.
    #[error("invalid issuer binding: {reason}")]
    InvalidIssuerBinding {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client for key fetching could not be made.
    #[error("HTTP client for key fetching could not be made")]
    HttpClient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Several verifiers without distinct issuers: tokens could not be routed to one.
    #[error("with several verifiers, each needs its own issuers; `{0}` is missing or repeated")]
    AmbiguousIssuer(String),
    /// A cookie name that is not a valid cookie token.
    #[error("invalid token cookie name `{0}`")]
    InvalidCookieName(String),
    /// The schema given to the builder could not be read as SDL.
    #[error("the schema's SDL could not be parsed: {0}")]
    InvalidSchema(String),
    /// A rule names a root field (or an operation type) the schema does not have; it would
    /// never match, leaving the field to the default rule.
    #[error("rule for `{0}`: the schema has no such root field")]
    UnknownRootField(String),
    /// A key header name that is not a valid HTTP header name.
    #[error("invalid key header name `{0}`")]
    InvalidKeyHeader(String),
    /// `max_nesting` is beyond what the GraphQL parser is known to handle safely.
    #[error("`max_nesting` is {0}; at most 256 is allowed")]
    NestingTooDeep(usize),
    /// An [`invalidate`](crate::ScopedCacheLayerBuilder::invalidate) declaration that
    /// cannot be used.
    #[error("invalidation for `{field}`: {reason}")]
    InvalidInvalidation {
        /// The mutation field as written.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An [`entity_id`](crate::ScopedCacheLayerBuilder::entity_id) type or field that is
    /// not a GraphQL name.
    #[error("invalid entity id field `{0}`: type and field must be GraphQL names")]
    InvalidEntityId(String),
    /// An [`AdminToken`](crate::admin::AdminToken) shorter than
    /// [`MIN_TOKEN_BYTES`](crate::admin::MIN_TOKEN_BYTES).
    #[error("admin token is {len} bytes; at least {min} are required")]
    WeakAdminToken {
        /// Length of the token given.
        len: usize,
        /// The least length accepted.
        min: usize,
    },
    /// An [`AdminToken`](crate::admin::AdminToken) a client could not send in an
    /// `Authorization` header as written.
    #[error("invalid admin token: {reason}")]
    InvalidAdminToken {
        /// What is wrong with it (never the token itself).
        reason: &'static str,
    },
    /// A [`RedisTier`](crate::RedisTier) setting is unusable.
    #[cfg(feature = "redis")]
    #[error("invalid redis tier `{field}`: {reason}")]
    InvalidRedis {
        /// The setting (`url`, `key_prefix`, a timeout).
        field: &'static str,
        /// What is wrong with it (never the URL, which may hold a password).
        reason: String,
    },
}
