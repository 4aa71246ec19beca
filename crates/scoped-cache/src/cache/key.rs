//! Cache keys: a versioned SHA-256 over every input that can change a response.

use axum::extract::OriginalUri;
use http::header::{ACCEPT, HOST};
use http::{HeaderMap, HeaderName, Uri};
use sha2::{Digest, Sha256};

use crate::canonical::{put_field, put_json};
use crate::scope::Bucket;

/// Bumped whenever the key derivation changes, so old entries in a shared store are
/// never read with a new meaning.
const KEY_VERSION: &[u8] = b"scoped-cache/key/v3";

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
/// the GraphQL request itself and the caller's claims, that a handler can read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'r> {
    parts: &'r http::request::Parts,
    key_headers: &'r [HeaderName],
    /// Whether the URI's query string is part of the key. A GET's query string is the
    /// GraphQL request itself (its digest is keyed, unknown parameters are not cached);
    /// a POST's query string is something else a handler may read (`?lang=fr`).
    query: bool,
}

impl<'r> Target<'r> {
    /// The target of `parts`, keyed on `key_headers` besides `Host` and `Accept`.
    pub(crate) fn new(
        parts: &'r http::request::Parts,
        key_headers: &'r [HeaderName],
        query: bool,
    ) -> Self {
        Self {
            parts,
            key_headers,
            query,
        }
    }

    /// The URI the client sent: a router nested under `/t/{tenant}` strips that prefix
    /// before the layer runs, and tenants must never share entries.
    fn uri(&self) -> &'r Uri {
        self.parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&self.parts.uri, |original| &original.0)
    }

    fn feed(&self, material: &mut Material) {
        let uri = self.uri();
        material.field(uri.authority().map_or("", |a| a.as_str()).as_bytes());
        material.field(uri.path().as_bytes());
        material.field(if self.query {
            uri.query().unwrap_or("").as_bytes()
        } else {
            b""
        });
        material.header(&self.parts.headers, &HOST);
        material.header(&self.parts.headers, &ACCEPT);
        for name in self.key_headers {
            material.header(&self.parts.headers, name);
        }
    }
}

/// The key of one cache entry: the request digest seen from one target (URI, host, keyed
/// headers, `Accept`) and one bucket. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    pub(crate) fn new(target: &Target<'_>, request: &RequestDigest, bucket: &Bucket) -> Self {
        let mut material = Material::new();
        material.field(KEY_VERSION);
        target.feed(&mut material);
        material.field(&request.0);
        material.field(bucket.as_bytes());
        Self(material.finish())
    }

    /// A key for tests: request `n` to `GET /graphql`, anonymous.
    #[cfg(test)]
    pub(crate) fn for_test(n: u64) -> Self {
        let none = serde_json::Value::Null;
        let digest = RequestDigest::new(&n.to_string(), None, &none, &none);
        let (parts, _) = http::Request::get("/graphql")
            .body(())
            .unwrap_or_default()
            .into_parts();
        Self::new(
            &Target::new(&parts, &[], false),
            &digest,
            &crate::scope::Bucket::derive(&[], None),
        )
    }

    /// The key's 32 bytes (a SHA-256 digest), for stores outside the process.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A key's inputs, gathered in one buffer on the stack and hashed a buffer at a time:
/// the few SHA-256 blocks a key needs, without a hasher call per field. Lengths are
/// LEB128 varints (one byte below 128): prefix-free, so fields can never run together
/// whatever their length, and short, so a typical key is two or three blocks.
struct Material {
    buffer: [u8; 256],
    len: usize,
    hasher: Sha256,
}

