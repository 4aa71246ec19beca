//! The builder of [`ScopedCacheLayer`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::backend::{Revocations, Store};
use crate::cache::inflight::InFlight;
use crate::cache::invalidate::Invalidations;
use crate::cache::purge::Tag;
use crate::cache::request::Preparer;
use crate::cache::store::MemoryStore;
use crate::graphql::DEFAULT_MAX_ENTITY_TAGS;
use crate::graphql::document::is_graphql_name;
use crate::graphql::schema::RootFields;
use crate::guard::{DEFAULT_MAX_NESTING, DEFAULT_MAX_SELECTIONS, DocumentLimits, MAX_MAX_NESTING};
use crate::jwt::TokenVerifier;
use crate::jwt::token::TokenSource;
use crate::observe::{Explain, Labels, Observer};
use crate::pipeline::{Limits, Pipeline};
use crate::revocation::{DEFAULT_MAX_REVOCATIONS, DEFAULT_RETENTION, MemoryRevocations, UnixClock};
use crate::route::Routes;
use crate::scope::learned::LearnedScopes;
use crate::scope::{Kind, RuleSet, parse_root_field};
use crate::{BuildError, RoutePolicy, Rule, ScopedCacheLayer, Verifier};

/// Configures a [`ScopedCacheLayer`]. Setters never fail; [`build`](Self::build) checks
/// everything and returns the first problem.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone)]
#[must_use]
pub struct ScopedCacheLayerBuilder {
    verifiers: Vec<Verifier>,
    coalesce: bool,
    token_cache: bool,
    token_cache_bytes: u64,
    token_cookie: Option<String>,
    ignore_other_schemes: bool,
    max_token_bytes: usize,
    max_bytes: u64,
    max_entry_bytes: usize,
    max_request_bytes: usize,
    max_nesting: usize,
    max_selections: u64,
    key_headers: Vec<String>,
    schema_sdl: Option<String>,
    default_rule: Option<Rule>,
    rules: Vec<Rule>,
    invalidations: Vec<(String, Vec<String>)>,
    entity_ids: Vec<(String, String)>,
    max_entity_tags: usize,
    max_revocations: usize,
    revocation_retention: Duration,
    purge_on_revoke: bool,
    #[cfg(feature = "redis")]
    redis: Option<crate::tier::RedisTier>,
    routes: Vec<(String, RoutePolicy)>,
    /// `None`: not chosen, [`RoutePolicy::verify_only`] (and unmatched routes are warned
    /// about, once each).
    default_route: Option<RoutePolicy>,
    explain: Explain,
}

impl ScopedCacheLayer {
    /// Starts configuring a layer.
    pub fn builder() -> ScopedCacheLayerBuilder {
        ScopedCacheLayerBuilder::default()
    }
}

impl Default for ScopedCacheLayerBuilder {
    fn default() -> Self {
        Self {
            verifiers: Vec::new(),
            coalesce: true,
            token_cache: true,
            token_cache_bytes: DEFAULT_TOKEN_CACHE_BYTES,
            token_cookie: None,
            ignore_other_schemes: false,
            max_token_bytes: 8 * 1024,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: 1024 * 1024,
            max_request_bytes: 1024 * 1024,
            max_nesting: DEFAULT_MAX_NESTING,
            max_selections: DEFAULT_MAX_SELECTIONS,
            key_headers: DEFAULT_KEY_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            schema_sdl: None,
            default_rule: None,
            rules: Vec::new(),
            invalidations: Vec::new(),
            entity_ids: Vec::new(),
            max_entity_tags: DEFAULT_MAX_ENTITY_TAGS,
            max_revocations: DEFAULT_MAX_REVOCATIONS,
            revocation_retention: DEFAULT_RETENTION,
            purge_on_revoke: true,
            #[cfg(feature = "redis")]
            redis: None,
            routes: Vec::new(),
            default_route: None,
            explain: Explain::Never,
        }
    }
}

impl ScopedCacheLayerBuilder {
    /// How bearer tokens are verified. Required. Call it once per identity provider: with
    /// several verifiers, each names its issuers and a token's `iss` picks one.
    pub fn verifier(mut self, verifier: Verifier) -> Self {
        self.verifiers.push(verifier);
        self
    }

    /// Whether verified tokens are remembered (whole token → claims) so a repeated token
    /// skips signature verification. Entries never outlive the token's `exp`, die with the
    /// key that verified them, and are re-checked for time, issuer and audience on every
    /// hit. Default: `true`.
    pub fn token_cache(mut self, enabled: bool) -> Self {
        self.token_cache = enabled;
        self
    }

