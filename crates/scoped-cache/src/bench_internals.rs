//! Request-path components, one operation each, for `benches/components.rs`.
//!
//! Not an API: compiled only with the internal `bench-internals` feature, with no semver
//! promise; it may change or go at any time.
//!
//! Each wrapper is built from plain inputs, does all its setup up front, and its `run`
//! (or named) method performs exactly one component operation with the calls
//! `Pipeline::handle` (`pipeline/mod.rs`) makes, so a regression shows at the component that
//! caused it.

use std::cell::Cell;
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, request};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::builder::{DEFAULT_KEY_HEADERS, DEFAULT_MAX_BYTES, DEFAULT_TOKEN_CACHE_BYTES};
use crate::cache::key::{CacheKey, RequestDigest, Target};
use crate::cache::purge::EntryMeta;
use crate::cache::request::{Prepared, Preparer, Transport};
use crate::cache::store::{CachedResponse, MemoryStore, ResponseStore};
use crate::claims::Claims;
use crate::graphql::document::analyze;
use crate::guard::DEFAULT_MAX_NESTING;
use crate::jwt::TokenVerifier;
use crate::revocation::{
    DEFAULT_MAX_REVOCATIONS, DEFAULT_RETENTION, MemoryRevocations, RevocationStore, UnixClock,
};
use crate::scope::{Bucket, ClaimPath, RuleSet};
use crate::{Algorithm, AuthErrorKind, Revoke, RevokeError, Rule, Scope, Verifier};

/// Why a wrapper could not be set up.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The HMAC secret of [`TokenVerification`]'s verifier and token.
const SECRET: &[u8] = b"benchmark-secret-that-is-32-bytes";
/// A `jti` no revocation names.
const JTI: &str = "5b0d1c3e-8f2a-4c6b-9e7d-1a2b3c4d5e6f";

