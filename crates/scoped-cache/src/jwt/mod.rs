//! Bearer-token verification: where the token comes from, which keys may check it, and
//! what its claims must satisfy.

mod keys;
pub(crate) mod token;
mod validation;

use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use self::keys::Key;
use self::keys::ResolvedKey;
use self::validation::ClaimRules;
use crate::BuildError;
use crate::claims::Claims;
use crate::rejection::AuthErrorKind;

/// How tokens are verified: the keys that may sign them and the claims they must carry.
///
/// Built from one or more [`Key`]s; the shortcuts [`hmac`](Self::hmac),
/// [`from_rsa_pem`](Self::from_rsa_pem), [`from_ec_pem`](Self::from_ec_pem),
/// [`from_ed_pem`](Self::from_ed_pem) and [`from_jwk`](Self::from_jwk) start with one key.
/// Keys are parsed and checked for strength when the layer is built.
///
/// Defaults: `exp` required, no leeway, any issuer. An audience must be configured (or
/// explicitly waived with [`any_audience`](Self::any_audience)).
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

    /// Adds a key. With several keys, a token's `kid` picks among them; tokens without a
    /// `kid` are tried against each key that allows their algorithm.
    #[must_use]
    pub fn key(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// Accepted `iss` values. Default: any. When set, `iss` is required.
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

    /// Clock skew tolerated on `exp` and `nbf`. Default: zero.
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

    pub(crate) fn build(self) -> Result<TokenVerifier, BuildError> {
        install_crypto_provider();
        if self.keys.is_empty() {
            return Err(BuildError::NoKeys);
        }
        let keys = self
            .keys
            .into_iter()
            .map(Key::resolve)
            .collect::<Result<_, _>>()?;
        if self.rules.audiences.is_empty() && !self.any_audience {
            return Err(BuildError::AudienceNotConfigured);
        }
        Ok(TokenVerifier {
            keys,
            rules: self.rules,
        })
    }
}

/// jsonwebtoken panics at the first verification when its crypto provider cannot be chosen
/// from features (none or both enabled, as a dependency may do). Installing ours explicitly
/// makes that impossible; if another provider was installed first, it is used instead.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// A verifier whose keys passed every build-time check.
#[derive(Debug)]
pub(crate) struct TokenVerifier {
    keys: Vec<ResolvedKey>,
    rules: ClaimRules,
}

/// The parts of a JOSE header this layer reads. `jku`, `x5u`, `x5c` and `jwk` are never
/// read: keys come only from configuration.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl TokenVerifier {
    /// Verifies `token` and returns its claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthErrorKind> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthErrorKind::Malformed);
        };
        let header: JoseHeader = decode_part(header)?;
        if header.crit.is_some() {
            return Err(AuthErrorKind::UnsupportedCritical);
        }
        let alg = match header.alg.as_str() {
            // RFC 9864 names the fully specified Ed25519 algorithm; it is EdDSA over Ed25519,
            // which is the only curve our EdDSA keys accept.
            "Ed25519" => Algorithm::EdDSA,
            name => Algorithm::from_str(name).map_err(|_| AuthErrorKind::DisallowedAlgorithm)?,
        };
        let by_kid: Vec<&ResolvedKey> = self
            .keys
            .iter()
            .filter(|key| match (&header.kid, &key.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .collect();
        if by_kid.is_empty() {
            return Err(AuthErrorKind::UnknownKey);
        }
        let message_len = token.len() - signature.len() - 1;
        let message = &token.as_bytes()[..message_len];
        let mut allowed = by_kid
            .into_iter()
            .filter(|key| key.algorithms.contains(&alg))
            .peekable();
        if allowed.peek().is_none() {
            return Err(AuthErrorKind::DisallowedAlgorithm);
        }
        let verified = allowed.any(|key| {
            jsonwebtoken::crypto::verify(signature, message, &key.decoding, alg).unwrap_or(false)
        });
        if !verified {
            return Err(AuthErrorKind::BadSignature);
        }
        let claims: Map<String, Value> = decode_part(payload)?;
        self.rules.check(&claims)?;
        Ok(Claims::new(claims))
    }
}