    /// Whether concurrent misses on one key are coalesced: one request executes, the others
    /// wait (at most 10 s) and are served its stored response. If it is not stored (errors,
    /// `no-store`, a claim read outside the scope), each waiting request executes for itself.
    /// Default: `true`.
    pub fn coalesce_misses(mut self, enabled: bool) -> Self {
        self.coalesce = enabled;
        self
    }

    /// Memory bound of the verified-token cache, in bytes. Default: 16 MiB.
    pub fn token_cache_bytes(mut self, bytes: u64) -> Self {
        self.token_cache_bytes = bytes;
        self
    }

    /// Also read the token from this cookie when there is no `Authorization` header.
    /// Default: no cookie. Responses then also vary on `Cookie`.
    pub fn token_cookie(mut self, name: impl Into<String>) -> Self {
        self.token_cookie = Some(name.into());
        self
    }

    /// Whether an `Authorization` header with a scheme other than `Bearer` (`Basic …`,
    /// `Token …`) leaves the request anonymous. Default: `false`: it is refused with 401 and
    /// `WWW-Authenticate: Bearer error="invalid_request"`, so a client that sends its JWT
    /// under the wrong scheme is told instead of silently getting public data. Turn it on
    /// where a proxy in front adds its own credentials.
    pub fn ignore_other_schemes(mut self, ignore: bool) -> Self {
        self.ignore_other_schemes = ignore;
        self
    }

    /// Largest `Authorization` header (or token cookie) accepted, in bytes; larger ones get
    /// 431 before any work. Default: 8 KiB.
    pub fn max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// Memory bound of the response cache, in bytes (bodies plus headers and overhead).
    /// Least recently used entries are evicted beyond it. Default: 64 MiB.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Largest response body stored, in bytes; larger responses are served but not cached.
    /// Default: 1 MiB.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Largest request body accepted on a verifying route, whatever its content type, in
    /// bytes; larger ones get a GraphQL-shaped 413 (a declared `Content-Length` beyond it is
    /// refused before reading). Default: 1 MiB.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Deepest nesting of `{`, `[` and `(` accepted in a GraphQL document on a verifying
    /// route (selection sets, lists, input objects and argument lists all count); deeper
    /// documents get a GraphQL-shaped 400 before anything parses them, because
    /// async-graphql's parser recurses per level and overflows the stack (aborting the
    /// process) at about 2,000. Default: 64; at most 256.
    pub fn max_nesting(mut self, levels: usize) -> Self {
        self.max_nesting = levels;
        self
    }

    /// Most field selections a GraphQL document on a verifying route may expand to, with
    /// every fragment counted each time it is spread; larger documents get a
    /// GraphQL-shaped 400. A few hundred bytes of fragments that each spread the next twice
    /// expand to millions of fields, which the schema would validate and execute one by
    /// one; this is counted in linear time, before anything runs. Default: 10,000.
    pub fn max_selections(mut self, fields: u64) -> Self {
        self.max_selections = fields;
        self
    }

