//! Configuration without code: the builder's settings read from TOML (feature `config`).
//!
//! Secrets never live in the file: it names the environment variables that hold them
//! (`secret_env = "JWT_SECRET"`), read when [`Config::builder`] runs. A file that does not
//! parse, has an unknown key or a value of the wrong type is refused with the line, the
//! column and the key; [`build`](crate::ScopedCacheLayerBuilder::build) then validates
//! everything exactly as it does for code.
//!
//! ```
//! use scoped_cache::config::Config;
//!
//! let config = Config::from_toml(r#"
//!     [[verifier]]
//!     algorithm = "HS256"
//!     secret_env = "JWT_SECRET"
//!     issuers = ["forum-demo"]
//!     audiences = ["forum-api"]
//!
//!     [default_rule]
//!     max_age_secs = 60
//!
//!     [[rule]]
//!     root_field = "Query.me"
//!     scope = ["sub", "name", "role"]
//!
//!     [routes."/graphql"]
//!     policy = "cached"
//! "#)?;
//! let env = |name: &str| (name == "JWT_SECRET").then(|| "a-secret-of-at-least-32-bytes-long".to_owned());
//! let layer = config.builder_with(env)?.build()?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::admin_token::AdminToken;
use crate::observe::Explain;
use crate::{
    JwksSource, RoutePolicy, Rule, Scope, ScopedCacheLayer, ScopedCacheLayerBuilder, Verifier,
};

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The TOML does not parse, names an unknown key, or holds a value of the wrong type:
    /// the message gives the line, the column and the key.
    #[error("{0}")]
    Parse(String),
    /// A field names an environment variable that is not set (or is empty).
    #[error("`{field}` names the environment variable {var}, which is not set")]
    MissingEnv {
        /// The field, as written in the file (`verifier[0].secret_env`).
        field: String,
        /// The variable.
        var: String,
    },
    /// A value parsed but cannot be used; the message names the field.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field, as written in the file.
        field: String,
        /// Why.
        reason: String,
    },
}

/// The layer's settings, as a TOML file holds them. See the [module docs](self).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[[verifier]]`: one per identity provider.
    #[serde(default, rename = "verifier")]
    pub verifiers: Vec<VerifierConfig>,
    /// `[default_rule]`: the rule for root fields no other rule names.
    #[serde(default)]
    pub default_rule: Option<RuleConfig>,
    /// `[[rule]]`: per root field or operation name.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// `[routes."/graphql"]`: each route's policy, by axum path pattern.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// `[default_route]`: the policy of routes not named.
    #[serde(default)]
    pub default_route: Option<RouteConfig>,
    /// `[invalidate]`: `"Mutation.createPost" = ["Post"]`.
    #[serde(default)]
    pub invalidate: BTreeMap<String, Vec<String>>,
    /// `[limits]`: sizes and bounds.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[redis]`: the shared tier (feature `redis`).
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// `[admin]`: the operators' token and who is told reasons.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
}

/// `[[verifier]]`: keys and claim checks for one identity provider. Exactly one key
/// source: `secret_env` (HMAC), `public_key_pem_file`, `jwks_url` or `oidc_issuer`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    /// The algorithm of a secret or PEM key (`HS256`, `RS256`, `ES256`, `EdDSA`, ...).
    pub algorithm: Option<Algorithm>,
    /// The environment variable holding an HMAC secret.
    pub secret_env: Option<String>,
    /// A file holding a public key in PEM (not a secret).
    pub public_key_pem_file: Option<String>,
    /// A JWKS to fetch keys from.
    pub jwks_url: Option<String>,
    /// An OIDC issuer to discover the JWKS from (its `iss` is then required).
    pub oidc_issuer: Option<String>,
    /// Accepted `iss` values.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Accepted `aud` values (required unless `any_audience`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Waives the audience check explicitly.
    #[serde(default)]
    pub any_audience: bool,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_secs: Option<u64>,
}

