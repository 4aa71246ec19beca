//! Verifying one token: parse, pick the issuer's verifier, find keys, check the signature
//! and the claims, with the verified-token cache in front.
//!
//! jsonwebtoken's `decode` parses the header with an `Algorithm` enum that does not know
//! the RFC 9864 name `Ed25519`, and its claim validation is private; so the header is read
//! here, the signature is checked with `jsonwebtoken::crypto::verify`, and the claims by
//! [`ClaimRules`] (same rules as jsonwebtoken ≥ 10.3), once, on the map resolvers get.

use std::str::FromStr;
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::BuildError;
use crate::claims::Claims;
use crate::jwt::JwksSource;
use crate::jwt::keys::ResolvedKey;
use crate::jwt::token;
use crate::jwt::token_cache::{TokenCache, Verified};
use crate::jwt::validation::ClaimRules;
use crate::observe::names;
use crate::rejection::AuthErrorKind;

/// One verifier's keys and rules, checked.
#[derive(Debug)]
pub(crate) struct IssuerKeys {
    pub(crate) static_keys: Vec<Arc<ResolvedKey>>,
    pub(crate) sources: Vec<JwksSource>,
    pub(crate) rules: ClaimRules,
}

/// All verifiers of a layer, and the verified-token cache.
#[derive(Debug)]
pub(crate) struct TokenVerifier {
    issuers: Vec<IssuerKeys>,
    cache: Option<TokenCache>,
    #[cfg(test)]
    pub(crate) signature_checks: AtomicUsize,
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

struct Parsed<'t> {
    alg: Algorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
    message: &'t [u8],
    signature: &'t str,
}

impl TokenVerifier {
    /// The verified-token cache's usage, if there is one.
    pub(crate) fn token_usage(&self) -> Option<crate::health::Usage> {
        self.cache.as_ref().map(TokenCache::usage)
    }

