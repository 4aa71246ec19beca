//! ETags and `If-None-Match`: a client that holds the current answer gets `304` and no body.
//!
//! The ETag is a digest of the bucket and the stored body, so equal bodies in two buckets
//! have different tags: a `304` can only ever confirm data of the caller's own bucket,
//! and a tag seen by one user tells another nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{CACHE_CONTROL, ETAG, EXPIRES, VARY};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use crate::scope::Bucket;

/// The strong ETag of `body` stored in `bucket`.
pub(crate) fn etag(bucket: &Bucket, content_type: &[u8], body: &[u8]) -> HeaderValue {
    let mut hasher = Sha256::new();
    hasher.update(b"scoped-cache/etag/v2");
    hasher.update((bucket.as_bytes().len() as u64).to_le_bytes());
    hasher.update(bucket.as_bytes());
    // One body in two media types is two representations (RFC 9110 §8.8.3): a 304 for
    // one must not confirm the other.
    hasher.update((content_type.len() as u64).to_le_bytes());
    hasher.update(content_type);
    hasher.update(body);
    let digest = hasher.finalize();
    let tag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..18]));
    // Base64url characters and quotes are always a valid header value.
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether the request's `If-None-Match` lists `etag` (or is `*`). Weak comparison, as
/// RFC 9110 §13.1.2 asks for `If-None-Match`: a `W/` prefix is ignored.
pub(crate) fn none_match_hits<'a>(
    if_none_match: impl IntoIterator<Item = &'a HeaderValue>,
    etag: &HeaderValue,
) -> bool {
    let ours = etag.as_bytes();
    if_none_match.into_iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|candidate| {
            let candidate = candidate.trim_ascii();
            let candidate = candidate.strip_prefix(b"W/").unwrap_or(candidate);
            candidate == b"*" || candidate == ours
        })
    })
}

/// The headers a `304` repeats from the full answer (RFC 9110 §15.4.5).
pub(crate) fn not_modified_headers(stored: &HeaderMap, etag: &HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(ETAG, etag.clone());
    for name in [CACHE_CONTROL, EXPIRES, VARY] {
        for value in stored.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Claims;
    use crate::scope::ClaimPath;

    fn bucket(sub: &str) -> Bucket {
        let claims = Claims::new(json!({ "sub": sub }).as_object().unwrap().clone());
        Bucket::derive(&[ClaimPath::parse("sub").unwrap()], Some(&claims))
    }

    fn conditional(value: &'static str) -> Vec<HeaderValue> {
        vec![HeaderValue::from_static(value)]
    }

    #[test]
    fn equal_bodies_in_two_buckets_have_different_tags() {
        let body = br#"{"data":{"me":null}}"#;
        let json = b"application/json";
        assert_eq!(
            etag(&bucket("a"), json, body),
            etag(&bucket("a"), json, body)
        );
        assert_ne!(
            etag(&bucket("a"), json, body),
            etag(&bucket("b"), json, body)
        );
        assert_ne!(
            etag(&bucket("a"), json, body),
            etag(&bucket("a"), json, b"{}")
        );
    }

    #[test]
    fn one_body_in_two_media_types_has_two_tags() {
        let body = br#"{"data":{"me":null}}"#;
        assert_ne!(
            etag(&bucket("a"), b"application/json", body),
            etag(&bucket("a"), b"application/graphql-response+json", body)
        );
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let tag = etag(&bucket("a"), b"application/json", b"x");
        let text = tag.to_str().unwrap().to_owned();
        let h = [HeaderValue::from_str(&format!("\"other\", W/{text}")).unwrap()];
        assert!(none_match_hits(&h, &tag));
        assert!(none_match_hits(&conditional("*"), &tag));
        assert!(!none_match_hits(&conditional("\"other\""), &tag));
        assert!(!none_match_hits(&[], &tag));
        // Another bucket's tag never matches.
        assert!(!none_match_hits(
            &[etag(&bucket("b"), b"application/json", b"x")],
            &tag
        ));
    }
}