/// `[[rule]]` or `[default_rule]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The root field it matches (`Query.me`).
    pub root_field: Option<String>,
    /// The operation name it matches.
    pub operation: Option<String>,
    /// The claims that scope answers (`["sub", "org.id"]`), or `"auto"` to learn them.
    pub scope: Option<ScopeConfig>,
    /// Fresh for this long (seconds).
    pub max_age_secs: Option<u64>,
    /// Served stale while revalidating for this long past max-age (seconds).
    pub stale_while_revalidate_secs: Option<u64>,
    /// Served stale when executing fails, for this long past max-age (seconds).
    pub stale_if_error_secs: Option<u64>,
    /// Never cached.
    #[serde(default)]
    pub bypass: bool,
}

/// A rule's scope: claim paths, or `"auto"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ScopeConfig {
    /// These claims.
    Claims(Vec<String>),
    /// `"auto"`: learned from what resolvers read.
    Learned(String),
}

/// `[routes."/path"]` or `[default_route]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `cached`, `verify_only` or `passthrough`.
    pub policy: PolicyConfig,
    /// A request without a token gets 401.
    #[serde(default)]
    pub require_auth: bool,
    /// The handler negotiates `Accept` as `scoped_cache::graphql`'s does.
    #[serde(default)]
    pub negotiated_accept: bool,
}

/// A route's policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyConfig {
    /// Verify tokens and cache.
    Cached,
    /// Verify tokens, cache nothing.
    VerifyOnly,
    /// Touch nothing.
    Passthrough,
}

/// `[limits]`: each unset one keeps the builder's default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The response cache's bound in bytes.
    pub max_bytes: Option<u64>,
    /// The largest answer stored.
    pub max_entry_bytes: Option<usize>,
    /// The largest request body read.
    pub max_request_bytes: Option<usize>,
    /// The deepest document nesting accepted.
    pub max_nesting: Option<usize>,
    /// The most field selections, fragments expanded.
    pub max_selections: Option<u64>,
    /// The largest `Authorization` header.
    pub max_token_bytes: Option<usize>,
    /// The verified-token cache's bound in bytes (`0`: no cache).
    pub token_cache_bytes: Option<u64>,
    /// Revocations held.
    pub max_revocations: Option<usize>,
    /// How long subject and issuer revocations are kept (seconds).
    pub revocation_retention_secs: Option<u64>,
    /// Entities one entry is tagged with.
    pub max_entity_tags: Option<usize>,
}

/// `[redis]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The environment variable holding the Redis URL (it may hold a password).
    pub url_env: String,
    /// Every key's prefix.
    pub key_prefix: Option<String>,
    /// How long an instance may go without hearing the fleet (milliseconds).
    pub max_lag_ms: Option<u64>,
    /// The environment variable holding the key that signs entries and records.
    pub signing_key_env: Option<String>,
    /// How long a lookup waits for Redis before it is a miss (milliseconds).
    pub fetch_timeout_ms: Option<u64>,
    /// Whether an instance out of step with the fleet still accepts tokens (default
    /// `false`: it answers 503, as it cannot know the revocations it missed).
    pub accept_tokens_when_cut_off: Option<bool>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The environment variable holding the admin token (for the admin routes, and the
    /// credential `explain = "operators"` asks for unless `explain_token_env` names one).
    pub token_env: Option<String>,
    /// Who is told `x-cache-reason`: `never` (default), `operators`, `everyone`.
    #[serde(default)]
    pub explain: ExplainConfig,
    /// With `explain = "operators"`: the environment variable holding the credential
    /// operators send in `x-cache-explain`, when it should not be the admin token (a
    /// header on public routes is more exposed than one sent to the admin routes).
    pub explain_token_env: Option<String>,
}

/// Who is told reasons.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExplainConfig {
    /// Nobody.
    #[default]
    Never,
    /// Requests carrying the admin token in `x-cache-explain`.
    Operators,
    /// Everyone.
    Everyone,
}