impl Material {
    fn new() -> Self {
        Self {
            buffer: [0; 256],
            len: 0,
            hasher: Sha256::new(),
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buffer.len() {
            self.flush();
            if bytes.len() > self.buffer.len() {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buffer[..self.len]);
        self.len = 0;
    }

    fn length(&mut self, mut n: usize) {
        let mut varint = [0u8; 10];
        let mut i = 0;
        while n >= 0x80 {
            varint[i] = (n as u8) | 0x80;
            n >>= 7;
            i += 1;
        }
        varint[i] = n as u8;
        self.bytes(&varint[..=i]);
    }

    /// `bytes` preceded by its length, so neighbouring fields can never run together.
    fn field(&mut self, bytes: &[u8]) {
        self.length(bytes.len());
        self.bytes(bytes);
    }

    /// Every value of header `name` (all of them: a second `Accept` line counts too),
    /// preceded by their count.
    fn header(&mut self, headers: &HeaderMap, name: &HeaderName) {
        let values = headers.get_all(name);
        self.length(values.iter().count());
        for value in values {
            self.field(value.as_bytes());
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.flush();
        self.hasher.finalize().into()
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

    fn material(fields: &[&[u8]]) -> [u8; 32] {
        let mut material = Material::new();
        for field in fields {
            material.field(field);
        }
        material.finish()
    }

    #[test]
    fn key_material_keeps_field_boundaries() {
        assert_ne!(material(&[b"ab", b"c"]), material(&[b"a", b"bc"]));
        assert_ne!(material(&[b"", b"a"]), material(&[b"a", b""]));
        let long = vec![7u8; 1000];
        // Either side of the one-byte varint limit.
        assert_ne!(
            material(&[&long[..128], &long[128..300]]),
            material(&[&long[..127], &long[127..300]])
        );
    }

    #[test]
    fn key_material_is_sha_256_of_its_encoding_however_buffered() {
        let long = vec![7u8; 1000];
        let mut expected = vec![1, b'x', 0xE8, 0x07];
        expected.extend_from_slice(&long);
        expected.extend_from_slice(&[0xC8, 0x01]);
        expected.extend_from_slice(&long[..200]);
        let sha: [u8; 32] = Sha256::digest(&expected).into();
        assert_eq!(material(&[b"x", &long, &long[..200]]), sha);
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

    fn key_of(request: http::Request<()>, key_headers: &[HeaderName], query: bool) -> CacheKey {
        let (parts, _) = request.into_parts();
        let d = digest(json!({}));
        CacheKey::new(
            &Target::new(&parts, key_headers, query),
            &d,
            &Bucket::derive(&[], None),
        )
    }

    fn get(uri: &str) -> http::request::Builder {
        http::Request::get(uri)
    }

    #[test]
    fn every_input_a_handler_can_read_separates_keys() {
        let forwarded = [
            HeaderName::from_static("x-forwarded-host"),
            HeaderName::from_static("forwarded"),
        ];
        let key = |b: http::request::Builder| key_of(b.body(()).unwrap(), &forwarded, true);
        let base =
            key(get("http://a.example/graphql?lang=en").header("accept", "application/json"));
        assert_eq!(
            base,
            key(get("http://a.example/graphql?lang=en").header("accept", "application/json"))
        );
        for other in [
            get("http://b.example/graphql?lang=en").header("accept", "application/json"),
            get("http://a.example/t/b/graphql?lang=en").header("accept", "application/json"),
            get("http://a.example/graphql?lang=fr").header("accept", "application/json"),
            get("http://a.example/graphql?lang=en")
                .header("accept", "application/graphql-response+json"),
            get("http://a.example/graphql?lang=en")
                .header("accept", "application/json")
                .header("accept", "text/html"),
            get("http://a.example/graphql?lang=en")
                .header("accept", "application/json")
                .header("host", "evil.example"),
            get("http://a.example/graphql?lang=en")
                .header("accept", "application/json")
                .header("x-forwarded-host", "evil.example"),
            get("http://a.example/graphql?lang=en")
                .header("accept", "application/json")
                .header("forwarded", "host=evil.example"),
        ] {
            assert_ne!(base, key(other));
        }
        // Headers outside the list are not keyed (and a response varying on them is not stored).
        assert_eq!(
            base,
            key(get("http://a.example/graphql?lang=en")
                .header("accept", "application/json")
                .header("x-request-id", "1"))
        );
    }

    #[test]
    fn a_gets_query_string_is_left_to_its_digest() {
        let a = key_of(get("/graphql?query=a").body(()).unwrap(), &[], false);
        let b = key_of(get("/graphql?query=b").body(()).unwrap(), &[], false);
        assert_eq!(a, b);
    }

    #[test]
    fn a_nested_routers_stripped_prefix_stays_in_the_key() {
        let nested = |tenant: &str| {
            let mut req = get("/graphql").body(()).unwrap();
            let original: Uri = format!("/t/{tenant}/graphql").parse().unwrap();
            req.extensions_mut().insert(OriginalUri(original));
            key_of(req, &[], true)
        };
        assert_ne!(nested("acme"), nested("globex"));
    }

    #[test]
    fn the_bucket_separates_keys() {
        let (parts, _) = get("/graphql").body(()).unwrap().into_parts();
        let d = digest(json!({}));
        let target = Target::new(&parts, &[], true);
        let anonymous = CacheKey::new(&target, &d, &Bucket::derive(&[], None));
        let authed = Bucket::derive(&[], Some(&crate::Claims::new(Default::default())));
        assert_ne!(anonymous, CacheKey::new(&target, &d, &authed));
    }
}
