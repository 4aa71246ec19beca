//! Static verification keys: HMAC secrets, PEM public keys and JWKs, each with its own
//! algorithm allow-list, checked for strength when the layer is built.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

use crate::BuildError;

/// One key the verifier may check signatures with.
///
/// A key carries the algorithms it may verify (by default only the one it was created
/// with), and optionally a key id: a token naming a `kid` is checked only against keys with
/// that id or without one. The token's own `alg` header is used only to pick among the
/// allowed algorithms; it never widens them, and `none` is never allowed. A key can also be
/// bound to the issuers it may vouch for with [`issuer`](Self::issuer).
///
/// ```
/// use jsonwebtoken::Algorithm;
/// use scoped_cache::Key;
///
/// let key = Key::hmac(Algorithm::HS256, b"a development secret of 32 bytes!").kid("2024-01");
/// # let _ = key;
/// ```
#[derive(Clone)]
pub struct Key {
    material: Material,
    kid: Option<String>,
    algorithms: Option<Vec<Algorithm>>,
    issuers: Option<Vec<String>>,
}

#[derive(Clone)]
enum Material {
    Secret(Vec<u8>),
    RsaPem(Vec<u8>),
    EcPem(Vec<u8>),
    EdPem(Vec<u8>),
    Jwk(Box<Jwk>),
    JwkJson(String),
}

/// A key that passed every build-time check.
#[derive(Clone)]
pub(crate) struct ResolvedKey {
    pub(crate) decoding: DecodingKey,
    pub(crate) kid: Option<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    /// The `iss` values this key may vouch for; empty when it is not bound.
    pub(crate) issuers: Vec<String>,
}

impl Key {
    fn new(material: Material, alg: Option<Algorithm>) -> Self {
        Self {
            material,
            kid: None,
            algorithms: alg.map(|alg| vec![alg]),
            issuers: None,
        }
    }

    /// An HMAC secret for `alg` (HS256, HS384 or HS512). `build()` refuses secrets shorter
    /// than the hash output (32, 48 or 64 bytes).
    pub fn hmac(alg: Algorithm, secret: impl AsRef<[u8]>) -> Self {
        Self::new(Material::Secret(secret.as_ref().to_vec()), Some(alg))
    }

    /// An RSA public key in PEM (PKCS#1 or SPKI) for `alg` (RS* or PS*). `build()` refuses
    /// moduli under 2048 bits.
    pub fn rsa_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Self {
        Self::new(Material::RsaPem(pem.as_ref().to_vec()), Some(alg))
    }

    /// An EC public key in PEM for `alg`: ES256 with a P-256 key, ES384 with P-384.
    pub fn ec_pem(alg: Algorithm, pem: impl AsRef<[u8]>) -> Self {
        Self::new(Material::EcPem(pem.as_ref().to_vec()), Some(alg))
    }

    /// An Ed25519 public key in PEM, for EdDSA (header `alg` `EdDSA` or `Ed25519`).
    pub fn ed_pem(pem: impl AsRef<[u8]>) -> Self {
        Self::new(
            Material::EdPem(pem.as_ref().to_vec()),
            Some(Algorithm::EdDSA),
        )
    }

    /// A JWK. Its `alg` (or, for EC and OKP keys, its curve) picks the algorithm unless
    /// [`algorithms`](Self::algorithms) is given; its `kid` becomes the key id.
    pub fn jwk(jwk: Jwk) -> Self {
        Self::new(Material::Jwk(Box::new(jwk)), None)
    }

    /// A JWK as JSON text; parsed by `build()`.
    pub fn jwk_json(json: impl Into<String>) -> Self {
        Self::new(Material::JwkJson(json.into()), None)
    }

    /// Sets the key id matched against the token header's `kid`. Default: none (or the
    /// JWK's `kid`), which makes the key a candidate for every token.
    #[must_use]
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Replaces the algorithms this key may verify, e.g. `[RS256, PS256]` for one RSA key.
    /// Every algorithm must fit the key; `build()` checks.
    #[must_use]
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// Issuers (`iss` values) this key may vouch for: a token whose `iss` is not listed is
    /// never checked against it. Default: any issuer the verifier accepts. Required on every
    /// key when the [`Verifier`](crate::Verifier) also holds a
    /// [`JwksSource`](crate::JwksSource) and accepts several issuers. The verifier accepts
    /// these issuers too.
    #[must_use]
    pub fn issuer<I: IntoIterator<Item = S>, S: Into<String>>(mut self, issuers: I) -> Self {
        self.issuers = Some(issuers.into_iter().map(Into::into).collect());
        self
    }