fn decode_part<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthErrorKind> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthErrorKind::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthErrorKind::Malformed)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;
    use crate::test_helpers::*;

    fn hs256() -> TokenVerifier {
        Verifier::hmac(Algorithm::HS256, SECRET)
            .issuer(["forum-demo"])
            .audience(["forum-api"])
            .build()
            .unwrap()
    }

    #[test]
    fn valid_hs256_token_yields_claims() {
        let claims = hs256().verify(&hs256_token(json!({"sub": "u1"}))).unwrap();
        assert_eq!(claims.subject(), Some("u1"));
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let token = hs256_token(json!({"sub": "u1"}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&standard_claims(json!({"sub": "admin"}))).unwrap());
        parts[1] = &forged;
        assert_eq!(
            hs256().verify(&parts.join(".")).err(),
            Some(AuthErrorKind::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_disallowed() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&standard_claims(json!({"sub": "u1"}))).unwrap());
        let token = format!("{header}.{payload}.");
        assert_eq!(
            hs256().verify(&token).err(),
            Some(AuthErrorKind::DisallowedAlgorithm)
        );
    }

    #[test]
    fn token_alg_never_widens_the_key_allow_list() {
        // An HS384 token signed with the same secret is refused by an HS256-only key.
        let token = encode(
            &Header::new(Algorithm::HS384),
            &standard_claims(json!({"sub": "u1"})),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            hs256().verify(&token).err(),
            Some(AuthErrorKind::DisallowedAlgorithm)
        );
    }

    #[test]
    fn hmac_token_is_not_verified_with_an_rsa_public_key_as_secret() {
        // The classic confusion attack: sign HS256 with the RSA public key's PEM.
        let verifier = Verifier::from_rsa_pem(Algorithm::RS256, RSA_PUBLIC_PEM)
            .any_audience()
            .build()
            .unwrap();
        let token = encode(
            &Header::new(Algorithm::HS256),
            &standard_claims(json!({})),
            &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&token).err(),
            Some(AuthErrorKind::DisallowedAlgorithm)
        );
    }

    #[test]
    fn crit_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["b64".into()]);
        let token = encode(
            &header,
            &standard_claims(json!({})),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            hs256().verify(&token).err(),
            Some(AuthErrorKind::UnsupportedCritical)
        );
    }

    #[test]
    fn asymmetric_families_verify() {
        let claims = standard_claims(json!({"sub": "u1"}));
        let cases = [
            (
                Verifier::from_rsa_pem(Algorithm::RS256, RSA_PUBLIC_PEM),
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap(),
            ),
            (
                Verifier::from_rsa_pem(Algorithm::PS256, RSA_PUBLIC_PEM),
                Algorithm::PS256,
                EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap(),
            ),
            (
                Verifier::from_ec_pem(Algorithm::ES256, EC_P256_PUBLIC_PEM),
                Algorithm::ES256,
                EncodingKey::from_ec_pem(EC_P256_PRIVATE_PEM.as_bytes()).unwrap(),
            ),
            (
                Verifier::from_ec_pem(Algorithm::ES384, EC_P384_PUBLIC_PEM),
                Algorithm::ES384,
                EncodingKey::from_ec_pem(EC_P384_PRIVATE_PEM.as_bytes()).unwrap(),
            ),
            (
                Verifier::from_ed_pem(ED_PUBLIC_PEM),
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(ED_PRIVATE_PEM.as_bytes()).unwrap(),
            ),
        ];
        for (verifier, alg, signing) in cases {
            let verifier = verifier.any_audience().build().unwrap();
            let token = encode(&Header::new(alg), &claims, &signing).unwrap();
            assert_eq!(
                verifier.verify(&token).unwrap().subject(),
                Some("u1"),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn rfc9864_ed25519_alg_name_is_accepted() {
        let verifier = Verifier::from_ed_pem(ED_PUBLIC_PEM)
            .any_audience()
            .build()
            .unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"Ed25519","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&standard_claims(json!({"sub": "u1"}))).unwrap());
        let message = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_ed_pem(ED_PRIVATE_PEM.as_bytes()).unwrap(),
            Algorithm::EdDSA,
        )
        .unwrap();
        let claims = verifier.verify(&format!("{message}.{signature}")).unwrap();
        assert_eq!(claims.subject(), Some("u1"));
    }

    #[test]
    fn kid_selects_the_key() {
        let other = [3u8; 32];
        let verifier = Verifier::new()
            .key(Key::hmac(Algorithm::HS256, other).kid("old"))
            .key(Key::hmac(Algorithm::HS256, SECRET).kid("new"))
            .any_audience()
            .build()
            .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("new".into());
        let claims = standard_claims(json!({"sub": "u1"}));
        let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(verifier.verify(&token).is_ok());
        header.kid = Some("missing".into());
        let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert_eq!(
            verifier.verify(&token).err(),
            Some(AuthErrorKind::UnknownKey)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for token in ["", "a", "a.b", "a.b.c.d", "!!!.???.###", "e30.e30.e30"] {
            assert!(hs256().verify(token).is_err(), "{token}");
        }
        assert_eq!(hs256().verify("a.b").err(), Some(AuthErrorKind::Malformed));
    }

    #[test]
    fn verifier_without_keys_does_not_build() {
        assert!(matches!(Verifier::new().build(), Err(BuildError::NoKeys)));
        let no_audience = Verifier::hmac(Algorithm::HS256, SECRET).build();
        assert!(matches!(
            no_audience,
            Err(BuildError::AudienceNotConfigured)
        ));
    }
}
