//! Verified claims, as handlers and resolvers see them.

mod path;

pub use self::path::ClaimPath;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::rejection::{AuthError, AuthErrorKind};

/// The verified claims of the request's bearer token.
///
/// The layer inserts `Claims` into the request's extensions after the token is verified;
/// anonymous requests have none. Extract them in an axum handler as `Claims` (a missing
/// token becomes a 401 rejection) or `Option<Claims>`, and hand them to async-graphql with
/// [`graphql::with_claims`](crate::graphql::with_claims), after which resolvers read
/// `ctx.data_opt::<Claims>()`.
///
/// Values are reached only through accessor methods. Every read is recorded for the current
/// request, and a response whose resolvers read a claim that the rule's scope does not
/// cover is not cached: that is what keeps one bucket's private data from being served to
/// another even when a scope was configured too narrowly.
///
/// Cloning is cheap (two `Arc` bumps).
///
/// ```
/// use async_graphql::{Context, Object};
/// use scoped_cache::Claims;
///
/// struct Query;
///
/// #[Object]
/// impl Query {
///     async fn role(&self, ctx: &Context<'_>) -> Option<String> {
///         ctx.data_opt::<Claims>()?.claim_str("role").map(str::to_owned)
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Claims {
    map: Arc<Map<String, Value>>,
    reads: Arc<ReadLog>,
    /// The `kid` of the key that verified the token, for revocation by key.
    kid: Option<Arc<str>>,
}

/// What one request read from its claims: each path, and the root field whose resolvers
/// read it (`None`: read outside any, or without the entity-tags extension that tells).
#[derive(Debug, Default)]
pub(crate) struct ReadLog {
    reads: Mutex<Reads>,
}

/// The most distinct reads (a path, and the root field that read it) one request records.
/// Resolvers choose the paths, and a path may come from client input: past this many the
/// log stops growing, and the response is not stored (what was not recorded cannot be
/// known to be covered).
const MAX_DISTINCT_READS: usize = 256;

/// One read: a claim path, and the root field whose resolvers read it.
type Read = (ClaimPath, Option<Arc<str>>);

#[derive(Debug, Default)]
struct Reads {
    /// In the order first read, so what is reported is the first read.
    order: Vec<Read>,
    /// The same reads, so a repeated one costs a hash, not a scan.
    seen: std::collections::HashSet<Read>,
    /// The first read past [`MAX_DISTINCT_READS`], if any.
    overflow: Option<ClaimPath>,
}

tokio::task_local! {
    /// The root field (`Type.field`) being resolved: set around each root field's
    /// resolution by the entity-tags extension, so a learned scope credits a field only
    /// with the claims its own resolvers read.
    static ROOT_FIELD: Arc<str>;
}

/// Runs `resolve`, a root field's resolution, with the claims it reads credited to
/// `field` (`Type.field`).
pub(crate) async fn reading_for<F: std::future::Future>(field: Arc<str>, resolve: F) -> F::Output {
    ROOT_FIELD.scope(field, resolve).await
}

/// The read log of one request, in its extensions, shared by every layer that handles it.
///
/// Two layers on one route each verify the token; the inner one's [`Claims`] are the ones
/// resolvers read. Both record into this one log, so the outer layer, which stores too,
/// sees every read (and an inner layer's hit reports the scope its entry was stored under).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestReads {
    log: Arc<ReadLog>,
    /// The claims the layer that made the log verified (the outermost one), if any.
    caller: Option<Arc<Map<String, Value>>>,
}

impl RequestReads {
    /// The request's shared log, created if no outer layer made one (then `claims` are
    /// the caller's, as this layer verified them).
    pub(crate) fn of(extensions: &mut http::Extensions, claims: Option<&Claims>) -> Self {
        if let Some(reads) = extensions.get::<RequestReads>() {
            return reads.clone();
        }
        let reads = Self {
            log: Arc::default(),
            caller: claims.map(|claims| Arc::clone(&claims.map)),
        };
        extensions.insert(reads.clone());
        reads
    }

    /// The shared log, if an outer layer made one.
    pub(crate) fn existing(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<RequestReads>()
    }

    pub(crate) fn log(&self) -> &ReadLog {
        &self.log
    }

    /// Whether `claims` are the claims the outer layer verified (none on both sides
    /// counts): only then is its bucket the caller this layer answers. Two layers may
    /// read different credentials (one the header, one a cookie).
    pub(crate) fn same_caller(&self, claims: Option<&Claims>) -> bool {
        match (&self.caller, claims) {
            (None, None) => true,
            (Some(caller), Some(claims)) => {
                Arc::ptr_eq(caller, &claims.map) || **caller == *claims.map
            }
            _ => false,
        }
    }
}

impl ReadLog {
    /// Records every path of `scope`: an entry stored under it depends on those claims.
    pub(crate) fn record_scope(&self, scope: &[ClaimPath]) {
        for path in scope {
            self.record(path.clone());
        }
    }