    pub(crate) fn resolve(self) -> Result<ResolvedKey, BuildError> {
        let Key {
            material,
            kid,
            algorithms,
            issuers,
        } = self;
        if issuers.as_ref().is_some_and(Vec::is_empty) {
            return Err(BuildError::InvalidIssuerBinding {
                reason: "`issuer` needs at least one issuer",
            });
        }
        let (decoding, kind, jwk_kid, jwk_alg) = match material {
            Material::Secret(secret) => (
                DecodingKey::from_secret(&secret),
                KeyKind::Secret(secret.len()),
                None,
                None,
            ),
            Material::RsaPem(pem) => {
                let alg = first(&algorithms);
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|source| invalid(alg, source))?;
                let bits = rsa_bits_of_der(&key).map_err(|source| invalid(alg, source))?;
                (key, KeyKind::Rsa(bits), None, None)
            }
            Material::EcPem(pem) => {
                let alg = first(&algorithms);
                let key = DecodingKey::from_ec_pem(&pem).map_err(|source| invalid(alg, source))?;
                let curve = ec_curve_of_point(&key);
                (key, KeyKind::Ec(curve), None, None)
            }
            Material::EdPem(pem) => {
                let key = DecodingKey::from_ed_pem(&pem)
                    .map_err(|source| invalid(Algorithm::EdDSA, source))?;
                (key, KeyKind::Ed, None, None)
            }
            Material::JwkJson(json) => {
                let jwk: Jwk = serde_json::from_str(&json).map_err(|_| BuildError::InvalidJwk {
                    reason: "it is not a valid JWK",
                })?;
                return Key {
                    material: Material::Jwk(Box::new(jwk)),
                    kid,
                    algorithms,
                    issuers,
                }
                .resolve();
            }
            Material::Jwk(jwk) => resolve_jwk(&jwk)?,
        };
        let algorithms = match (algorithms, jwk_alg) {
            (Some(given), Some(declared)) if given != [declared] => {
                return Err(BuildError::InvalidJwk {
                    reason: "its `alg` differs from the algorithms configured for it",
                });
            }
            (Some(given), _) => given,
            (None, Some(declared)) => vec![declared],
            (None, None) => {
                kind.implied_algorithm()
                    .map(|alg| vec![alg])
                    .ok_or(BuildError::InvalidJwk {
                        reason: "it has no `alg`; pass one with `.algorithms([..])`",
                    })?
            }
        };
        if algorithms.is_empty() {
            return Err(BuildError::NoAlgorithms);
        }
        for &alg in &algorithms {
            kind.check(alg)?;
        }
        Ok(ResolvedKey {
            decoding,
            kid: kid.or(jwk_kid),
            algorithms,
            issuers: issuers.unwrap_or_default(),
        })
    }
}

/// What was learned about a key's material, enough to check algorithms and strength.
enum KeyKind {
    Secret(usize),
    Rsa(usize),
    Ec(Option<EllipticCurve>),
    Ed,
}

impl KeyKind {
    fn implied_algorithm(&self) -> Option<Algorithm> {
        match self {
            KeyKind::Ec(Some(EllipticCurve::P256)) => Some(Algorithm::ES256),
            KeyKind::Ec(Some(EllipticCurve::P384)) => Some(Algorithm::ES384),
            KeyKind::Ed => Some(Algorithm::EdDSA),
            _ => None,
        }
    }