    /// Every JWKS source of every verifier.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &JwksSource> {
        self.issuers.iter().flat_map(|issuer| &issuer.sources)
    }

    /// Checks that tokens can be routed to exactly one verifier by `iss`.
    pub(crate) fn new(
        issuers: Vec<IssuerKeys>,
        cache_bytes: Option<u64>,
    ) -> Result<Self, BuildError> {
        if issuers.len() > 1 {
            let mut seen = std::collections::HashSet::new();
            for issuer in &issuers {
                if issuer.rules.issuers.is_empty() {
                    return Err(BuildError::AmbiguousIssuer("(none)".into()));
                }
                for name in &issuer.rules.issuers {
                    if !seen.insert(name.clone()) {
                        return Err(BuildError::AmbiguousIssuer(name.clone()));
                    }
                }
            }
        }
        Ok(Self {
            issuers,
            cache: cache_bytes.map(TokenCache::new),
            #[cfg(test)]
            signature_checks: AtomicUsize::new(0),
        })
    }

    /// Verifies `token` and returns its claims, with a read log of their own.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, AuthErrorKind> {
        self.verify_at(token, crate::clock::now()).await
    }

    /// [`verify`](Self::verify), judging `exp` and `nbf` at `now` (Unix time): a request
    /// reads the clock once, for its token and its revocation alike.
    pub(crate) async fn verify_at(
        &self,
        token: &str,
        now: Duration,
    ) -> Result<Claims, AuthErrorKind> {
        if let Some(cache) = &self.cache
            && let Some(hit) = cache.get(token)
        {
            if self.still_valid(&hit, now) {
                return Ok(hit.claims.for_request());
            }
            cache.remove(token);
        }
        // RFC 6750 §2.1: a bearer credential is a `b64token`. Checked here, not when the
        // header is read: a token found in the cache is the same bytes as one that passed.
        if !token::is_b64token(token.as_bytes()) {
            return Err(AuthErrorKind::Malformed);
        }
        // In a future of its own: it may fetch keys, and a cached token's request should
        // not carry (and move around) that state.
        let started = std::time::Instant::now();
        let verified = Box::pin(self.verify_signature(token, now))
            .instrument(tracing::info_span!("scoped_cache.verify"))
            .await;
        metrics::histogram!(names::VERIFICATION_SECONDS).record(started.elapsed().as_secs_f64());
        verified
    }

    /// The full verification of a token the cache did not vouch for; caches the result.
    async fn verify_signature(&self, token: &str, now: Duration) -> Result<Claims, AuthErrorKind> {
        let parsed = parse(token)?;
        let issuer_index = self.select(&parsed.claims)?;
        let issuer = &self.issuers[issuer_index];
        let (key, source) = self.check_signature(issuer, &parsed).await?;
        issuer.rules.check_at(&parsed.claims, now.as_secs_f64())?;
        // Revocation is checked by the layer on every request, cache hit or not.
        let claims = Claims::new(parsed.claims).verified_by(key.kid.as_deref());
        if let Some(cache) = &self.cache {
            cache.insert(
                token,
                Verified::new(
                    claims.clone(),
                    issuer_index,
                    source,
                    Arc::downgrade(&key),
                    &issuer.rules,
                ),
            );
        }
        Ok(claims.for_request())
    }

    /// The longest leeway any verifier grants past `exp`.
    pub(crate) fn max_leeway(&self) -> std::time::Duration {
        self.issuers
            .iter()
            .map(|issuer| issuer.rules.leeway)
            .max()
            .unwrap_or_default()
    }

    fn still_valid(&self, hit: &Verified, now: Duration) -> bool {
        let Some(issuer) = self.issuers.get(hit.issuer) else {
            return false;
        };
        hit.key.strong_count() > 0
            && hit
                .source
                .is_none_or(|s| issuer.sources.get(s).is_some_and(JwksSource::is_usable))
            && hit.window.contains(now.as_secs_f64())
    }

    /// The verifier for the token's (not yet verified) `iss`. With one verifier, it is
    /// that one, whose own rules then check `iss`.
    fn select(&self, claims: &Map<String, Value>) -> Result<usize, AuthErrorKind> {
        if self.issuers.len() == 1 {
            return Ok(0);
        }
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AuthErrorKind::WrongIssuer)?;
        self.issuers
            .iter()
            .position(|issuer| issuer.rules.issuers.iter().any(|known| known == iss))
            .ok_or(AuthErrorKind::WrongIssuer)
    }

    /// The key that verifies the signature, and the index of the JWKS source it came from.
    async fn check_signature(
        &self,
        issuer: &IssuerKeys,
        token: &Parsed<'_>,
    ) -> Result<(Arc<ResolvedKey>, Option<usize>), AuthErrorKind> {
        let kid = token.kid.as_deref();
        let mut outcome = Outcome::default();
        // A bound key or source vouches only for its own issuers (an OIDC source's is the
        // one it was discovered from); an unbound one for any the rules accept.
        let iss = token.claims.get("iss").and_then(Value::as_str);
        let vouches_for = |bound: &[String]| {
            bound.is_empty() || iss.is_some_and(|iss| bound.iter().any(|b| b == iss))
        };
        let by_kid = |key: &&Arc<ResolvedKey>| match (kid, &key.kid) {
            (Some(wanted), Some(kid)) => wanted == kid,
            _ => true,
        };
        for key in issuer
            .static_keys
            .iter()
            .filter(by_kid)
            .filter(|key| vouches_for(&key.issuers))
        {
            if self.try_key(key, token, &mut outcome) {
                return Ok((Arc::clone(key), None));
            }
        }
        let eligible: Vec<(usize, &JwksSource)> = issuer
            .sources
            .iter()
            .enumerate()
            .filter(|(_, source)| vouches_for(source.bound_issuers()))
            .collect();
        // With several sources, ask only those that hold the kid, so a token of one source
        // never makes another refresh; if none holds it, each may refresh (rate-limited).
        let holding: Vec<(usize, &JwksSource)> = match kid {
            Some(kid) => eligible
                .iter()
                .copied()
                .filter(|(_, source)| source.has_kid_now(kid))
                .collect(),
            None => Vec::new(),
        };
        let asked = if holding.is_empty() {
            eligible
        } else {
            holding
        };
        for (index, source) in asked {
            match source.keys(kid).await {
                Ok(found) => {
                    let mut candidates = 0;
                    for key in found.set.candidates(kid) {
                        candidates += 1;
                        if self.try_key(key, token, &mut outcome) {
                            return Ok((Arc::clone(key), Some(index)));
                        }
                    }
                    // No key for this kid, and the provider could not say it has none.
                    if candidates == 0 && found.kid_unconfirmed {
                        outcome.unavailable = true;
                    }
                }
                Err(_) => outcome.unavailable = true,
            }
        }
        Err(if outcome.algorithm_allowed {
            AuthErrorKind::BadSignature
        } else if outcome.key_found {
            AuthErrorKind::DisallowedAlgorithm
        } else if outcome.unavailable {
            AuthErrorKind::KeysUnavailable
        } else {
            AuthErrorKind::UnknownKey
        })
    }

    fn try_key(&self, key: &ResolvedKey, token: &Parsed<'_>, outcome: &mut Outcome) -> bool {
        outcome.key_found = true;
        if !key.algorithms.contains(&token.alg) {
            return false;
        }
        outcome.algorithm_allowed = true;
        #[cfg(test)]
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        jsonwebtoken::crypto::verify(token.signature, token.message, &key.decoding, token.alg)
            .unwrap_or(false)
    }
}