    fn record(&self, path: ClaimPath) {
        let read = (path, ROOT_FIELD.try_with(Arc::clone).ok());
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        if reads.seen.contains(&read) {
            return;
        }
        if reads.order.len() >= MAX_DISTINCT_READS {
            reads.overflow.get_or_insert(read.0);
            return;
        }
        reads.seen.insert(read.clone());
        reads.order.push(read);
    }

    /// The paths a root field (`Type.field`) is credited with: those its own resolvers
    /// read, and those read outside any root field's resolution (anyone's, so everyone's).
    /// Without a field (an operation's rule), every read.
    pub(crate) fn reads_of(&self, field: Option<&str>) -> Vec<ClaimPath> {
        let reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let mut credited: Vec<ClaimPath> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (path, by) in &reads.order {
            let counts = match (field, by.as_deref()) {
                (Some(field), Some(by)) => by == field,
                _ => true,
            };
            if counts && seen.insert(path) {
                credited.push(path.clone());
            }
        }
        // Reads past the bound were not kept: who read them is unknown, so everyone did.
        if let Some(path) = &reads.overflow
            && seen.insert(path)
        {
            credited.push(path.clone());
        }
        credited
    }

    /// The first read that none of `scope` covers, if any, whichever root field read it
    /// (an entry holds every field's answer). Past the bound on distinct reads, the first
    /// one not kept, covered or not: the reads after it are unknown.
    pub(crate) fn first_uncovered(&self, scope: &[ClaimPath]) -> Option<ClaimPath> {
        let reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        reads
            .order
            .iter()
            .map(|(path, _)| path)
            .find(|read| !scope.iter().any(|s| s.covers(read)))
            .or(reads.overflow.as_ref())
            .cloned()
    }
}

impl Claims {
    pub(crate) fn new(map: Map<String, Value>) -> Self {
        Self {
            map: Arc::new(map),
            reads: Arc::default(),
            kid: None,
        }
    }

    /// The same claims, verified by the key with this `kid`.
    pub(crate) fn verified_by(mut self, kid: Option<&str>) -> Self {
        self.kid = kid.map(Arc::from);
        self
    }

    /// The `kid` of the key that verified the token, if it had one.
    pub(crate) fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The same claims with a fresh read log: a verified token served from the token cache
    /// to many requests must not mix their reads.
    pub(crate) fn for_request(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
            reads: Arc::default(),
            kid: self.kid.clone(),
        }
    }

    /// The same claims recording into the request's shared log.
    pub(crate) fn with_reads(&self, reads: &RequestReads) -> Self {
        Self {
            map: Arc::clone(&self.map),
            reads: Arc::clone(&reads.log),
            kid: self.kid.clone(),
        }
    }

    #[cfg(test)]
    pub(crate) fn read_log(&self) -> &ReadLog {
        &self.reads
    }

    /// The raw claims, for bucket derivation; does not count as a read.
    pub(crate) fn raw(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The value at `path`, if present.
    pub fn get(&self, path: &ClaimPath) -> Option<&Value> {
        self.reads.record(path.clone());
        path.lookup(&self.map)
    }

    /// The string at `path`, if present and a string.
    pub fn get_str(&self, path: &ClaimPath) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// The top-level claim `name` (taken literally, so `https://example.com/role` works).
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.get(&ClaimPath::top_level(name))
    }

    /// The top-level claim `name` if it is a string.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claim(name).and_then(Value::as_str)
    }

    /// The `sub` claim, if it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.claim_str("sub")
    }

    /// Deserializes the claims into `T`.
    ///
    /// Every top-level field `T` asks for counts as read, present in the token or not (a
    /// response can depend on a claim being absent); a `T` that takes any field (a map,
    /// `serde_json::Value`, `#[serde(flatten)]`) reads every claim. A response whose
    /// resolvers call it is cached only when its scope covers what was read. Prefer
    /// [`get`](Self::get) for the values you need.
    ///
    /// ```
    /// # fn demo(claims: &scoped_cache::Claims) -> Result<(), serde_json::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Who { sub: String, role: Option<String> }
    /// let who: Who = claims.deserialize()?; // reads `sub` and `role`, nothing else
    /// # let _ = who; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The `serde_json` error if the claims do not fit `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(Recording {
            map: &self.map,
            reads: &self.reads,
        })
    }
}

/// A deserializer over the claim map that records which top-level claims are asked for:
/// a struct's declared fields (present or not), or every claim for anything else.
struct Recording<'a> {
    map: &'a Map<String, Value>,
    reads: &'a ReadLog,
}

impl Recording<'_> {
    fn read_all(&self) {
        for name in self.map.keys() {
            self.reads.record(ClaimPath::top_level(name.clone()));
        }
    }

    fn value(&self) -> Value {
        Value::Object(Map::clone(self.map))
    }
}

