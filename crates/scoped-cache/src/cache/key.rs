//! Cache keys: a versioned SHA-256 over every input that can change a response.

use sha2::{Digest, Sha256};

use crate::canonical::{put_field, put_json};
use crate::scope::Bucket;

/// Bumped whenever the key derivation changes, so old entries in a shared store are
/// never read with a new meaning.
const KEY_VERSION: &[u8] = b"scoped-cache/key/v1";

/// The digest of one GraphQL request, independent of the caller: canonical document,
/// operation name, canonical variables and canonical extensions (which carry an automatic
/// persisted query's hash, and anything else an extension might read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RequestDigest([u8; 32]);

impl RequestDigest {
    pub(crate) fn new(
        canonical_document: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Value,
        extensions: &serde_json::Value,
    ) -> Self {
        let mut input = Vec::with_capacity(canonical_document.len() + 128);
        put_field(&mut input, canonical_document.as_bytes());
        put_optional(&mut input, operation_name);
        put_json(&mut input, variables);
        put_json(&mut input, extensions);
        Self(Sha256::digest(&input).into())
    }
}

/// Where a request was sent and what it accepts: the parts of the HTTP request, besides
/// the GraphQL request itself, that can change the response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'r> {
    host: &'r [u8],
    path: &'r str,
    accept: &'r [u8],
}

impl<'r> Target<'r> {
    /// The request's own path (not the route pattern: `/t/{tenant}` serves each tenant its
    /// own data), its host and its `Accept` header.
    pub(crate) fn of(parts: &'r http::request::Parts) -> Self {
        let header = |name| {
            parts
                .headers
                .get(name)
                .map_or(&b""[..], http::HeaderValue::as_bytes)
        };
        let host = match parts.uri.authority() {
            Some(authority) => authority.as_str().as_bytes(),
            None => header(http::header::HOST),
        };
        Self {
            host,
            path: parts.uri.path(),
            accept: header(http::header::ACCEPT),
        }
    }
}

/// The key of one cache entry: the request digest seen from one host and path, one
/// negotiated media type and one bucket. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    pub(crate) fn new(target: &Target<'_>, request: &RequestDigest, bucket: &Bucket) -> Self {
        let mut input = Vec::with_capacity(
            128 + target.host.len()
                + target.path.len()
                + target.accept.len()
                + bucket.as_bytes().len(),
        );
        put_field(&mut input, KEY_VERSION);
        put_field(&mut input, target.host);
        put_field(&mut input, target.path.as_bytes());
        put_field(&mut input, &request.0);
        put_field(&mut input, target.accept);
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
        RequestDigest::new("query{me}", None, &vars, &serde_json::Value::Null)
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
    fn operation_name_and_extensions_are_part_of_the_digest() {
        let vars = json!({});
        let none = serde_json::Value::Null;
        let base = RequestDigest::new("q", None, &vars, &none);
        assert_ne!(base, RequestDigest::new("q", Some(""), &vars, &none));
        let apq = json!({"persistedQuery": {"version": 1, "sha256Hash": "abc"}});
        assert_ne!(base, RequestDigest::new("q", None, &vars, &apq));
    }

    fn target<'a>(host: &'a str, path: &'a str, accept: &'a str) -> Target<'a> {
        Target {
            host: host.as_bytes(),
            path,
            accept: accept.as_bytes(),
        }
    }

    #[test]
    fn host_path_accept_and_bucket_separate_keys() {
        let d = digest(json!({}));
        let bucket = Bucket::derive(&[], None);
        let base = target("a.example", "/graphql", "application/json");
        let key = CacheKey::new(&base, &d, &bucket);
        assert_eq!(key, CacheKey::new(&base, &d, &bucket));
        for other in [
            target("b.example", "/graphql", "application/json"),
            target("a.example", "/t/b/graphql", "application/json"),
            target("a.example", "/graphql", "application/graphql-response+json"),
        ] {
            assert_ne!(key, CacheKey::new(&other, &d, &bucket));
        }
        let authed = Bucket::derive(&[], Some(&crate::Claims::new(Default::default())));
        assert_ne!(key, CacheKey::new(&base, &d, &authed));
    }

    #[test]
    fn key_uses_the_request_path_not_the_route_pattern() {
        let (a, _) = http::Request::get("http://h/t/a/graphql")
            .body(())
            .unwrap()
            .into_parts();
        let (b, _) = http::Request::get("http://h/t/b/graphql")
            .body(())
            .unwrap()
            .into_parts();
        let d = digest(json!({}));
        let bucket = Bucket::derive(&[], None);
        assert_ne!(
            CacheKey::new(&Target::of(&a), &d, &bucket),
            CacheKey::new(&Target::of(&b), &d, &bucket)
        );
    }
}
