//! Fixtures for unit tests.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

pub(crate) const SECRET: &[u8] = b"unit-test-secret-that-is-32-bytes";
pub(crate) const RSA_PUBLIC_PEM: &str = include_str!("../testdata/rsa_public.pem");
pub(crate) const RSA_PRIVATE_PEM: &str = include_str!("../testdata/rsa_private.pem");
pub(crate) const EC_P256_PUBLIC_PEM: &str = include_str!("../testdata/ec_p256_public.pem");
pub(crate) const EC_P256_PRIVATE_PEM: &str = include_str!("../testdata/ec_p256_private.pem");
pub(crate) const EC_P384_PUBLIC_PEM: &str = include_str!("../testdata/ec_p384_public.pem");
pub(crate) const EC_P384_PRIVATE_PEM: &str = include_str!("../testdata/ec_p384_private.pem");
pub(crate) const ED_PUBLIC_PEM: &str = include_str!("../testdata/ed_public.pem");
pub(crate) const ED_PRIVATE_PEM: &str = include_str!("../testdata/ed_private.pem");

/// `extra` merged over a valid `iss`, `aud` and an `exp` an hour away.
pub(crate) fn standard_claims(extra: Value) -> Value {
    let mut claims = json!({
        "iss": "forum-demo",
        "aud": "forum-api",
        "exp": jsonwebtoken::get_current_timestamp() + 3600,
    });
    if let (Some(base), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    claims
}

pub(crate) fn hs256_token(extra: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &standard_claims(extra),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}