impl Config {
    /// Reads a configuration from TOML text.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`], with the line, column and key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|err| ConfigError::Parse(parse_error(text, &err)))
    }

    /// Reads a configuration from a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] when it cannot be read, else as [`from_toml`](Self::from_toml).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|err| match err {
            ConfigError::Parse(message) => {
                ConfigError::Parse(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// The builder these settings make, secrets read from the environment. Add what only
    /// code can give (`.schema(&schema)`), then [`build`](ScopedCacheLayerBuilder::build).
    ///
    /// # Errors
    ///
    /// [`ConfigError::MissingEnv`] for a variable that is not set,
    /// [`ConfigError::Invalid`] for a value that cannot be used.
    pub fn builder(&self) -> Result<ScopedCacheLayerBuilder, ConfigError> {
        self.builder_with(|name| std::env::var(name).ok())
    }

    /// [`builder`](Self::builder), reading variables through `env` (tests, other
    /// secret stores).
    ///
    /// # Errors
    ///
    /// As [`builder`](Self::builder).
    pub fn builder_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ScopedCacheLayerBuilder, ConfigError> {
        let secret = |field: String, var: &str| read_secret(&env, field, var);
        let mut builder = ScopedCacheLayer::builder();
        for (i, verifier) in self.verifiers.iter().enumerate() {
            builder = builder.verifier(verifier.verifier(i, &secret)?);
        }
        if let Some(rule) = &self.default_rule {
            builder = builder.default_rule(rule.rule("default_rule".into())?);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            builder = builder.rule(rule.rule(format!("rule[{i}]"))?);
        }
        for (path, route) in &self.routes {
            builder = builder.route(path.clone(), route.policy());
        }
        if let Some(route) = &self.default_route {
            builder = builder.default_route(route.policy());
        }
        for (field, targets) in &self.invalidate {
            builder = builder.invalidate(field.clone(), targets.clone());
        }
        builder = self.limits.apply(builder);
        if let Some(redis) = &self.redis {
            builder = redis.apply(builder, &secret)?;
        }
        if let Some(admin) = &self.admin {
            let explain = match admin.explain {
                ExplainConfig::Never => Explain::Never,
                ExplainConfig::Operators => {
                    Explain::ToOperators(match (&admin.explain_token_env, &admin.token_env) {
                        (Some(var), _) => token(&env, "admin.explain_token_env", var)?,
                        (None, Some(var)) => token(&env, "admin.token_env", var)?,
                        (None, None) => {
                            return Err(ConfigError::Invalid {
                                field: "admin.explain".into(),
                                reason: "\"operators\" needs token_env or explain_token_env: \
                                         the credential operators send"
                                    .into(),
                            });
                        }
                    })
                }
                ExplainConfig::Everyone => Explain::Everyone,
            };
            builder = builder.explain(explain);
        }
        Ok(builder)
    }

    /// The admin token the file names, if its `[admin]` table has a `token_env`.
    ///
    /// # Errors
    ///
    /// As [`builder`](Self::builder), for `admin.token_env`.
    pub fn admin_token(&self) -> Result<Option<AdminToken>, ConfigError> {
        self.admin_token_with(|name| std::env::var(name).ok())
    }

    /// [`admin_token`](Self::admin_token), reading variables through `env` (the same
    /// one given to [`builder_with`](Self::builder_with)).
    ///
    /// # Errors
    ///
    /// As [`admin_token`](Self::admin_token).
    pub fn admin_token_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<AdminToken>, ConfigError> {
        match self
            .admin
            .as_ref()
            .and_then(|admin| admin.token_env.as_ref())
        {
            Some(var) => token(&env, "admin.token_env", var).map(Some),
            None => Ok(None),
        }
    }
}

/// The secret in the variable `var` names, for `field`.
fn read_secret(
    env: &impl Fn(&str) -> Option<String>,
    field: String,
    var: &str,
) -> Result<String, ConfigError> {
    if !is_variable_name(var) {
        return Err(ConfigError::Invalid {
            field,
            reason: "not the name of an environment variable (it is not repeated here, in \
                     case it is the secret itself)"
                .into(),
        });
    }
    env(var)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ConfigError::MissingEnv {
            field,
            var: var.to_owned(),
        })
}

/// An admin credential from the variable `var` names, for `field`.
fn token(
    env: &impl Fn(&str) -> Option<String>,
    field: &str,
    var: &str,
) -> Result<AdminToken, ConfigError> {
    let token = read_secret(env, field.to_owned(), var)?;
    AdminToken::new(token).map_err(|err| ConfigError::Invalid {
        field: field.to_owned(),
        reason: err.to_string(),
    })
}