/// A verified token's claims, as an identity provider issues them: valid for a day.
fn claims_map() -> Map<String, Value> {
    let now = crate::clock::now_seconds();
    let claims = json!({
        "sub": "u1", "iss": "bench", "aud": "bench", "name": "Ada", "role": "member",
        "org": {"id": "acme"}, "iat": now, "exp": now + 86_400, "jti": JTI,
    });
    match claims {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The bench layer's rules: an hour by default, `Query.me` scoped by `sub`, a shorter
/// `Query.publicPosts`, a bypassed `Debug` operation.
fn rules() -> Result<RuleSet, Error> {
    Ok(RuleSet::compile(
        Some(Rule::new().max_age(Duration::from_secs(3600))),
        vec![
            Rule::root_field("Query.me").scope(Scope::claims(["sub"])),
            Rule::root_field("Query.publicPosts").max_age(Duration::from_secs(300)),
            Rule::operation("Debug").bypass(),
        ],
        None,
    )?)
}

/// `POST /graphql` as a browser's GraphQL client sends it, bearer token included.
fn post_parts(body_len: usize) -> Result<request::Parts, Error> {
    let (parts, ()) = Request::post("/graphql")
        .header(HOST, "api.example.com")
        .header(
            ACCEPT,
            "application/graphql-response+json, application/json;q=0.9",
        )
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body_len)
        .header(AUTHORIZATION, "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
        .header(USER_AGENT, "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101")
        .header(ACCEPT_ENCODING, "gzip, deflate, br")
        .body(())?
        .into_parts();
    Ok(parts)
}

fn key_headers() -> Result<Vec<HeaderName>, Error> {
    Ok(DEFAULT_KEY_HEADERS
        .iter()
        .map(|name| HeaderName::from_bytes(name.as_bytes()))
        .collect::<Result<_, _>>()?)
}

/// The digest of `query` sent without variables, as the preparer computes it.
fn digest(query: &str) -> Result<RequestDigest, Error> {
    let operation = analyze(query, None).map_err(|_| "the document does not analyse")?;
    Ok(RequestDigest::new(
        &operation.canonical,
        None,
        &Value::Object(Map::new()),
        &Value::Null,
    ))
}

fn parse_scope(scope: &[&str]) -> Result<Vec<ClaimPath>, Error> {
    Ok(Scope::claims(scope.iter().copied()).parse()?)
}

/// `Bucket::derive`: a verified caller's bucket under a scope.
#[derive(Debug)]
pub struct BucketDerivation {
    scope: Vec<ClaimPath>,
    claims: Claims,
}

impl BucketDerivation {
    /// The bucket under `scope` (claim paths as [`Scope::claims`] takes them) of a token
    /// carrying `sub`, `iss`, `aud`, `name`, `role`, `org.id`, `iat`, `exp` and `jti`.
    pub fn new(scope: &[&str]) -> Result<Self, Error> {
        Ok(Self {
            scope: parse_scope(scope)?,
            claims: Claims::new(claims_map()),
        })
    }

    /// Derives the bucket; returns its length in bytes.
    pub fn run(&self) -> usize {
        Bucket::derive(&self.scope, Some(&self.claims))
            .as_bytes()
            .len()
    }
}

/// `CacheKey::new`: the key of a prepared `POST /graphql` in a derived bucket.
#[derive(Debug)]
pub struct KeyDerivation {
    parts: request::Parts,
    key_headers: Vec<HeaderName>,
    digest: RequestDigest,
    bucket: Bucket,
}

impl KeyDerivation {
    /// The key of `query`, POSTed with `Host`, `Accept`, `Content-Type` and a few
    /// unkeyed headers, under the builder's default key headers, in the bucket `scope`
    /// gives [`BucketDerivation`]'s claims.
    pub fn new(scope: &[&str], query: &str) -> Result<Self, Error> {
        Ok(Self {
            parts: post_parts(json!({ "query": query }).to_string().len())?,
            key_headers: key_headers()?,
            digest: digest(query)?,
            bucket: Bucket::derive(&parse_scope(scope)?, Some(&Claims::new(claims_map()))),
        })
    }

    /// Derives the key (target, request digest, bucket); returns its bytes.
    pub fn run(&self) -> [u8; 32] {
        let target = Target::new(
            &self.parts,
            &self.key_headers,
            self.parts.method != Method::GET,
        );
        *CacheKey::new(&target, &self.digest, &self.bucket).as_bytes()
    }
}

/// `Preparer`: what the cache knows of a POST JSON body.
#[derive(Debug)]
pub struct PreparedRequest {
    preparer: Preparer,
    rules: RuleSet,
    body: Bytes,
}

impl PreparedRequest {
    /// A preparer sized as the builder's default, which has prepared the body
    /// `{"query": query}` once.
    pub fn new(query: &str) -> Result<Self, Error> {
        let this = Self {
            // An eighth of the default bound, as in `build()`.
            preparer: Preparer::new(DEFAULT_MAX_BYTES / 8 + 1, DEFAULT_MAX_NESTING),
            rules: rules()?,
            body: Bytes::from(json!({ "query": query }).to_string()),
        };
        if !this.prepare() {
            return Err("the query does not prepare to a cacheable operation".into());
        }
        Ok(this)
    }

    /// Looks the body up (a repeated request: a hit); returns whether it was found.
    pub fn lookup(&self) -> bool {
        self.preparer
            .lookup(Transport::PostJson, &self.body)
            .is_some()
    }

    /// Prepares the body as a text not seen before is prepared (JSON, document analysis,
    /// rules, digest, remembered under its text); returns whether it is an operation.
    pub fn prepare(&self) -> bool {
        matches!(
            *self
                .preparer
                .prepare(Transport::PostJson, &self.body, &self.rules),
            Prepared::Operation { .. }
        )
    }
}

/// `RuleSet::decide`: the rules' decision for an analysed operation.
#[derive(Debug)]
pub struct RuleMatching {
    rules: RuleSet,
    ty: OperationType,
    name: Option<String>,
    root_fields: Vec<String>,
}

impl RuleMatching {
    /// The bench rules (an hour by default, `Query.me` by `sub`, `Query.publicPosts` for
    /// 5 minutes, operation `Debug` bypassed), deciding for `query` (analysed here).
    pub fn new(query: &str) -> Result<Self, Error> {
        let operation = analyze(query, None).map_err(|_| "the document does not analyse")?;
        Ok(Self {
            rules: rules()?,
            ty: operation.ty,
            name: operation.name,
            root_fields: operation.root_fields,
        })
    }

    /// Decides; returns the number of claim paths in the decision's scope.
    pub fn run(&self) -> usize {
        self.rules
            .decide(
                self.ty,
                self.name.as_deref(),
                self.root_fields.iter().map(String::as_str),
            )
            .scope
            .len()
    }
}

/// `TokenVerifier::verify` of an HS256 token, with or without the verified-token cache.
pub struct TokenVerification {
    verifier: TokenVerifier,
    token: String,
}

/// Tokens are credentials, even a bench's: never printed.
impl std::fmt::Debug for TokenVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerification")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl TokenVerification {
    /// An HS256 verifier (`iss` and `aud` = `bench`) and a day-long token it accepts,
    /// verified once already; with `token_cache`, a cache of the builder's default size.
    pub fn new(token_cache: bool) -> Result<Self, Error> {
        let issuer = Verifier::hmac(Algorithm::HS256, SECRET)
            .issuer(["bench"])
            .audience(["bench"])
            .build()?;
        let verifier = TokenVerifier::new(
            vec![issuer],
            token_cache.then_some(DEFAULT_TOKEN_CACHE_BYTES),
        )?;
        // After `build()`, which installs the crypto provider.
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims_map(),
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )?;
        let this = Self { verifier, token };
        match this.run() {
            Some(Ok(_)) => Ok(this),
            Some(Err(kind)) => Err(format!("the token was refused: {kind:?}").into()),
            None => Err("verifying the token did not complete at once".into()),
        }
    }

    /// Verifies the token: signature and claims, or a verified-token cache hit. `None` if
    /// it would have had to wait (never, for an HMAC key).
    pub fn run(&self) -> Option<Result<Claims, AuthErrorKind>> {
        self.verifier.verify(&self.token).now_or_never()
    }
}