impl<'de> serde::Deserializer<'de> for Recording<'_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.read_all();
        self.value().deserialize_any(visitor)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        for field in fields {
            self.reads.record(ClaimPath::top_level(*field));
        }
        // Only the asked-for claims are handed over, so unknown-field handling (and
        // `deny_unknown_fields`) behave as with the full set, minus the unread values.
        let asked: Map<String, Value> = self
            .map
            .iter()
            .filter(|(key, _)| fields.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Value::Object(asked).deserialize_struct(name, fields, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Claim values are private: `Debug` lists claim names only.
impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("names", &self.map.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Rejects with 401 when the request carried no verified token.
impl<S: Send + Sync> FromRequestParts<S> for Claims {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .ok_or_else(|| AuthError::new(AuthErrorKind::MissingToken))
    }
}

/// `Option<Claims>`: `None` for anonymous requests.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Claims {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Claims>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Claims {
        Claims::new(value.as_object().unwrap().clone())
    }

    fn path(p: &str) -> ClaimPath {
        ClaimPath::parse(p).unwrap()
    }

    #[test]
    fn reads_are_recorded_per_request() {
        let value = json!({"sub": "u1", "role": "member", "org": {"id": "o"}});
        let first = claims(value.clone());
        let second = claims(value);
        assert_eq!(first.claim_str("role"), Some("member"));
        assert_eq!(first.get_str(&path("org.id")), Some("o"));

        assert_eq!(
            first.read_log().first_uncovered(&[path("role")]),
            Some(path("org.id"))
        );
        assert_eq!(
            first
                .read_log()
                .first_uncovered(&[path("role"), path("org")]),
            None
        );
        assert_eq!(second.read_log().first_uncovered(&[]), None);
    }

    #[test]
    fn deserialize_reads_the_fields_asked_for_present_or_absent() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Who {
            sub: String,
            role: Option<String>,
        }
        let c = claims(json!({"sub": "u1", "name": "Ann", "iss": "i"}));
        let who: Who = c.deserialize().unwrap();
        assert_eq!(who.sub, "u1");
        assert!(who.role.is_none());
        // `role` is absent, and still read: the response depends on its absence.
        assert_eq!(
            c.read_log().first_uncovered(&[path("sub")]),
            Some(path("role"))
        );
        assert!(
            c.read_log()
                .first_uncovered(&[path("sub"), path("role")])
                .is_none()
        );
    }

    #[test]
    fn deserialize_reads_everything() {
        let c = claims(json!({"sub": "u1", "role": "member"}));
        let all: Value = c.deserialize().unwrap();
        assert_eq!(all["sub"], "u1");
        assert!(c.read_log().first_uncovered(&[path("sub")]).is_some());
        assert!(
            c.read_log()
                .first_uncovered(&[path("sub"), path("role")])
                .is_none()
        );
    }

    #[test]
    fn any_root_fields_read_counts_against_the_scope() {
        let c = claims(json!({"sub": "u1", "role": "member"}));
        let log = c.read_log();
        let read_in = |field: &str, p: &str| {
            let c = c.clone();
            let p = path(p);
            futures_util::FutureExt::now_or_never(reading_for(Arc::from(field), async move {
                c.get(&p);
            }))
            .unwrap();
        };
        read_in("Query.me", "sub");
        read_in("Query.feed", "role");
        // Credited per field for learning...
        assert_eq!(log.reads_of(Some("Query.feed")), vec![path("role")]);
        // ...but the entry holds both fields' answers: every read counts.
        assert_eq!(log.first_uncovered(&[path("role")]), Some(path("sub")));
        assert_eq!(log.first_uncovered(&[path("sub")]), Some(path("role")));
        assert_eq!(log.first_uncovered(&[path("sub"), path("role")]), None);
    }

    #[test]
    fn reads_past_the_bound_are_never_covered() {
        let c = claims(json!({"sub": "u1"}));
        for n in 0..MAX_DISTINCT_READS + 10 {
            c.get(&path(&format!("groups.g{n}")));
        }
        // Every read is under `groups`, but those not kept cannot be known to be.
        assert_eq!(
            c.read_log().first_uncovered(&[path("groups")]),
            Some(path(&format!("groups.g{MAX_DISTINCT_READS}")))
        );
        assert!(c.read_log().reads_of(Some("Query.me")).len() > MAX_DISTINCT_READS);
        // Repeats cost nothing and add nothing.
        let c = claims(json!({"sub": "u1"}));
        for _ in 0..10_000 {
            c.get(&path("sub"));
        }
        assert_eq!(c.read_log().first_uncovered(&[path("sub")]), None);
    }

    #[test]
    fn debug_never_shows_values() {
        let c = claims(json!({"sub": "secret-user"}));
        let shown = format!("{c:?}");
        assert!(shown.contains("sub"));
        assert!(!shown.contains("secret-user"));
    }
}
