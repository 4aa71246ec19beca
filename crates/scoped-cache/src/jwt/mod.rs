//! Bearer-token verification: where the token comes from, which keys may check it, and
//! what its claims must satisfy.

mod jwks;
mod keys;
mod keyset;
pub(crate) mod token;
mod token_cache;
mod validation;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

pub use self::jwks::{JwksSource, JwksSourceBuilder, KeyFetchError};
pub use self::keys::Key;
use self::keys::ResolvedKey;
use self::validation::ClaimRules;
pub(crate) use self::verify::{IssuerKeys, TokenVerifier};
use crate::BuildError;

/// Longest [`Verifier::leeway`]: clock skew is seconds; a day already accepts tokens long
/// expired, and keeps `exp` + leeway far from any overflow.
const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How tokens are verified: the keys that may sign them and the claims they must carry.
///
/// Built from static [`Key`]s and/or a [`JwksSource`] (a JWKS URL or OIDC discovery); the
/// shortcuts [`hmac`](Self::hmac), [`from_rsa_pem`](Self::from_rsa_pem),
/// [`from_ec_pem`](Self::from_ec_pem), [`from_ed_pem`](Self::from_ed_pem),
/// [`from_jwk`](Self::from_jwk) and [`jwks`](Self::jwks) start with one. Static keys are
/// parsed and checked for strength when the layer is built; JWKS keys when fetched.
///
/// A layer can hold several verifiers, one per identity provider: the token's `iss` picks
/// the verifier, and each has its own keys and audiences.
///
/// Defaults: `exp` required, no leeway, any issuer. An audience must be configured (or
/// explicitly waived with [`any_audience`](Self::any_audience)).
///
/// With several key sources (more than one [`JwksSource`], or static keys plus one) and
/// several accepted issuers, each key and source must say which issuers it vouches for
/// ([`Key::issuer`], [`JwksSourceBuilder::issuer`]; an OIDC source is bound to its own
/// issuer), so that no provider's key can sign for another's `iss`.
///
/// ```
/// use std::time::Duration;
/// use jsonwebtoken::Algorithm;
/// use scoped_cache::Verifier;
///
/// let verifier = Verifier::hmac(Algorithm::HS256, "a development secret of 32 bytes!")
///     .issuer(["forum-demo"])
///     .audience(["forum-api"])
///     .leeway(Duration::from_secs(30));
/// # let _ = verifier;
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<Key>,
    sources: Vec<JwksSource>,
    rules: ClaimRules,
    any_audience: bool,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier with no keys yet; add them with [`key`](Self::key).
    pub fn new() -> Self {
        Self {
            keys: Vec::new(),
            sources: Vec::new(),
            rules: ClaimRules {
                issuers: Vec::new(),
                audiences: Vec::new(),
                leeway: Duration::ZERO,
                require_exp: true,
                required: Vec::new(),
            },
            any_audience: false,
        }
    }

    /// A verifier with one HMAC secret (see [`Key::hmac`]).
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Self {
        Self::new().key(Key::hmac(alg, secret))
    }

    /// A verifier with one RSA public key in PEM (see [`Key::rsa_pem`]).
    pub fn from_rsa_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Self {
        Self::new().key(Key::rsa_pem(alg, pem))
    }

    /// A verifier with one EC public key in PEM (see [`Key::ec_pem`]).
    pub fn from_ec_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Self {
        Self::new().key(Key::ec_pem(alg, pem))
    }

    /// A verifier with one Ed25519 public key in PEM (see [`Key::ed_pem`]).
    pub fn from_ed_pem(pem: impl AsRef<[u8]>) -> Self {
        Self::new().key(Key::ed_pem(pem))
    }

    /// A verifier with one JWK given as JSON text (see [`Key::jwk_json`]).
    pub fn from_jwk(json: impl Into<String>) -> Self {
        Self::new().key(Key::jwk_json(json))
    }

    /// A verifier whose keys come from a [`JwksSource`]. For an OIDC source, or one bound
    /// with [`JwksSourceBuilder::issuer`], `iss` must be one of its issuers.
    pub fn jwks(source: JwksSource) -> Self {
        Self::new().key_source(source)
    }

    /// Adds a [`JwksSource`]; its keys are used beside any static keys. Beside other key
    /// sources, with several issuers accepted, every source must be bound to its issuers
    /// (see [`Verifier`]).
    #[must_use]
    pub fn key_source(mut self, source: JwksSource) -> Self {
        self.sources.push(source);
        self
    }

    /// Adds a key. With several keys, a token's `kid` picks among them; tokens without a
    /// `kid` are tried against each key that allows their algorithm.
    #[must_use]
    pub fn key(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// Accepted `iss` values. Default: any. When set, `iss` is required. Issuers bound to
    /// keys and sources ([`Key::issuer`], [`JwksSourceBuilder::issuer`], OIDC) are accepted
    /// too.
    #[must_use]
    pub fn issuer<I: IntoIterator<Item = S>, S: Into<String>>(mut self, issuers: I) -> Self {
        self.rules.issuers = issuers.into_iter().map(Into::into).collect();
        self
    }

    /// Accepted `aud` values; a token's `aud` (string or array) must name one, and `aud` is
    /// required. `build()` refuses a verifier with neither this nor
    /// [`any_audience`](Self::any_audience): a token minted for another service of the same
    /// identity provider must not pass by default.
    #[must_use]
    pub fn audience<I: IntoIterator<Item = S>, S: Into<String>>(mut self, audiences: I) -> Self {
        self.rules.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts tokens whatever their `aud`, explicitly. Prefer [`audience`](Self::audience).
    #[must_use]
    pub fn any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Clock skew tolerated on `exp` and `nbf`, in whole or fractional seconds. Default:
    /// zero; at most a day. A token past `exp` but within the leeway is valid, and stays in
    /// the verified-token cache until `exp` + leeway.
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.rules.leeway = leeway;
        self
    }

    /// Whether tokens without `exp` are refused. Default: `true`. A token that has `exp`
    /// is always checked against it.
    #[must_use]
    pub fn require_exp(mut self, required: bool) -> Self {
        self.rules.require_exp = required;
        self
    }

    /// Top-level claims every token must carry, e.g. `["sub"]`. Default: none.
    #[must_use]
    pub fn required_claims<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.rules.required = names.into_iter().map(Into::into).collect();
        self
    }

    pub(crate) fn build(self) -> Result<IssuerKeys, BuildError> {
        install_crypto_provider();
        if self.keys.is_empty() && self.sources.is_empty() {
            return Err(BuildError::NoKeys);
        }
        let static_keys: Vec<Arc<ResolvedKey>> = self
            .keys
            .into_iter()
            .map(|key| key.resolve().map(Arc::new))
            .collect::<Result<_, _>>()?;
        if self.rules.audiences.is_empty() && !self.any_audience {
            return Err(BuildError::AudienceNotConfigured);
        }
        if self.rules.leeway > MAX_LEEWAY {
            return Err(BuildError::DurationTooLong {
                field: "leeway",
                max: MAX_LEEWAY,
            });
        }
        let mut rules = self.rules;
        // A bound key or source vouches for its issuers (OIDC: the issuer the keys were
        // discovered from), so the verifier accepts them.
        let bound = static_keys
            .iter()
            .flat_map(|key| &key.issuers)
            .chain(self.sources.iter().flat_map(JwksSource::bound_issuers));
        for issuer in bound {
            if !rules.issuers.contains(issuer) {
                rules.issuers.push(issuer.clone());
            }
        }
        // Several sources under several issuers (or any): unless each is bound, any
        // provider's key would vouch for every other provider's `iss`.
        let source_count = usize::from(!static_keys.is_empty()) + self.sources.len();
        let all_bound = static_keys.iter().all(|key| !key.issuers.is_empty())
            && self
                .sources
                .iter()
                .all(|source| !source.bound_issuers().is_empty());
        if source_count > 1 && rules.issuers.len() != 1 && !all_bound {
            return Err(BuildError::UnboundKeySource);
        }
        Ok(IssuerKeys {
            static_keys,
            sources: self.sources,
            rules,
        })
    }
}

/// jsonwebtoken panics at the first verification when its crypto provider cannot be chosen
/// from features (none or both enabled, as a dependency may do). Installing ours explicitly
/// makes that impossible; if another provider was installed first, it is used instead.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
