//! One fetched JWKS, as keys ready to verify with.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use tokio::time::Instant;

use crate::jwt::keys::{Key, ResolvedKey};

/// The keys of one JWKS fetch. Keys that did not change since the previous fetch keep their
/// `Arc`, so verified tokens cached under them stay valid across refreshes; a key that left
/// the JWKS is dropped, and tokens it verified stop being accepted from the cache.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<ResolvedKey>>,
    by_json: HashMap<String, Arc<ResolvedKey>>,
    /// When these keys were fetched; `None` until the first successful fetch.
    pub(crate) fetched_at: Option<Instant>,
}

/// How many JWKS entries were usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) usable: usize,
    pub(crate) skipped: usize,
}

impl KeySet {
    /// Keys from a JWKS document's `keys`, reusing `previous` keys that are unchanged.
    ///
    /// Entries that are not signature keys we accept are skipped: encryption keys,
    /// symmetric `oct` keys (a public JWKS must never carry a shared secret), weak or
    /// malformed keys. `rsa_default` applies to RSA keys without an `alg`.
    pub(crate) fn from_jwks(
        keys: &[serde_json::Value],
        previous: &KeySet,
        rsa_default: &[Algorithm],
        fetched_at: Instant,
    ) -> (Self, Parsed) {
        let mut set = KeySet {
            fetched_at: Some(fetched_at),
            ..KeySet::default()
        };
        let mut skipped = 0;
        for raw in keys {
            let json = raw.to_string();
            let key = match previous.by_json.get(&json) {
                Some(unchanged) => Arc::clone(unchanged),
                None => match resolve(raw, rsa_default) {
                    Some(key) => Arc::new(key),
                    None => {
                        skipped += 1;
                        continue;
                    }
                },
            };
            set.by_json.insert(json, Arc::clone(&key));
            set.keys.push(key);
        }
        let usable = set.keys.len();
        (set, Parsed { usable, skipped })
    }

    /// Keys that may have signed a token with this `kid` (all keys when it has none).
    pub(crate) fn candidates<'s>(
        &'s self,
        kid: Option<&'s str>,
    ) -> impl Iterator<Item = &'s Arc<ResolvedKey>> + 's {
        self.keys.iter().filter(move |key| match (kid, &key.kid) {
            (Some(wanted), Some(kid)) => wanted == kid,
            _ => true,
        })
    }

    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn resolve(raw: &serde_json::Value, rsa_default: &[Algorithm]) -> Option<ResolvedKey> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).ok()?;
    let key = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => return None,
        AlgorithmParameters::RSA(_) if jwk.common.key_algorithm.is_none() => {
            Key::jwk(jwk).algorithms(rsa_default.iter().copied())
        }
        _ => Key::jwk(jwk),
    };
    key.resolve().ok()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    fn okp(kid: &str, byte: u8) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode([byte; 32])})
    }

    #[test]
    fn unchanged_keys_keep_their_arc_and_removed_keys_go() {
        let now = Instant::now();
        let (first, parsed) =
            KeySet::from_jwks(&[okp("a", 1), okp("b", 2)], &KeySet::default(), &[], now);
        assert_eq!(
            parsed,
            Parsed {
                usable: 2,
                skipped: 0
            }
        );
        let a = Arc::clone(first.candidates(Some("a")).next().unwrap());
        let b = Arc::downgrade(first.candidates(Some("b")).next().unwrap());

        let (second, _) = KeySet::from_jwks(&[okp("a", 1), okp("c", 3)], &first, &[], now);
        drop(first);
        assert!(Arc::ptr_eq(
            &a,
            second.candidates(Some("a")).next().unwrap()
        ));
        assert!(b.upgrade().is_none(), "a key that left the JWKS is dropped");
        assert!(second.has_kid("c") && !second.has_kid("b"));
    }

    #[test]
    fn secrets_encryption_keys_and_garbage_are_skipped() {
        let k = URL_SAFE_NO_PAD.encode([9u8; 64]);
        let keys = [
            json!({"kty": "oct", "alg": "HS256", "k": k, "kid": "secret"}),
            json!({"kty": "OKP", "crv": "Ed25519", "use": "enc", "x": URL_SAFE_NO_PAD.encode([1u8; 32])}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            json!("not a key"),
            okp("good", 4),
        ];
        let (set, parsed) = KeySet::from_jwks(
            &keys,
            &KeySet::default(),
            &[Algorithm::RS256],
            Instant::now(),
        );
        assert_eq!(
            parsed,
            Parsed {
                usable: 1,
                skipped: 4
            }
        );
        assert!(set.has_kid("good"));
    }
}