    /// Request headers that are part of every cache key, besides `Host` and `Accept`
    /// (always keyed). Replaces the default list, `x-forwarded-host`, `x-forwarded-proto`
    /// and `forwarded`: headers applications commonly read to build absolute URLs. Add any
    /// header your handlers or resolvers read (`accept-language`, say); a response whose
    /// `Vary` names a header outside the key is never stored. Names are checked by `build()`.
    pub fn key_headers<I, H>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = H>,
        H: Into<String>,
    {
        self.key_headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// The schema the layer stands in front of, so `build()` refuses rules that name a
    /// root field or operation type it does not have (such a rule would never match, and
    /// its field would be cached by the default rule). Strongly recommended.
    pub fn schema<Q, M, S>(self, schema: &async_graphql::Schema<Q, M, S>) -> Self
    where
        Q: async_graphql::ObjectType + 'static,
        M: async_graphql::ObjectType + 'static,
        S: async_graphql::SubscriptionType + 'static,
    {
        self.schema_sdl(schema.sdl())
    }

    /// Like [`schema`](Self::schema), from the schema's SDL text.
    pub fn schema_sdl(mut self, sdl: impl Into<String>) -> Self {
        self.schema_sdl = Some(sdl.into());
        self
    }

    /// The rule for root fields no other rule names. Default: [`Scope::public`](crate::Scope::public),
    /// max-age 60 s.
    pub fn default_rule(mut self, rule: Rule) -> Self {
        self.default_rule = Some(rule);
        self
    }

    /// Adds a rule for a root field or operation name (see [`Rule`]).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// What a mutation field invalidates, besides the entities it returns (those are
    /// purged anyway when the schema has [`entity_tags`](ScopedCacheLayer::entity_tags)).
    /// After every executed request that runs `field` (written `Mutation.createPost`),
    /// before its response is returned, the entries tagged with any of `targets` are
    /// purged: a type (`Post`: every entry holding a post, so lists of posts are
    /// refreshed when one is created), an entity (`Post:7`), or a root field
    /// (`Query.publicPosts`: its entries, tagged or not). A mutation field that returns an
    /// error (refused, invalid input) is taken to have changed nothing and purges
    /// nothing, so clients cannot empty the cache with mutations they may not run; purge
    /// explicitly if yours can fail after committing. With [`entity_tags`](ScopedCacheLayer::entity_tags)
    /// the extension says which fields succeeded; without it, the layer reads the response
    /// (on cached routes) and purges only after a clean result.
    ///
    /// `build()` checks that `field` is a mutation field (of the [`schema`](Self::schema),
    /// when given) and that there is at least one target. Calling it again for the same
    /// field adds targets.
    ///
    /// ```
    /// # use scoped_cache::{ScopedCacheLayer, Verifier, Algorithm};
    /// let layer = ScopedCacheLayer::builder()
    ///     # .verifier(Verifier::hmac(Algorithm::HS256, "0123456789abcdef0123456789abcdef").any_audience())
    ///     .invalidate("Mutation.createPost", ["Post"])
    ///     .build()?;
    /// # Ok::<(), scoped_cache::BuildError>(())
    /// ```
    pub fn invalidate<I, T>(mut self, field: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.invalidations
            .push((field.into(), targets.into_iter().map(Into::into).collect()));
        self
    }

    /// The field that identifies objects of `type_name` for entity tags (`User` →
    /// `login` tags `User:alice`). Default: `id`, for every type that has it; types without
    /// their id field are tagged by type only. Used by
    /// [`entity_tags`](ScopedCacheLayer::entity_tags).
    pub fn entity_id(mut self, type_name: impl Into<String>, field: impl Into<String>) -> Self {
        self.entity_ids.push((type_name.into(), field.into()));
        self
    }

    /// Most entities one cache entry is tagged with. A response holding more (a list of
    /// 10,000 posts) is tagged with the types of the rest instead, and a purge of *any*
    /// entity of such a type removes it. Each tag costs memory in the entry and in the
    /// purge index, counted against [`max_bytes`](Self::max_bytes). Default: 1,000.
    pub fn max_entity_tags(mut self, tags: usize) -> Self {
        self.max_entity_tags = tags;
        self
    }

    /// Most revocations held (see [`ScopedCacheLayer::revoke`]); past it, expired ones are
    /// forgotten and, if none can be, `revoke` fails with
    /// [`RevokeError::Full`](crate::RevokeError::Full) rather than drop one. Each costs
    /// about 100 bytes (measured for 36-character `jti`s). Default: 2,000,000.
    pub fn max_revocations(mut self, entries: usize) -> Self {
        self.max_revocations = entries;
        self
    }

    /// How long subject and issuer revocations are kept: set it to the longest lifetime of
    /// the tokens your identity provider issues (a token issued before the revocation
    /// cannot be presented after that). `jti` revocations are kept until the token's own
    /// `exp` plus the verifiers' leeway. Default: 24 hours; at most a year.
    pub fn revocation_retention(mut self, retention: Duration) -> Self {
        self.revocation_retention = retention;
        self
    }

    /// Shares the cache, its purges and the revocations with every instance that uses
    /// the same Redis and [`key_prefix`](crate::RedisTier::key_prefix) (feature `redis`).
    /// Memory stays in front (L1, bounded by [`max_bytes`](Self::max_bytes)); Redis is L2.
    /// `build()` does not connect: the layer serves without Redis until it answers. See
    /// [`RedisTier`](crate::RedisTier) for the settings and the key layout. Default: none.
    ///
    /// ```
    /// # use scoped_cache::{ScopedCacheLayer, RedisTier, Verifier};
    /// # use jsonwebtoken::Algorithm;
    /// let layer = ScopedCacheLayer::builder()
    ///     .verifier(Verifier::hmac(Algorithm::HS256, "a-secret-of-at-least-32-bytes!!!!").audience(["forum-api"]))
    ///     .redis(RedisTier::new("redis://127.0.0.1:6379").key_prefix("forum:"))
    ///     .build()?;
    /// # Ok::<(), scoped_cache::BuildError>(())
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, tier: crate::tier::RedisTier) -> Self {
        self.redis = Some(tier);
        self
    }