/// `is_revoked` of the in-memory revocation store, for a token it does not hold.
#[derive(Debug)]
pub struct RevocationCheck {
    store: MemoryRevocations,
    claims: Claims,
    clock: UnixClock,
}

impl RevocationCheck {
    /// A store of the builder's default size and retention holding `revoked` revoked
    /// `jti`s (valid a day), and a token with another `jti`.
    pub fn new(revoked: usize) -> Result<Self, RevokeError> {
        let store = MemoryRevocations::new(
            DEFAULT_MAX_REVOCATIONS.max(revoked),
            0,
            DEFAULT_RETENTION.as_secs(),
        );
        let now = crate::clock::now_seconds();
        for n in 0..revoked {
            let jti = format!("{n:08x}-0000-4000-8000-{n:012x}");
            store.revoke(&Revoke::token_unix(jti, now + 86_400), now)?;
        }
        Ok(Self {
            store,
            claims: Claims::new(claims_map()),
            clock: UnixClock::new(),
        })
    }

    /// Checks the token; returns whether it is revoked (it is not).
    pub fn run(&self) -> bool {
        self.store.is_revoked(&self.claims, &self.clock)
    }
}

/// `MemoryStore::get_local` on a hit.
#[derive(Debug)]
pub struct StoreGet {
    store: MemoryStore,
    keys: Vec<CacheKey>,
    next: Cell<usize>,
}

impl StoreGet {
    /// A memory store holding `entries` fresh entries (an hour), each a small JSON answer
    /// with its representation headers, under keys of distinct documents.
    pub fn new(entries: usize) -> Result<Self, Error> {
        // Large enough that nothing is evicted.
        let store = MemoryStore::new(4 * 1024 * 1024 * 1024);
        let parts = post_parts(64)?;
        let key_headers = key_headers()?;
        let target = Target::new(&parts, &key_headers, true);
        let bucket = Bucket::derive(&[], None);
        let body: String = {
            let posts: Vec<Value> = (1..=5)
                .map(|id| json!({"id": id, "title": format!("post number {id}")}))
                .collect();
            json!({"data": {"publicPosts": posts}}).to_string()
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
        let mut keys = Vec::with_capacity(entries);
        for n in 0..entries {
            let query = format!("{{ post(id: {n}) {{ id title }} }}");
            let key = CacheKey::new(&target, &digest(&query)?, &bucket);
            let now = Instant::now();
            let until = now + Duration::from_secs(3600);
            let entry = CachedResponse {
                headers: headers.clone(),
                body: Bytes::from(body.clone()),
                etag: HeaderValue::from_str(&format!("\"{n:016x}\""))?,
                stored_at: now,
                expires_at: until,
                stale_until: until,
                error_until: until,
                meta: EntryMeta::default(),
            };
            if !store.hold(key, std::sync::Arc::new(entry), store.epoch(), until) {
                return Err("an entry was not stored".into());
            }
            keys.push(key);
        }
        // Housekeeping done (and every entry still there) before anything is measured.
        let stored = store.stats().entries;
        if stored != entries as u64 {
            return Err(format!("{stored} of {entries} entries stored").into());
        }
        Ok(Self {
            store,
            keys,
            next: Cell::new(0),
        })
    }

    /// Gets the next stored key in turn at `Instant::now()`, as a lookup does, so a large
    /// store is read all over rather than one hot entry; returns whether it was found.
    pub fn run(&self) -> bool {
        let n = self.next.get();
        self.next
            .set(if n + 1 >= self.keys.len() { 0 } else { n + 1 });
        self.keys
            .get(n)
            .and_then(|key| self.store.get_local(key, Instant::now()))
            .is_some()
    }
}
