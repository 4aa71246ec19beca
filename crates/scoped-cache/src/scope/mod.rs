//! Scopes and rules: which claim values choose a cache bucket, and how each operation is
//! cached.
//!
//! A [`Scope`] is a set of [`ClaimPath`]s. Every request whose claims have equal values at
//! those paths shares one bucket; a refreshed token with the same values hits the same
//! entries. [`Rule`]s attach a scope, a max-age or a bypass to root fields
//! (`Query.me`) or operation names, and are resolved before execution.

mod bucket;
pub(crate) mod learned;
mod rule;

pub(crate) use self::bucket::Bucket;
pub use self::rule::Rule;
pub(crate) use self::rule::{
    Decision, Kind, MAX_MAX_AGE, OTHER_OPERATION, RuleSet, SEVERAL_RULES, parse_root_field,
};
pub use crate::claims::ClaimPath;

use crate::BuildError;

/// Claims that differ between two tokens of the same user, so they never choose a bucket.
const VOLATILE_CLAIMS: [&str; 4] = ["exp", "iat", "nbf", "jti"];

/// The claim values that choose a cache bucket.
///
/// [`Scope::public`] (the default) shares entries between all callers of the same kind
/// (anonymous callers and callers with a verified token never share). [`Scope::claims`]
/// gives each distinct combination of values its own bucket.
///
/// ```
/// use scoped_cache::Scope;
///
/// let per_user = Scope::claims(["sub", "name", "role"]);
/// let per_org = Scope::claims(["org.id"]);
/// # let _ = (per_user, per_org);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Scope {
    paths: Vec<String>,
    auto: bool,
}

impl Scope {
    /// Shared by all callers (of the same kind: anonymous or authenticated).
    pub fn public() -> Self {
        Self::default()
    }

    /// One bucket per combination of values at these claim paths (see [`ClaimPath`] for
    /// the spellings). `exp`, `iat`, `nbf` and `jti` are refused by `build()`.
    pub fn claims<I: IntoIterator<Item = S>, S: Into<String>>(paths: I) -> Self {
        Self {
            paths: paths.into_iter().map(Into::into).collect(),
            auto: false,
        }
    }

    /// A scope learned from what the resolvers read, per root field (or per operation
    /// name, on an operation rule).
    ///
    /// Every claim a resolver reads goes through [`Claims`](crate::Claims) and is recorded.
    /// The first clean execution of a field whose scope is not known yet is served and
    /// **not stored**; the claims it read become the field's scope, and later executions
    /// are bucketed by exactly those claims. An execution that reads a claim outside the
    /// learned set is served and not stored, the set widens to include it, and every entry
    /// stored for the field under the narrower scope is purged. Scopes only ever widen.
    ///
    /// The limits: reads that bypass `Claims` (raw headers, the token itself) are
    /// invisible; a resolver whose reads depend on data (it reads `role` only for
    /// members-only posts) widens the scope the first time that data shows up, and until
    /// then its entries are shared more widely than they will be afterwards (each one was
    /// correct for what its own execution read). When one operation selects several
    /// learned fields, each learns the reads made while it resolved, plus those made
    /// outside any field (with the layer's [`EntityTags`](crate::graphql::EntityTags)
    /// extension in the schema; without it, every read of the operation). A field seen
    /// reading `exp`, `iat`, `nbf` or `jti`, or more than 32 claim paths, is never stored
    /// (logged once). Learned scopes live in memory, per layer, for at most 4,096 fields;
    /// they are forgotten on restart.
    ///
    /// ```
    /// use scoped_cache::{Rule, Scope};
    ///
    /// let learned = Rule::root_field("Query.me").scope(Scope::auto());
    /// # let _ = learned;
    /// ```
    pub fn auto() -> Self {
        Self {
            paths: Vec::new(),
            auto: true,
        }
    }

    pub(crate) fn is_auto(&self) -> bool {
        self.auto
    }

    pub(crate) fn parse(&self) -> Result<Vec<ClaimPath>, BuildError> {
        let mut parsed = self
            .paths
            .iter()
            .map(|p| {
                let path = ClaimPath::parse(p)?;
                if VOLATILE_CLAIMS.contains(&path.segments()[0].as_str()) {
                    return Err(BuildError::VolatileScopeClaim(p.clone()));
                }
                Ok(path)
            })
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort();
        parsed.dedup();
        Ok(parsed)
    }
}