    fn check(&self, alg: Algorithm) -> Result<(), BuildError> {
        use Algorithm::*;
        let mismatch = |key_kind| Err(BuildError::AlgorithmKeyMismatch { alg, key_kind });
        match (self, alg) {
            (KeyKind::Secret(len), HS256 | HS384 | HS512) => {
                let min = match alg {
                    HS256 => 32,
                    HS384 => 48,
                    _ => 64,
                };
                if *len < min {
                    return Err(BuildError::WeakSecret {
                        alg,
                        len: *len,
                        min,
                    });
                }
                Ok(())
            }
            (KeyKind::Secret(_), _) => mismatch("hmac"),
            (KeyKind::Rsa(bits), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
                if *bits < 2048 {
                    return Err(BuildError::WeakRsaKey { bits: *bits });
                }
                Ok(())
            }
            (KeyKind::Rsa(_), _) => mismatch("rsa"),
            (KeyKind::Ec(Some(EllipticCurve::P256)), ES256) => Ok(()),
            (KeyKind::Ec(Some(EllipticCurve::P384)), ES384) => Ok(()),
            (KeyKind::Ec(Some(EllipticCurve::P256)), _) => mismatch("ec p-256"),
            (KeyKind::Ec(Some(EllipticCurve::P384)), _) => mismatch("ec p-384"),
            (KeyKind::Ec(_), _) => mismatch("ec key on an unsupported curve"),
            (KeyKind::Ed, EdDSA) => Ok(()),
            (KeyKind::Ed, _) => mismatch("ed25519"),
        }
    }
}

fn first(algorithms: &Option<Vec<Algorithm>>) -> Algorithm {
    algorithms
        .as_ref()
        .and_then(|algs| algs.first().copied())
        .unwrap_or_default()
}

fn invalid(alg: Algorithm, source: jsonwebtoken::errors::Error) -> BuildError {
    BuildError::InvalidKey { alg, source }
}

fn rsa_bits_of_der(key: &DecodingKey) -> jsonwebtoken::errors::Result<usize> {
    let n = match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => {
            (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
                .key_utils
                .rsa_pub_components_from_public_key)(der)?
            .0
        }
        DecodingKeyKind::RsaModulusExponent { n, .. } => n.clone(),
    };
    Ok(bit_length(&n))
}

fn bit_length(big_endian: &[u8]) -> usize {
    let Some(first) = big_endian.iter().position(|&b| b != 0) else {
        return 0;
    };
    (big_endian.len() - first) * 8 - big_endian[first].leading_zeros() as usize
}

/// The curve of an EC public key, from the length of its uncompressed point.
fn ec_curve_of_point(key: &DecodingKey) -> Option<EllipticCurve> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(point) if point.first() == Some(&4) => match point.len() {
            65 => Some(EllipticCurve::P256),
            97 => Some(EllipticCurve::P384),
            _ => None,
        },
        _ => None,
    }
}

type JwkParts = (DecodingKey, KeyKind, Option<String>, Option<Algorithm>);

fn resolve_jwk(jwk: &Jwk) -> Result<JwkParts, BuildError> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err(BuildError::InvalidJwk {
            reason: "its `use` is not `sig`",
        });
    }
    let declared = jwk
        .common
        .key_algorithm
        .map(signing_algorithm)
        .transpose()?;
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map_err(|_| BuildError::InvalidJwk {
                    reason: "its `n` is not base64url",
                })?;
            KeyKind::Rsa(bit_length(&n))
        }
        AlgorithmParameters::EllipticCurve(ec) => KeyKind::Ec(Some(ec.curve.clone())),
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed
        }
        AlgorithmParameters::OctetKey(oct) => {
            let secret =
                URL_SAFE_NO_PAD
                    .decode(&oct.value)
                    .map_err(|_| BuildError::InvalidJwk {
                        reason: "its `k` is not base64url",
                    })?;
            KeyKind::Secret(secret.len())
        }
        _ => {
            return Err(BuildError::InvalidJwk {
                reason: "its `kty`/`crv` is not supported (RSA, EC P-256/P-384, OKP Ed25519, oct)",
            });
        }
    };
    let decoding = DecodingKey::from_jwk(jwk)
        .map_err(|source| invalid(declared.unwrap_or_default(), source))?;
    Ok((decoding, kind, jwk.common.key_id.clone(), declared))
}

fn signing_algorithm(alg: KeyAlgorithm) -> Result<Algorithm, BuildError> {
    Ok(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => {
            return Err(BuildError::InvalidJwk {
                reason: "its `alg` is not a signature algorithm this layer supports",
            });
        }
    })
}

/// Key material is secret or at least not for logs: show only the shape.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let material = match &self.material {
            Material::Secret(_) => "hmac secret",
            Material::RsaPem(_) => "rsa pem",
            Material::EcPem(_) => "ec pem",
            Material::EdPem(_) => "ed25519 pem",
            Material::Jwk(_) | Material::JwkJson(_) => "jwk",
        };
        f.debug_struct("Key")
            .field("material", &material)
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .field("issuers", &self.issuers)
            .finish()
    }
}