/// A parse error without the text it was found in: toml's own message quotes the source
/// line, and serde's quotes a mistyped value; either may be a secret written where it
/// does not belong. The line, the column and the key are enough to find it.
fn parse_error(text: &str, err: &toml::de::Error) -> String {
    let mut message = String::new();
    let raw = err.message();
    // serde names an unknown variant (a value) in backticks, as it names keys: left out.
    let raw = match raw
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.split_once('`'))
    {
        Some((_, rest)) => format!("unknown variant `…`{rest}"),
        None => raw.to_owned(),
    };
    // Quoted values are left out; keys are quoted with backticks and kept.
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' if quoted => {
                quoted = false;
                message.push_str("…\"");
            }
            '"' => {
                quoted = true;
                message.push('"');
            }
            _ if quoted => {}
            c => message.push(c),
        }
    }
    match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Whether `var` can name an environment variable. A value that cannot is probably the
/// secret itself, written where its variable's name belongs: it is never repeated.
fn is_variable_name(var: &str) -> bool {
    let mut chars = var.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && var.len() <= 256
}

impl VerifierConfig {
    fn verifier(
        &self,
        index: usize,
        secret: &impl Fn(String, &str) -> Result<String, ConfigError>,
    ) -> Result<Verifier, ConfigError> {
        let field = |name: &str| format!("verifier[{index}].{name}");
        let invalid = |name: &str, reason: &str| ConfigError::Invalid {
            field: field(name),
            reason: reason.to_owned(),
        };
        let sources = [
            self.secret_env.is_some(),
            self.public_key_pem_file.is_some(),
            self.jwks_url.is_some(),
            self.oidc_issuer.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                "secret_env",
                "give exactly one of secret_env, public_key_pem_file, jwks_url, oidc_issuer",
            ));
        }
        let algorithm = || {
            self.algorithm
                .ok_or_else(|| invalid("algorithm", "required with a secret or a PEM key"))
        };
        if self.algorithm.is_some() && (self.jwks_url.is_some() || self.oidc_issuer.is_some()) {
            return Err(invalid(
                "algorithm",
                "a JWKS names each key's algorithm; give it only with a secret or a PEM key",
            ));
        }
        if self.any_audience && !self.audiences.is_empty() {
            return Err(invalid(
                "audiences",
                "give audiences or any_audience = true, not both",
            ));
        }
        let mut verifier = if let Some(var) = &self.secret_env {
            Verifier::hmac(algorithm()?, secret(field("secret_env"), var)?)
        } else if let Some(path) = &self.public_key_pem_file {
            let pem = std::fs::read(path)
                .map_err(|err| invalid("public_key_pem_file", &err.to_string()))?;
            match algorithm()? {
                Algorithm::EdDSA => Verifier::from_ed_pem(pem),
                alg @ (Algorithm::ES256 | Algorithm::ES384) => Verifier::from_ec_pem(alg, pem),
                alg => Verifier::from_rsa_pem(alg, pem),
            }
        } else {
            let source = match (&self.jwks_url, &self.oidc_issuer) {
                (Some(url), _) => JwksSource::url(url),
                (None, Some(issuer)) => JwksSource::oidc(issuer.clone()),
                (None, None) => return Err(invalid("jwks_url", "missing")),
            };
            let source = source
                .build()
                .map_err(|err| invalid("jwks_url", &err.to_string()))?;
            Verifier::jwks(source)
        };
        if !self.issuers.is_empty() {
            verifier = verifier.issuer(self.issuers.clone());
        }
        if self.any_audience {
            verifier = verifier.any_audience();
        } else {
            verifier = verifier.audience(self.audiences.clone());
        }
        if let Some(leeway) = self.leeway_secs {
            verifier = verifier.leeway(Duration::from_secs(leeway));
        }
        Ok(verifier)
    }
}