    /// Whether revoking a subject also purges every cache bucket whose scope includes
    /// that `sub` (and `iss`, when the revocation names it), so answers computed from the
    /// old claims are not served to the subject's next token. Default: `true`.
    pub fn purge_on_revoke(mut self, purge: bool) -> Self {
        self.purge_on_revoke = purge;
        self
    }

    /// Who is told why an answer was not a fresh hit, in the
    /// [`x-cache-reason`](crate::X_CACHE_REASON) header. Default: [`Explain::Never`].
    /// Metrics and traces carry the reason whatever this says.
    pub fn explain(mut self, explain: Explain) -> Self {
        self.explain = explain;
        self
    }

    /// Who the layer will explain its answers to, for tests of what sets it.
    #[cfg(all(test, feature = "config"))]
    pub(crate) fn explained_to(&self) -> &Explain {
        &self.explain
    }

    /// Sets the policy of one route, by its axum path pattern (`/graphql`, `/posts/{id}`).
    pub fn route(mut self, path: impl Into<String>, policy: RoutePolicy) -> Self {
        self.routes.push((path.into(), policy));
        self
    }

    /// The policy of routes not named by [`route`](Self::route). Default:
    /// [`RoutePolicy::verify_only`], and then each route pattern that matches no named
    /// route is warned about once (it may be a misspelt or nested route); choosing a
    /// default says the other routes are meant to get it, so only those whose path names
    /// `graphql` still are.
    pub fn default_route(mut self, policy: RoutePolicy) -> Self {
        self.default_route = Some(policy);
        self
    }

