//! Scopes and rules: which claim values choose a cache bucket, and how each operation is
//! cached.
//!
//! A [`Scope`] is a set of [`ClaimPath`]s. Every request whose claims have equal values at
//! those paths shares one bucket; a refreshed token with the same values hits the same
//! entries. [`Rule`]s attach a scope, a max-age or a bypass to root fields
//! (`Query.me`) or operation names, and are resolved before execution.

mod bucket;
mod path;
mod rule;

pub(crate) use self::bucket::Bucket;
pub use self::path::ClaimPath;
pub use self::rule::Rule;
pub(crate) use self::rule::{Decision, RuleSet};

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
        }
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