impl RuleConfig {
    fn rule(&self, field: String) -> Result<Rule, ConfigError> {
        let mut rule = match (&self.root_field, &self.operation) {
            (Some(root_field), None) => Rule::root_field(root_field.clone()),
            (None, Some(operation)) => Rule::operation(operation.clone()),
            (None, None) if field == "default_rule" => Rule::new(),
            _ => {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "give exactly one of root_field and operation".into(),
                });
            }
        };
        if field == "default_rule" && (self.root_field.is_some() || self.operation.is_some()) {
            return Err(ConfigError::Invalid {
                field,
                reason: "the default rule matches no field or operation of its own".into(),
            });
        }
        match &self.scope {
            Some(ScopeConfig::Claims(claims)) => rule = rule.scope(Scope::claims(claims.clone())),
            Some(ScopeConfig::Learned(word)) if word == "auto" => rule = rule.scope(Scope::auto()),
            Some(ScopeConfig::Learned(word)) => {
                return Err(ConfigError::Invalid {
                    field: format!("{field}.scope"),
                    reason: format!("a list of claims, or \"auto\"; not {word:?}"),
                });
            }
            None => {}
        }
        if let Some(secs) = self.max_age_secs {
            rule = rule.max_age(Duration::from_secs(secs));
        }
        if let Some(secs) = self.stale_while_revalidate_secs {
            rule = rule.stale_while_revalidate(Duration::from_secs(secs));
        }
        if let Some(secs) = self.stale_if_error_secs {
            rule = rule.stale_if_error(Duration::from_secs(secs));
        }
        if self.bypass {
            rule = rule.bypass();
        }
        Ok(rule)
    }
}

impl RouteConfig {
    fn policy(&self) -> RoutePolicy {
        let policy = match self.policy {
            PolicyConfig::Cached => RoutePolicy::cached(),
            PolicyConfig::VerifyOnly => RoutePolicy::verify_only(),
            PolicyConfig::Passthrough => RoutePolicy::passthrough(),
        }
        .require_auth(self.require_auth);
        if self.negotiated_accept {
            policy.negotiated_accept()
        } else {
            policy
        }
    }
}

impl LimitsConfig {
    fn apply(&self, mut builder: ScopedCacheLayerBuilder) -> ScopedCacheLayerBuilder {
        if let Some(n) = self.max_bytes {
            builder = builder.max_bytes(n);
        }
        if let Some(n) = self.max_entry_bytes {
            builder = builder.max_entry_bytes(n);
        }
        if let Some(n) = self.max_request_bytes {
            builder = builder.max_request_bytes(n);
        }
        if let Some(n) = self.max_nesting {
            builder = builder.max_nesting(n);
        }
        if let Some(n) = self.max_selections {
            builder = builder.max_selections(n);
        }
        if let Some(n) = self.max_token_bytes {
            builder = builder.max_token_bytes(n);
        }
        match self.token_cache_bytes {
            Some(0) => builder = builder.token_cache(false),
            Some(n) => builder = builder.token_cache_bytes(n),
            None => {}
        }
        if let Some(n) = self.max_revocations {
            builder = builder.max_revocations(n);
        }
        if let Some(secs) = self.revocation_retention_secs {
            builder = builder.revocation_retention(Duration::from_secs(secs));
        }
        if let Some(n) = self.max_entity_tags {
            builder = builder.max_entity_tags(n);
        }
        builder
    }
}

impl RedisConfig {
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_self))]
    fn apply(
        &self,
        builder: ScopedCacheLayerBuilder,
        secret: &impl Fn(String, &str) -> Result<String, ConfigError>,
    ) -> Result<ScopedCacheLayerBuilder, ConfigError> {
        #[cfg(feature = "redis")]
        {
            let url = secret("redis.url_env".into(), &self.url_env)?;
            let mut tier = crate::RedisTier::new(url);
            if let Some(prefix) = &self.key_prefix {
                tier = tier.key_prefix(prefix.clone());
            }
            if let Some(ms) = self.max_lag_ms {
                tier = tier.max_lag(Duration::from_millis(ms));
            }
            if let Some(var) = &self.signing_key_env {
                tier = tier.signing_key(secret("redis.signing_key_env".into(), var)?);
            }
            if let Some(ms) = self.fetch_timeout_ms {
                tier = tier.fetch_timeout(Duration::from_millis(ms));
            }
            if let Some(accept) = self.accept_tokens_when_cut_off {
                tier = tier.accept_tokens_when_cut_off(accept);
            }
            Ok(builder.redis(tier))
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (builder, secret);
            Err(ConfigError::Invalid {
                field: "redis".into(),
                reason: "this build has no Redis tier (feature `redis`)".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests;