    /// Checks the configuration and builds the layer. Does no I/O.
    ///
    /// # Errors
    ///
    /// The first problem found: no verifier ([`BuildError::MissingVerifier`]), a key that
    /// does not parse, is too weak or does not fit its algorithms, an invalid claim path or
    /// root field, a rule naming a root field the [`schema`](Self::schema) does not have, a
    /// volatile claim (`exp`, `iat`, `nbf`, `jti`) in a scope, a route given twice or not
    /// starting with `/`, a zero size limit, a nesting limit over 256, an invalid key
    /// header or cookie name, or SDL that does not parse.
    pub fn build(self) -> Result<ScopedCacheLayer, BuildError> {
        if self.verifiers.is_empty() {
            return Err(BuildError::MissingVerifier);
        }
        let issuers = self
            .verifiers
            .into_iter()
            .map(Verifier::build)
            .collect::<Result<Vec<_>, _>>()?;
        let verifier =
            TokenVerifier::new(issuers, self.token_cache.then_some(self.token_cache_bytes))?;
        for (name, value) in [
            ("token_cache_bytes", self.token_cache_bytes),
            ("max_token_bytes", self.max_token_bytes as u64),
            ("max_bytes", self.max_bytes),
            ("max_entry_bytes", self.max_entry_bytes as u64),
            ("max_request_bytes", self.max_request_bytes as u64),
            ("max_nesting", self.max_nesting as u64),
            ("max_selections", self.max_selections),
            ("max_entity_tags", self.max_entity_tags as u64),
            ("max_revocations", self.max_revocations as u64),
            ("revocation_retention", self.revocation_retention.as_secs()),
        ] {
            if value == 0 {
                return Err(BuildError::Zero(name));
            }
        }
        if self.max_nesting > MAX_MAX_NESTING {
            return Err(BuildError::NestingTooDeep(self.max_nesting));
        }
        let key_headers = self
            .key_headers
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| BuildError::InvalidKeyHeader(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schema = self
            .schema_sdl
            .as_deref()
            .map(RootFields::from_sdl)
            .transpose()?;
        if schema.is_none() && !self.rules.is_empty() {
            tracing::warn!(
                "scoped-cache: rules are not checked against a schema; call `.schema(&schema)` so a misspelt root field fails `build()`"
            );
        }
        if let Some(name) = &self.token_cookie
            && (name.is_empty() || !name.bytes().all(is_cookie_name_byte))
        {
            return Err(BuildError::InvalidCookieName(name.clone()));
        }
        if self.revocation_retention > crate::scope::MAX_MAX_AGE {
            return Err(BuildError::DurationTooLong {
                field: "revocation_retention",
                max: crate::scope::MAX_MAX_AGE,
            });
        }
        let leeway = verifier.max_leeway().as_secs();
        let invalidations = compile_invalidations(self.invalidations, schema.as_ref())?;
        for (ty, field) in &self.entity_ids {
            if !is_graphql_name(ty) || !is_graphql_name(field) {
                return Err(BuildError::InvalidEntityId(format!("{ty}.{field}")));
            }
        }
        let mut routes = HashMap::new();
        for (path, policy) in self.routes {
            if !path.starts_with('/') {
                return Err(BuildError::InvalidRoute(path));
            }
            if routes.insert(path.clone(), policy).is_some() {
                return Err(BuildError::DuplicateRoute(path));
            }
        }
        // Everything in a request's headers that is part of the cache key: the token's
        // headers, then the rest (all an outer layer is told of).
        let mut keyed = String::from("accept");
        for name in &key_headers {
            keyed.push_str(", ");
            keyed.push_str(name.as_str());
        }
        let identity = if self.token_cookie.is_some() {
            "authorization, cookie, "
        } else {
            "authorization, "
        };
        // Header names are tokens, so these are valid header values.
        let vary = format!("{identity}{keyed}");
        let vary =
            HeaderValue::from_str(&vary).map_err(|_| BuildError::InvalidKeyHeader(vary.clone()))?;
        let vary_for_outer = HeaderValue::from_str(&keyed)
            .map_err(|_| BuildError::InvalidKeyHeader(keyed.clone()))?;
        let rules = RuleSet::compile(self.default_rule, self.rules, schema.as_ref())?;
        // Everything is checked: only now is anything started (the Redis tier's tasks).
        let memory = MemoryStore::new(self.max_bytes);
        let denied = MemoryRevocations::new(
            self.max_revocations,
            leeway,
            self.revocation_retention.as_secs(),
        );
        #[cfg(feature = "redis")]
        let (store, revocations) = match &self.redis {
            Some(config) => {
                let tier = Arc::new(crate::tier::Tier::build(
                    config,
                    memory,
                    denied,
                    self.max_entry_bytes,
                )?);
                (Store::Tiered(Arc::clone(&tier)), Revocations::Shared(tier))
            }
            None => (Store::Memory(memory), Revocations::Memory(denied)),
        };
        #[cfg(not(feature = "redis"))]
        let (store, revocations) = (Store::Memory(memory), Revocations::Memory(denied));
        let routes = Routes::new(routes, self.default_route);
        let labels = Labels {
            routes: routes.labels().to_vec(),
            rules: rules.rule_labels().to_vec(),
            operations: rules.operation_labels().to_vec(),
        };
        let layer = ScopedCacheLayer {
            shared: Arc::new(Pipeline {
                verifier,
                tokens: TokenSource {
                    cookie: self.token_cookie,
                    max_bytes: self.max_token_bytes,
                    ignore_other_schemes: self.ignore_other_schemes,
                },
                routes,
                rules,
                preparer: Preparer::new(self.max_bytes / 8 + 1, self.max_nesting),
                store,
                in_flight: Arc::new(InFlight::default()),
                learned: LearnedScopes::default(),
                invalidations,
                entity_ids: self.entity_ids,
                max_entity_tags: self.max_entity_tags,
                revocations,
                clock: UnixClock::new(),
                purge_on_revoke: self.purge_on_revoke,
                coalesce: self.coalesce,
                limits: Limits {
                    cache_bytes: self.max_bytes,
                    entry_bytes: self.max_entry_bytes,
                    request_bytes: self.max_request_bytes,
                    document: DocumentLimits {
                        nesting: self.max_nesting,
                        selections: self.max_selections,
                    },
                },
                key_headers,
                vary,
                vary_for_outer,
                examiners: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
                )),
                observer: Observer::new(labels, self.explain),
            }),
        };
        // The tier's tasks and the gauges, if a runtime is here (else the first request
        // or readiness probe starts them): an instance's gauges exist before traffic.
        layer.shared.start();
        Ok(layer)
    }
}

