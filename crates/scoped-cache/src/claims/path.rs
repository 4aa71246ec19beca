//! Claim paths: how a scope names a value inside the token's claims.

use std::fmt;

use serde_json::Value;

use crate::BuildError;

/// The location of one claim value, such as `sub`, `org.id`, `/org/id` or
/// `https://example.com/role`.
///
/// Three spellings are accepted by [`ClaimPath::parse`]:
///
/// - a JSON pointer (RFC 6901) when it starts with `/`: `/org/id`, `/roles/0`,
///   `/https:~1~1example.com~1org/id`;
/// - a namespaced claim name when it contains `://`: `https://example.com/role` is one
///   top-level claim, as Auth0 and others write custom claims;
/// - otherwise a dotted path: `org.id` reaches `{"org": {"id": ..}}`.
///
/// ```
/// use scoped_cache::ClaimPath;
///
/// let path = ClaimPath::parse("org.id").unwrap();
/// assert_eq!(path, ClaimPath::parse("/org/id").unwrap());
/// assert_eq!(path.to_string(), "/org/id");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimPath {
    segments: Vec<String>,
}

impl ClaimPath {
    /// Parses a claim path.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidClaimPath`] for an empty path, an empty segment (`org..id`, `/org//id`)
    /// or a JSON pointer with a bad `~` escape.
    pub fn parse(path: &str) -> Result<Self, BuildError> {
        let invalid = |reason| BuildError::InvalidClaimPath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(invalid("it is empty"));
        }
        let segments: Vec<String> = if let Some(pointer) = path.strip_prefix('/') {
            pointer
                .split('/')
                .map(|raw| unescape_pointer(raw).ok_or_else(|| invalid("bad `~` escape")))
                .collect::<Result<_, _>>()?
        } else if path.contains("://") {
            vec![path.to_owned()]
        } else {
            path.split('.').map(str::to_owned).collect()
        };
        if segments.iter().any(String::is_empty) {
            return Err(invalid("it has an empty segment"));
        }
        Ok(Self { segments })
    }

    /// A path to one top-level claim, taken as written (no dots or pointers are interpreted).
    ///
    /// ```
    /// use scoped_cache::ClaimPath;
    ///
    /// assert_eq!(ClaimPath::top_level("sub"), ClaimPath::parse("sub").unwrap());
    /// ```
    pub fn top_level(name: impl Into<String>) -> Self {
        Self {
            segments: vec![name.into()],
        }
    }

    /// The path's segments, from the outermost claim inwards.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether `self` names `other` or a value that contains it: `org` covers `org.id`.
    pub(crate) fn covers(&self, other: &ClaimPath) -> bool {
        other.segments.starts_with(&self.segments)
    }

    /// Finds the value at this path, walking objects by key and arrays by index.
    pub(crate) fn lookup<'a>(
        &self,
        claims: &'a serde_json::Map<String, Value>,
    ) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut current = claims.get(first)?;
        for segment in rest {
            current = match current {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

fn unescape_pointer(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Displays as a JSON pointer, the one spelling that is never ambiguous.
impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            write!(f, "/{}", segment.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimPath({self})")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn segments(path: &str) -> Vec<String> {
        ClaimPath::parse(path).unwrap().segments
    }

    #[test]
    fn parses_all_three_spellings() {
        assert_eq!(segments("sub"), ["sub"]);
        assert_eq!(segments("org.id"), ["org", "id"]);
        assert_eq!(segments("/org/id"), ["org", "id"]);
        assert_eq!(
            segments("https://example.com/role"),
            ["https://example.com/role"]
        );
        assert_eq!(segments("/a~1b/c~0d"), ["a/b", "c~d"]);
    }

    #[test]
    fn rejects_empty_and_bad_escapes() {
        for bad in ["", "org..id", ".sub", "/", "/org//id", "/a~2"] {
            assert!(
                matches!(
                    ClaimPath::parse(bad),
                    Err(BuildError::InvalidClaimPath { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn display_round_trips_through_pointer_form() {
        for path in ["sub", "org.id", "https://example.com/role", "/a~1b/c~0d"] {
            let parsed = ClaimPath::parse(path).unwrap();
            assert_eq!(ClaimPath::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let claims = json!({"org": {"id": "o1"}, "roles": ["a", "b"], "https://x.io/r": "admin"});
        let map = claims.as_object().unwrap();
        let get = |p: &str| ClaimPath::parse(p).unwrap().lookup(map).cloned();
        assert_eq!(get("org.id"), Some(json!("o1")));
        assert_eq!(get("/roles/1"), Some(json!("b")));
        assert_eq!(get("https://x.io/r"), Some(json!("admin")));
        assert_eq!(get("org.missing"), None);
        assert_eq!(get("roles.x"), None);
    }

    #[test]
    fn prefix_covers_nested_paths_only() {
        let org = ClaimPath::parse("org").unwrap();
        let org_id = ClaimPath::parse("org.id").unwrap();
        assert!(org.covers(&org_id));
        assert!(org_id.covers(&org_id));
        assert!(!org_id.covers(&org));
        assert!(!ClaimPath::parse("or").unwrap().covers(&org));
    }
}