impl std::fmt::Debug for ResolvedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_helpers::{EC_P256_PUBLIC_PEM, ED_PUBLIC_PEM, RSA_PUBLIC_PEM};

    #[test]
    fn short_hmac_secrets_are_weak() {
        let err = Key::hmac(Algorithm::HS256, [7u8; 31])
            .resolve()
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::WeakSecret {
                len: 31,
                min: 32,
                ..
            }
        ));
        assert!(Key::hmac(Algorithm::HS256, [7u8; 32]).resolve().is_ok());
        let err = Key::hmac(Algorithm::HS512, [7u8; 32])
            .resolve()
            .unwrap_err();
        assert!(matches!(err, BuildError::WeakSecret { min: 64, .. }));
    }

    #[test]
    fn algorithms_must_fit_the_key() {
        let err = Key::hmac(Algorithm::RS256, [7u8; 64])
            .resolve()
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::AlgorithmKeyMismatch {
                key_kind: "hmac",
                ..
            }
        ));
        let err = Key::ec_pem(Algorithm::ES384, EC_P256_PUBLIC_PEM)
            .resolve()
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::AlgorithmKeyMismatch {
                key_kind: "ec p-256",
                ..
            }
        ));
        let err = Key::rsa_pem(Algorithm::RS256, RSA_PUBLIC_PEM)
            .algorithms([Algorithm::RS256, Algorithm::ES256])
            .resolve()
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::AlgorithmKeyMismatch {
                alg: Algorithm::ES256,
                ..
            }
        ));
        let err = Key::rsa_pem(Algorithm::RS256, RSA_PUBLIC_PEM)
            .algorithms([])
            .resolve();
        assert!(matches!(err, Err(BuildError::NoAlgorithms)));
    }

    #[test]
    fn pem_keys_of_each_family_resolve() {
        let rsa = Key::rsa_pem(Algorithm::RS256, RSA_PUBLIC_PEM)
            .algorithms([Algorithm::RS256, Algorithm::PS256])
            .resolve()
            .unwrap();
        assert_eq!(rsa.algorithms, [Algorithm::RS256, Algorithm::PS256]);
        assert!(
            Key::ec_pem(Algorithm::ES256, EC_P256_PUBLIC_PEM)
                .resolve()
                .is_ok()
        );
        assert!(Key::ed_pem(ED_PUBLIC_PEM).resolve().is_ok());
    }

    #[test]
    fn small_rsa_keys_are_weak() {
        // A 1024-bit modulus as JWK components.
        let n = URL_SAFE_NO_PAD.encode([0xC1u8; 128]);
        let jwk = format!(r#"{{"kty":"RSA","alg":"RS256","n":"{n}","e":"AQAB"}}"#);
        let err = Key::jwk_json(jwk).resolve().unwrap_err();
        assert!(matches!(err, BuildError::WeakRsaKey { bits: 1024 }));
    }

    #[test]
    fn jwk_curve_and_alg_must_agree() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let jwk = format!(r#"{{"kty":"EC","crv":"P-256","alg":"ES384","x":"{x}","y":"{x}"}}"#);
        assert!(matches!(
            Key::jwk_json(jwk).resolve(),
            Err(BuildError::AlgorithmKeyMismatch {
                alg: Algorithm::ES384,
                ..
            })
        ));
        let okp = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"ed1"}}"#);
        let key = Key::jwk_json(okp).resolve().unwrap();
        assert_eq!(key.algorithms, [Algorithm::EdDSA]);
        assert_eq!(key.kid.as_deref(), Some("ed1"));
        let enc = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","use":"enc"}}"#);
        assert!(matches!(
            Key::jwk_json(enc).resolve(),
            Err(BuildError::InvalidJwk { .. })
        ));
    }

    #[test]
    fn jwk_alg_conflicting_with_configuration_is_refused() {
        let k = URL_SAFE_NO_PAD.encode([9u8; 64]);
        let jwk = format!(r#"{{"kty":"oct","alg":"HS512","k":"{k}"}}"#);
        assert!(Key::jwk_json(jwk.clone()).resolve().is_ok());
        assert!(matches!(
            Key::jwk_json(jwk).algorithms([Algorithm::HS256]).resolve(),
            Err(BuildError::InvalidJwk { .. })
        ));
    }
}
