//! Buckets: the scoped claim values of one request, encoded for the cache key.

use crate::canonical::{put_field, put_json};
use crate::claims::Claims;
use crate::scope::ClaimPath;

/// The encoded claim values that choose a bucket. Built from claim values only, never from
/// the token, so a refreshed token with the same values lands in the same bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bucket {
    bytes: Vec<u8>,
}

impl Bucket {
    /// The bucket of `claims` (or of an anonymous caller) under `scope`.
    ///
    /// Anonymous and authenticated callers never share a bucket, even under an empty scope:
    /// a resolver can tell them apart without reading any claim (`data_opt::<Claims>()`).
    /// An absent claim encodes differently from every present value, `null` included.
    /// A claim-scoped bucket also holds `iss`: `sub` and most claims are only unique per
    /// issuer, so two identity providers' `sub = 42` must not share.
    pub(crate) fn derive(scope: &[ClaimPath], claims: Option<&Claims>) -> Self {
        let mut bytes = Vec::with_capacity(64 + 32 * scope.len());
        bytes.push(u8::from(claims.is_some()));
        if !scope.is_empty() {
            put_value(&mut bytes, claims.and_then(|c| c.raw().get("iss")));
        }
        for path in scope {
            bytes.extend_from_slice(&(path.segments().len() as u64).to_le_bytes());
            for segment in path.segments() {
                put_field(&mut bytes, segment.as_bytes());
            }
            put_value(&mut bytes, claims.and_then(|c| path.lookup(c.raw())));
        }
        Self { bytes }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn put_value(bytes: &mut Vec<u8>, value: Option<&serde_json::Value>) {
    match value {
        None => bytes.push(0),
        Some(value) => {
            bytes.push(1);
            put_json(bytes, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn claims(value: Value) -> Claims {
        Claims::new(value.as_object().unwrap().clone())
    }

    fn scope(paths: &[&str]) -> Vec<ClaimPath> {
        paths.iter().map(|p| ClaimPath::parse(p).unwrap()).collect()
    }

    #[test]
    fn token_only_fields_do_not_change_the_bucket() {
        let s = scope(&["sub"]);
        let first = claims(json!({"sub": "u1", "exp": 1, "iat": 0, "jti": "a"}));
        let refreshed = claims(json!({"sub": "u1", "exp": 99, "iat": 50, "jti": "b"}));
        assert_eq!(
            Bucket::derive(&s, Some(&first)),
            Bucket::derive(&s, Some(&refreshed))
        );
    }

    #[test]
    fn different_values_get_different_buckets() {
        let s = scope(&["sub", "role"]);
        let a = claims(json!({"sub": "u1", "role": "member"}));
        let b = claims(json!({"sub": "u2", "role": "member"}));
        assert_ne!(Bucket::derive(&s, Some(&a)), Bucket::derive(&s, Some(&b)));
        let role = scope(&["role"]);
        assert_eq!(
            Bucket::derive(&role, Some(&a)),
            Bucket::derive(&role, Some(&b))
        );
    }

    #[test]
    fn same_sub_from_different_issuers_never_shares() {
        let s = scope(&["sub"]);
        let a = claims(json!({"sub": "42", "iss": "idp-a"}));
        let b = claims(json!({"sub": "42", "iss": "idp-b"}));
        assert_ne!(Bucket::derive(&s, Some(&a)), Bucket::derive(&s, Some(&b)));
    }

    #[test]
    fn values_cannot_be_shifted_across_claims() {
        let s = scope(&["a", "b"]);
        let x = claims(json!({"a": "p|q", "b": "r"}));
        let y = claims(json!({"a": "p", "b": "q|r"}));
        assert_ne!(Bucket::derive(&s, Some(&x)), Bucket::derive(&s, Some(&y)));
    }

    #[test]
    fn absent_null_and_anonymous_are_all_distinct() {
        let s = scope(&["role"]);
        let absent = Bucket::derive(&s, Some(&claims(json!({}))));
        let null = Bucket::derive(&s, Some(&claims(json!({"role": null}))));
        let anonymous = Bucket::derive(&s, None);
        assert_ne!(absent, null);
        assert_ne!(absent, anonymous);
        assert_ne!(
            Bucket::derive(&[], None),
            Bucket::derive(&[], Some(&claims(json!({}))))
        );
    }

    #[test]
    fn deriving_does_not_count_as_a_resolver_read() {
        let c = claims(json!({"sub": "u1"}));
        let _ = Bucket::derive(&scope(&["sub"]), Some(&c));
        assert!(c.read_log().first_uncovered(&[]).is_none());
    }
}