/// Checks and compiles the [`invalidate`](ScopedCacheLayerBuilder::invalidate) declarations.
fn compile_invalidations(
    declared: Vec<(String, Vec<String>)>,
    schema: Option<&RootFields>,
) -> Result<Invalidations, BuildError> {
    let mut compiled = Invalidations::default();
    for (field, targets) in declared {
        let invalid = |reason| BuildError::InvalidInvalidation {
            field: field.clone(),
            reason,
        };
        let name = match parse_root_field(&field) {
            Ok((Kind::Mutation, name)) => name,
            Ok(_) => return Err(invalid("only mutation fields invalidate")),
            Err(_) => return Err(invalid("write the field as `Mutation.field`")),
        };
        if let Some(schema) = schema
            && !schema.mutation.as_ref().is_some_and(|m| m.contains(name))
        {
            return Err(invalid("the schema has no such mutation field"));
        }
        if targets.is_empty() {
            return Err(invalid(
                "name at least one target: a type, a `Type:id` entity or a `Query.field`",
            ));
        }
        let declared = compiled.by_field.entry(name.into()).or_default();
        for target in targets {
            if target.contains('.') {
                let (kind, root) = parse_root_field(&target)
                    .map_err(|_| invalid("a root-field target is written `Query.field`"))?;
                if let Some(schema) = schema {
                    let fields = match kind {
                        Kind::Query => &schema.query,
                        Kind::Mutation => &schema.mutation,
                        Kind::Subscription => &schema.subscription,
                    };
                    if !fields.as_ref().is_some_and(|f| f.contains(root)) {
                        return Err(invalid(
                            "a target names a root field the schema does not have",
                        ));
                    }
                }
                declared.fields.push(target.as_str().into());
            } else {
                let ty = target.split(':').next().unwrap_or_default();
                if !is_graphql_name(ty) {
                    return Err(invalid("a target's type is not a GraphQL name"));
                }
                declared.tags.push(Tag::parse(&target));
            }
        }
    }
    Ok(compiled)
}

/// The default bound of the response cache.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The default bound of the verified-token cache.
pub(crate) const DEFAULT_TOKEN_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Request headers keyed by default: what applications read to build absolute URLs.
pub(crate) const DEFAULT_KEY_HEADERS: [&str; 3] =
    ["x-forwarded-host", "x-forwarded-proto", "forwarded"];

/// RFC 6265 cookie-name token characters.
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;

    use super::*;
    use crate::Scope;
    use crate::test_helpers::SECRET;

    fn base() -> ScopedCacheLayerBuilder {
        ScopedCacheLayer::builder()
            .verifier(Verifier::hmac(Algorithm::HS256, SECRET).any_audience())
    }

    #[test]
    fn a_complete_configuration_builds() {
        let layer = base()
            .token_cookie("session")
            .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub"])))
            .route("/graphql", RoutePolicy::cached())
            .route("/graphql/nocache", RoutePolicy::verify_only())
            .build();
        assert!(layer.is_ok());
    }

    #[test]
    fn build_reports_configuration_errors() {
        assert!(matches!(
            ScopedCacheLayer::builder().build(),
            Err(BuildError::MissingVerifier)
        ));
        assert!(matches!(
            base()
                .route("/g", RoutePolicy::cached())
                .route("/g", RoutePolicy::verify_only())
                .build(),
            Err(BuildError::DuplicateRoute(_))
        ));
        assert!(matches!(
            base().route("graphql", RoutePolicy::cached()).build(),
            Err(BuildError::InvalidRoute(_))
        ));
        assert!(matches!(
            base().max_bytes(0).build(),
            Err(BuildError::Zero("max_bytes"))
        ));
        assert!(matches!(
            base().token_cookie("a b").build(),
            Err(BuildError::InvalidCookieName(_))
        ));
        assert!(matches!(
            base().max_nesting(0).build(),
            Err(BuildError::Zero("max_nesting"))
        ));
        assert!(matches!(
            base().max_nesting(10_000).build(),
            Err(BuildError::NestingTooDeep(10_000))
        ));
        assert!(matches!(
            base().key_headers(["bad header"]).build(),
            Err(BuildError::InvalidKeyHeader(_))
        ));
        assert!(matches!(
            base()
                .schema_sdl("type Query { memberPosts: [String] }")
                .rule(Rule::root_field("Query.member_posts"))
                .build(),
            Err(BuildError::UnknownRootField(_))
        ));
        assert!(matches!(
            ScopedCacheLayer::builder()
                .verifier(Verifier::hmac(Algorithm::HS256, "short"))
                .build(),
            Err(BuildError::WeakSecret { .. })
        ));
    }

    #[test]
    fn errors_are_descriptive() {
        let err = ScopedCacheLayer::builder()
            .verifier(Verifier::hmac(Algorithm::HS256, "short").any_audience())
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "HS256 secret is 5 bytes; at least 32 are required"
        );
    }
}
