//! Cache keys: a versioned SHA-256 over every input that can change a response.

use sha2::{Digest, Sha256};

use crate::canonical::{put_field, put_json};
use crate::scope::Bucket;

/// Bumped whenever the key derivation changes, so old entries in a shared store are
/// never read with a new meaning.
const KEY_VERSION: &[u8] = b"scoped-cache/key/v1";

/// The digest of one GraphQL request, independent of the caller: canonical document,
/// operation name, canonical variables and persisted-query hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RequestDigest([u8; 32]);

impl RequestDigest {
    pub(crate) fn new(
        canonical_document: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Value,
        persisted_query_hash: Option<&str>,
    ) -> Self {
        let mut input = Vec::with_capacity(canonical_document.len() + 128);
        put_field(&mut input, canonical_document.as_bytes());
        put_optional(&mut input, operation_name);
        put_json(&mut input, variables);
        put_optional(&mut input, persisted_query_hash);
        Self(Sha256::digest(&input).into())
    }
}

/// The key of one cache entry: the request digest seen from one route, one negotiated
/// media type and one bucket. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    pub(crate) fn new(
        route: &str,
        request: &RequestDigest,
        accept: &[u8],
        bucket: &Bucket,
    ) -> Self {
        let mut input =
            Vec::with_capacity(96 + route.len() + accept.len() + bucket.as_bytes().len());
        put_field(&mut input, KEY_VERSION);
        put_field(&mut input, route.as_bytes());
        put_field(&mut input, &request.0);
        put_field(&mut input, accept);
        put_field(&mut input, bucket.as_bytes());
        Self(Sha256::digest(&input).into())
    }
}

fn put_optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_field(out, text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn digest(vars: serde_json::Value) -> RequestDigest {
        RequestDigest::new("query{me}", None, &vars, None)
    }

    #[test]
    fn variable_order_is_irrelevant() {
        assert_eq!(
            digest(json!({"a": 1, "b": 2})),
            digest(json!({"b": 2, "a": 1}))
        );
        assert_ne!(digest(json!({"a": 1})), digest(json!({"a": "1"})));
    }

    #[test]
    fn operation_name_and_persisted_hash_are_part_of_the_digest() {
        let vars = json!({});
        let base = RequestDigest::new("q", None, &vars, None);
        assert_ne!(base, RequestDigest::new("q", Some(""), &vars, None));
        assert_ne!(base, RequestDigest::new("q", None, &vars, Some("abc")));
    }

    #[test]
    fn route_accept_and_bucket_separate_keys() {
        let d = digest(json!({}));
        let bucket = Bucket::derive(&[], None);
        let key = CacheKey::new("/graphql", &d, b"application/json", &bucket);
        assert_eq!(
            key,
            CacheKey::new("/graphql", &d, b"application/json", &bucket)
        );
        assert_ne!(
            key,
            CacheKey::new("/other", &d, b"application/json", &bucket)
        );
        assert_ne!(
            key,
            CacheKey::new(
                "/graphql",
                &d,
                b"application/graphql-response+json",
                &bucket
            )
        );
        let authed = Bucket::derive(&[], Some(&crate::Claims::new(Default::default())));
        assert_ne!(
            key,
            CacheKey::new("/graphql", &d, b"application/json", &authed)
        );
    }
}