#[derive(Default)]
struct Outcome {
    key_found: bool,
    algorithm_allowed: bool,
    unavailable: bool,
}

/// Splits and decodes a compact JWS. Nothing here is trusted until the signature verifies;
/// the payload is read first only to route the token to its issuer's verifier.
fn parse(token: &str) -> Result<Parsed<'_>, AuthErrorKind> {
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
    let claims: Map<String, Value> = decode_part(payload)?;
    let message_len = token.len() - signature.len() - 1;
    Ok(Parsed {
        alg,
        kid: header.kid,
        claims,
        message: &token.as_bytes()[..message_len],
        signature,
    })
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
    use crate::jwt::{Key, Verifier};
    use crate::test_helpers::*;

    fn verifier_of(v: Verifier) -> TokenVerifier {
        verifier(v)
    }

    fn verifier(v: Verifier) -> TokenVerifier {
        TokenVerifier::new(vec![v.build().unwrap()], None).unwrap()
    }

    fn hs256() -> TokenVerifier {
        verifier(
            Verifier::hmac(Algorithm::HS256, SECRET)
                .issuer(["forum-demo"])
                .audience(["forum-api"]),
        )
    }

    #[tokio::test]
    async fn valid_hs256_token_yields_claims() {
        let claims = hs256()
            .verify(&hs256_token(json!({"sub": "u1"})))
            .await
            .unwrap();
        assert_eq!(claims.subject(), Some("u1"));
    }

    #[tokio::test]
    async fn tampered_payload_is_bad_signature() {
        let token = hs256_token(json!({"sub": "u1"}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&standard_claims(json!({"sub": "admin"}))).unwrap());
        parts[1] = &forged;
        assert_eq!(
            hs256().verify(&parts.join(".")).await.err(),
            Some(AuthErrorKind::BadSignature)
        );
    }

    #[tokio::test]
    async fn alg_none_is_disallowed() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&standard_claims(json!({"sub": "u1"}))).unwrap());
        let token = format!("{header}.{payload}.");
        assert_eq!(
            hs256().verify(&token).await.err(),
            Some(AuthErrorKind::DisallowedAlgorithm)
        );
    }

    #[tokio::test]
    async fn token_alg_never_widens_the_key_allow_list() {
        // An HS384 token signed with the same secret is refused by an HS256-only key.
        let token = encode(
            &Header::new(Algorithm::HS384),
            &standard_claims(json!({"sub": "u1"})),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            hs256().verify(&token).await.err(),
            Some(AuthErrorKind::DisallowedAlgorithm)
        );
    }

    #[tokio::test]
    async fn hmac_token_is_not_verified_with_an_rsa_public_key_as_secret() {
        // The classic confusion attack: sign HS256 with the RSA public key's PEM.
        let verifier = Verifier::from_rsa_pem(Algorithm::RS256, RSA_PUBLIC_PEM).any_audience();
        let verifier = verifier_of(verifier);
        let token = encode(
            &Header::new(Algorithm::HS256),
            &standard_claims(json!({})),
            &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&token).await.err(),
            Some(AuthErrorKind::DisallowedAlgorithm)
        );
    }

    #[tokio::test]
    async fn crit_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["b64".into()]);
        let token = encode(
            &header,
            &standard_claims(json!({})),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            hs256().verify(&token).await.err(),
            Some(AuthErrorKind::UnsupportedCritical)
        );
    }

    #[tokio::test]
    async fn asymmetric_families_verify() {
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
            let verifier = verifier_of(verifier.any_audience());
            let token = encode(&Header::new(alg), &claims, &signing).unwrap();
            assert_eq!(
                verifier.verify(&token).await.unwrap().subject(),
                Some("u1"),
                "{alg:?}"
            );
        }
    }

    #[tokio::test]
    async fn rfc9864_ed25519_alg_name_is_accepted() {
        let verifier = Verifier::from_ed_pem(ED_PUBLIC_PEM).any_audience();
        let verifier = verifier_of(verifier);
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
        let claims = verifier
            .verify(&format!("{message}.{signature}"))
            .await
            .unwrap();
        assert_eq!(claims.subject(), Some("u1"));
    }

    #[tokio::test]
    async fn kid_selects_the_key() {
        let other = [3u8; 32];
        let verifier = Verifier::new()
            .key(Key::hmac(Algorithm::HS256, other).kid("old"))
            .key(Key::hmac(Algorithm::HS256, SECRET).kid("new"))
            .any_audience();
        let verifier = verifier_of(verifier);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("new".into());
        let claims = standard_claims(json!({"sub": "u1"}));
        let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(verifier.verify(&token).await.is_ok());
        header.kid = Some("missing".into());
        let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert_eq!(
            verifier.verify(&token).await.err(),
            Some(AuthErrorKind::UnknownKey)
        );
    }

    #[tokio::test]
    async fn a_key_bound_to_one_issuer_never_verifies_another() {
        let other = [7u8; 32];
        let verifier = verifier_of(
            Verifier::new()
                .key(Key::hmac(Algorithm::HS256, SECRET).issuer(["forum-demo"]))
                .key(Key::hmac(Algorithm::HS256, other).issuer(["other"]))
                .audience(["forum-api"]),
        );
        let own = hs256_token(json!({"sub": "u1"}));
        assert_eq!(verifier.verify(&own).await.unwrap().subject(), Some("u1"));
        let theirs = encode(
            &Header::new(Algorithm::HS256),
            &standard_claims(json!({"sub": "u2", "iss": "other"})),
            &EncodingKey::from_secret(&other),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&theirs).await.unwrap().subject(),
            Some("u2")
        );
        // Signed with forum-demo's key but claiming `other`: that key is never asked.
        let impostor = hs256_token(json!({"sub": "admin", "iss": "other"}));
        assert_eq!(
            verifier.verify(&impostor).await.err(),
            Some(AuthErrorKind::BadSignature)
        );
        assert_eq!(verifier.signature_checks.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn several_key_sources_under_several_issuers_must_each_be_bound() {
        let jwks = || JwksSource::url("https://idp.example/jwks.json");
        let key = || Key::hmac(Algorithm::HS256, SECRET);
        let build = |v: Verifier| v.any_audience().build();
        let unbound = [
            // Static keys plus a JWKS source, two issuers.
            Verifier::new()
                .key(key())
                .key_source(jwks().build().unwrap())
                .issuer(["a", "b"]),
            // The same accepting any issuer.
            Verifier::new()
                .key(key())
                .key_source(jwks().build().unwrap()),
            // Two JWKS sources accepting any issuer.
            Verifier::jwks(jwks().build().unwrap()).key_source(jwks().build().unwrap()),
            // Two JWKS sources, one bound, two issuers.
            Verifier::jwks(jwks().issuer(["a"]).build().unwrap())
                .key_source(jwks().build().unwrap())
                .issuer(["b"]),
            // A bound static key beside an unbound source: `a` and `b` are accepted.
            Verifier::new()
                .key(key().issuer(["a"]))
                .key_source(jwks().build().unwrap())
                .issuer(["b"]),
        ];
        for (n, verifier) in unbound.into_iter().enumerate() {
            assert!(
                matches!(build(verifier), Err(BuildError::UnboundKeySource)),
                "case {n}"
            );
        }
        let valid = [
            // Every source bound.
            Verifier::new()
                .key(key().issuer(["a"]))
                .key_source(jwks().issuer(["b"]).build().unwrap()),
            // Several sources, one issuer.
            Verifier::new()
                .key(key())
                .key_source(jwks().build().unwrap())
                .issuer(["a"]),
            // One source (the static keys), several issuers.
            Verifier::new()
                .key(key())
                .key(Key::hmac(Algorithm::HS256, [7u8; 32]))
                .issuer(["a", "b"]),
            Verifier::jwks(jwks().build().unwrap()).issuer(["a", "b"]),
        ];
        for (n, verifier) in valid.into_iter().enumerate() {
            let built = build(verifier);
            assert!(built.is_ok(), "case {n}: {built:?}");
        }
        let bound = build(
            Verifier::new()
                .key(key().issuer(["a"]))
                .key_source(jwks().issuer(["b"]).build().unwrap()),
        )
        .unwrap();
        assert_eq!(
            bound.rules.issuers,
            ["a", "b"],
            "bound issuers are accepted"
        );
    }

    #[test]
    fn unusable_issuer_bindings_are_refused() {
        let no_issuer: [&str; 0] = [];
        assert!(matches!(
            Verifier::new()
                .key(Key::hmac(Algorithm::HS256, SECRET).issuer(no_issuer))
                .any_audience()
                .build(),
            Err(BuildError::InvalidIssuerBinding { .. })
        ));
        assert!(matches!(
            JwksSource::url("https://idp.example/jwks.json")
                .issuer(no_issuer)
                .build(),
            Err(BuildError::InvalidIssuerBinding { .. })
        ));
        let oidc = || JwksSource::oidc("https://idp.example");
        assert!(matches!(
            oidc().issuer(["https://other.example"]).build(),
            Err(BuildError::InvalidIssuerBinding { .. })
        ));
        let own = oidc().issuer(["https://idp.example"]).build().unwrap();
        assert_eq!(own.bound_issuers(), ["https://idp.example"]);
    }

    #[test]
    fn a_leeway_beyond_a_day_is_refused() {
        let with = |leeway| {
            Verifier::hmac(Algorithm::HS256, SECRET)
                .any_audience()
                .leeway(leeway)
                .build()
        };
        let day = std::time::Duration::from_secs(24 * 60 * 60);
        assert!(with(day).is_ok());
        for leeway in [
            day + std::time::Duration::from_secs(1),
            std::time::Duration::MAX,
        ] {
            match with(leeway) {
                Err(BuildError::DurationTooLong { field, max }) => {
                    assert_eq!((field, max), ("leeway", day));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn garbage_is_malformed_not_a_panic() {
        for token in ["", "a", "a.b", "a.b.c.d", "!!!.???.###", "e30.e30.e30"] {
            assert!(hs256().verify(token).await.is_err(), "{token}");
        }
        assert_eq!(
            hs256().verify("a.b").await.err(),
            Some(AuthErrorKind::Malformed)
        );
    }

    #[tokio::test]
    async fn verifier_without_keys_does_not_build() {
        assert!(matches!(Verifier::new().build(), Err(BuildError::NoKeys)));
        let no_audience = Verifier::hmac(Algorithm::HS256, SECRET).build();
        assert!(matches!(
            no_audience,
            Err(BuildError::AudienceNotConfigured)
        ));
    }
}

#[cfg(test)]
mod cache_tests {
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::*;
    use crate::jwt::Verifier;
    use crate::test_helpers::*;

    fn cached() -> TokenVerifier {
        let v = Verifier::hmac(Algorithm::HS256, SECRET)
            .issuer(["forum-demo"])
            .audience(["forum-api"]);
        TokenVerifier::new(vec![v.build().unwrap()], Some(1 << 20)).unwrap()
    }

    #[tokio::test]
    async fn a_credential_that_is_not_a_b64token_is_malformed() {
        let verifier = cached();
        let token = hs256_token(json!({"sub": "u1"}));
        for bad in [
            format!("{token} "),
            format!("a b{token}"),
            format!("{token}\""),
        ] {
            assert_eq!(
                verifier.verify(&bad).await.err(),
                Some(AuthErrorKind::Malformed),
                "{bad}"
            );
        }
        // The cache holds only tokens that passed: a verified one is served from it.
        assert!(verifier.verify(&token).await.is_ok());
        assert!(verifier.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn a_cached_token_skips_the_signature_check() {
        let verifier = cached();
        let token = hs256_token(json!({"sub": "u1"}));
        for _ in 0..3 {
            assert_eq!(verifier.verify(&token).await.unwrap().subject(), Some("u1"));
        }
        assert_eq!(verifier.signature_checks.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn each_hit_gets_its_own_read_log() {
        let verifier = cached();
        let token = hs256_token(json!({"sub": "u1", "role": "member"}));
        let first = verifier.verify(&token).await.unwrap();
        assert_eq!(first.claim_str("role"), Some("member"));
        let second = verifier.verify(&token).await.unwrap();
        assert!(second.read_log().first_uncovered(&[]).is_none());
        assert!(first.read_log().first_uncovered(&[]).is_some());
    }

    #[tokio::test]
    async fn an_expired_cached_token_is_refused() {
        let verifier = cached();
        let exp = jsonwebtoken::get_current_timestamp() + 1;
        let token = hs256_token(json!({"sub": "u1", "exp": exp}));
        assert!(verifier.verify(&token).await.is_ok());
        // The hit re-checks the claims against the wall clock that `exp` is written in;
        // with `exp` set in the past the entry must not be served.
        let past = hs256_token(json!({"sub": "u1", "exp": exp - 100}));
        assert_eq!(
            verifier.verify(&past).await.err(),
            Some(AuthErrorKind::Expired)
        );
        let entry = verifier.cache.as_ref().unwrap().get(&token).unwrap();
        let expired = Claims::new(
            json!({"sub": "u1", "exp": exp - 100, "iss": "forum-demo", "aud": "forum-api"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let stale = Verified::new(
            expired,
            0,
            None,
            entry.key.clone(),
            &verifier.issuers[0].rules,
        );
        assert!(!verifier.still_valid(&stale, crate::clock::now()));
        assert!(verifier.still_valid(&entry, crate::clock::now()));
    }

    #[tokio::test]
    async fn an_entry_whose_key_is_gone_is_not_served() {
        let verifier = cached();
        let token = hs256_token(json!({"sub": "u1"}));
        verifier.verify(&token).await.unwrap();
        let entry = verifier.cache.as_ref().unwrap().get(&token).unwrap();
        let orphan = Verified::new(
            entry.claims.clone(),
            0,
            None,
            std::sync::Weak::new(),
            &verifier.issuers[0].rules,
        );
        assert!(!verifier.still_valid(&orphan, crate::clock::now()));
    }

    #[tokio::test]
    async fn several_issuers_route_by_iss() {
        let a = Verifier::hmac(Algorithm::HS256, SECRET)
            .issuer(["forum-demo"])
            .audience(["forum-api"]);
        let b = Verifier::hmac(Algorithm::HS256, [7u8; 32])
            .issuer(["other"])
            .audience(["forum-api"]);
        let verifier =
            TokenVerifier::new(vec![a.build().unwrap(), b.build().unwrap()], None).unwrap();
        assert!(
            verifier
                .verify(&hs256_token(json!({"sub": "u1"})))
                .await
                .is_ok()
        );
        let unknown = hs256_token(json!({"sub": "u1", "iss": "nobody"}));
        assert_eq!(
            verifier.verify(&unknown).await.err(),
            Some(AuthErrorKind::WrongIssuer)
        );
        // Signed with verifier a's secret but claiming b's issuer: b's key refuses it.
        let forged = hs256_token(json!({"sub": "u1", "iss": "other"}));
        assert_eq!(
            verifier.verify(&forged).await.err(),
            Some(AuthErrorKind::BadSignature)
        );
    }

    #[tokio::test]
    async fn a_token_valid_only_by_leeway_stays_cached() {
        let v = Verifier::hmac(Algorithm::HS256, SECRET)
            .issuer(["forum-demo"])
            .audience(["forum-api"])
            .leeway(std::time::Duration::from_secs(60));
        let verifier = TokenVerifier::new(vec![v.build().unwrap()], Some(1 << 20)).unwrap();
        // Expired ten seconds ago: valid only thanks to the leeway.
        let exp = jsonwebtoken::get_current_timestamp() - 10;
        let token = hs256_token(json!({"sub": "u1", "exp": exp}));
        for _ in 0..3 {
            assert_eq!(verifier.verify(&token).await.unwrap().subject(), Some("u1"));
        }
        assert_eq!(verifier.signature_checks.load(Ordering::Relaxed), 1);
        // Past exp + leeway the hit is refused, as a full verification would refuse it.
        let past = hs256_token(json!({"sub": "u1", "exp": exp - 60}));
        assert_eq!(
            verifier.verify(&past).await.err(),
            Some(AuthErrorKind::Expired)
        );
    }

    #[test]
    fn several_issuers_must_be_distinct() {
        let a = || {
            Verifier::hmac(Algorithm::HS256, SECRET)
                .issuer(["x"])
                .audience(["y"])
                .build()
                .unwrap()
        };
        let none = Verifier::hmac(Algorithm::HS256, SECRET)
            .audience(["y"])
            .build()
            .unwrap();
        assert!(matches!(
            TokenVerifier::new(vec![a(), a()], None),
            Err(BuildError::AmbiguousIssuer(_))
        ));
        assert!(matches!(
            TokenVerifier::new(vec![a(), none], None),
            Err(BuildError::AmbiguousIssuer(_))
        ));
    }
}
