//! Cache keys: a versioned SHA-256 over every input that can change a response.

use axum::extract::OriginalUri;
use http::header::{ACCEPT, HOST};
use http::{HeaderMap, HeaderName, Uri};
use sha2::{Digest, Sha256};

use crate::canonical::{put_field, put_json};
use crate::scope::Bucket;
use crate::wire::media::{self, ResponseMedia};

/// Bumped whenever the key derivation changes, so old entries in a shared store are
/// never read with a new meaning.
const KEY_VERSION: &[u8] = b"scoped-cache/key/v2";

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
    /// Whether `Accept` is keyed by the media type it negotiates, not as sent (see
    /// [`RoutePolicy::negotiated_accept`](crate::RoutePolicy::negotiated_accept)).
    negotiated_accept: bool,
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
            negotiated_accept: false,
        }
    }

    /// Keys `Accept` by the media type it negotiates.
    pub(crate) fn negotiated_accept(mut self, negotiated: bool) -> Self {
        self.negotiated_accept = negotiated;
        self
    }

    /// The URI the client sent: a router nested under `/t/{tenant}` strips that prefix
    /// before the layer runs, and tenants must never share entries.
    fn uri(&self) -> &'r Uri {
        self.parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&self.parts.uri, |original| &original.0)
    }

    fn feed(&self, hasher: &mut Sha256) {
        let uri = self.uri();
        put(
            hasher,
            uri.authority().map_or("", |a| a.as_str()).as_bytes(),
        );
        put(hasher, uri.path().as_bytes());
        put(
            hasher,
            if self.query {
                uri.query().unwrap_or("").as_bytes()
            } else {
                b""
            },
        );
        put_all(hasher, &self.parts.headers, &HOST);
        if self.negotiated_accept {
            // A count no header list reaches, then the media type: never the same bytes
            // as any `Accept` lines fed as sent.
            hasher.update(u64::MAX.to_le_bytes());
            hasher.update([match media::negotiate(&self.parts.headers) {
                None => 0,
                Some(ResponseMedia::Json) => 1,
                Some(ResponseMedia::GraphqlResponseJson) => 2,
            }]);
        } else {
            put_all(hasher, &self.parts.headers, &ACCEPT);
        }
        for name in self.key_headers {
            put_all(hasher, &self.parts.headers, name);
        }
    }
}

/// The key of one cache entry: the request digest seen from one target (URI, host, keyed
/// headers, `Accept`) and one bucket. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    pub(crate) fn new(target: &Target<'_>, request: &RequestDigest, bucket: &Bucket) -> Self {
        let mut hasher = Sha256::new();
        put(&mut hasher, KEY_VERSION);
        target.feed(&mut hasher);
        put(&mut hasher, &request.0);
        put(&mut hasher, bucket.as_bytes());
        Self(hasher.finalize().into())
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

/// Feeds `bytes` preceded by its length, so neighbouring fields can never run together.
fn put(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Feeds every value of header `name` (all of them: a second `Accept` line counts too),
/// preceded by their count.
fn put_all(hasher: &mut Sha256, headers: &HeaderMap, name: &HeaderName) {
    let values = headers.get_all(name);
    hasher.update((values.iter().count() as u64).to_le_bytes());
    for value in values {
        put(hasher, value.as_bytes());
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

    fn key_of(request: http::Request<()>, key_headers: &[HeaderName], query: bool) -> CacheKey {
        let (parts, _) = request.into_parts();
        let d = digest(json!({}));
        CacheKey::new(
            &Target::new(&parts, key_headers, query),
            &d,
            &Bucket::derive(&[], None),
        )
    }

    #[test]
    fn a_negotiated_accept_keys_the_media_type_not_its_spelling() {
        let key = |accept: Option<&str>, negotiated: bool| {
            let mut request = http::Request::post("/graphql");
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            let (parts, _) = request.body(()).unwrap().into_parts();
            CacheKey::new(
                &Target::new(&parts, &[], true).negotiated_accept(negotiated),
                &digest(json!({})),
                &Bucket::derive(&[], None),
            )
        };
        let json = key(Some("application/json"), true);
        for same in [
            None,
            Some("*/*"),
            Some("application/json;q=0.9"),
            Some("application/*"),
        ] {
            assert_eq!(key(same, true), json, "{same:?}");
        }
        let graphql = key(Some("application/graphql-response+json"), true);
        assert_ne!(graphql, json);
        assert_eq!(
            key(
                Some("application/json;q=0.5, application/graphql-response+json"),
                true
            ),
            graphql
        );
        assert_ne!(key(Some("text/html"), true), json);
        // As sent, every spelling is a key of its own, and none is a negotiated one.
        assert_ne!(
            key(Some("*/*"), false),
            key(Some("application/json"), false)
        );
        assert_ne!(key(Some("application/json"), false), json);
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
