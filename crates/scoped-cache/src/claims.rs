//! Verified claims, as handlers and resolvers see them.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::rejection::{AuthError, AuthErrorKind};
use crate::scope::ClaimPath;

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
}

/// What one request read from its claims.
#[derive(Debug, Default)]
pub(crate) struct ReadLog {
    paths: Mutex<Vec<ClaimPath>>,
}

impl ReadLog {
    fn record(&self, path: ClaimPath) {
        let mut paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        if !paths.contains(&path) {
            paths.push(path);
        }
    }

    /// The first read that none of `scope` covers, if any.
    pub(crate) fn first_uncovered(&self, scope: &[ClaimPath]) -> Option<ClaimPath> {
        let paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        paths
            .iter()
            .find(|read| !scope.iter().any(|s| s.covers(read)))
            .cloned()
    }
}

impl Claims {
    pub(crate) fn new(map: Map<String, Value>) -> Self {
        Self {
            map: Arc::new(map),
            reads: Arc::default(),
        }
    }

    /// The same claims with a fresh read log: a verified token served from the token cache
    /// to many requests must not mix their reads.
    pub(crate) fn for_request(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
            reads: Arc::default(),
        }
    }

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

    /// Deserializes the whole claim set into `T`.
    ///
    /// This reads every claim, so a response whose resolvers call it is cached only when
    /// its scope covers each top-level claim present in the token. Prefer
    /// [`get`](Self::get) for the values you need.
    ///
    /// # Errors
    ///
    /// The `serde_json` error if the claims do not fit `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        for name in self.map.keys() {
            self.reads.record(ClaimPath::top_level(name.clone()));
        }
        T::deserialize(Value::Object(Map::clone(&self.map)))
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
    fn debug_never_shows_values() {
        let c = claims(json!({"sub": "secret-user"}));
        let shown = format!("{c:?}");
        assert!(shown.contains("sub"));
        assert!(!shown.contains("secret-user"));
    }
}
