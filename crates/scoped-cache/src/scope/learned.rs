//! Learned scopes ([`Scope::auto`](crate::Scope::auto)): the claims each root field's
//! resolvers were seen to read.
//!
//! Memory: one entry per learning field (at most [`MAX_LEARNED`]), each a few claim paths.
//! Only fields whose execution came back clean are learned, so documents naming fields
//! the schema does not have (refused by validation) never add an entry.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::scope::{ClaimPath, Decision};

/// Most fields whose scope is learned; past it, new fields are executed and never stored.
pub(crate) const MAX_LEARNED: usize = 4096;

/// Claims that differ from one token to the next of the same user: a scope holding one
/// would make a bucket per token, so a field that reads one is never stored instead.
const PER_TOKEN: [&str; 4] = ["exp", "iat", "nbf", "jti"];

/// Most claim paths one field's scope learns; a field seen reading more (paths taken from
/// its input, say) is never stored, so no client can make it widen, and purge, forever.
pub(crate) const MAX_PATHS: usize = 32;

/// What learns a scope, as a [`Decision`] names it: a root field (`Query.me`), an
/// operation's rule (`operation Feed`), or the default rule of an operation with neither
/// (`operation`). Spelled and read back only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject<'a> {
    /// A root field, `Type.field`.
    Field(&'a str),
    /// The rule of the operation of this name.
    Operation(&'a str),
    /// The default rule of an operation with no root field's or operation's rule.
    Unnamed,
}

impl<'a> Subject<'a> {
    /// The subject a decision's text names.
    pub(crate) fn parse(text: &'a str) -> Self {
        match text.strip_prefix("operation") {
            Some("") => Self::Unnamed,
            Some(name) if name.starts_with(' ') => Self::Operation(&name[1..]),
            _ => Self::Field(text),
        }
    }

    /// The text that names this subject in a decision.
    pub(crate) fn spelled(self) -> String {
        match self {
            Self::Field(field) => field.to_owned(),
            Self::Operation(name) => format!("operation {name}"),
            Self::Unnamed => "operation".to_owned(),
        }
    }
}

/// What is known of one field.
#[derive(Debug, Clone)]
enum Known {
    /// The claims it reads: its scope.
    Claims(Arc<[ClaimPath]>),
    /// It reads a claim of [`PER_TOKEN`], or more than [`MAX_PATHS`]: its answers are
    /// never stored.
    NotStored,
}

/// Said once per field (it becomes never stored once): the claim's path may come from a
/// handler or extension reading every claim (`Claims::deserialize` into a struct with
/// `exp`), which counts for every field.
fn not_stored(subject: &str, why: &str) {
    tracing::warn!(
        field = subject,
        why,
        "a learned field is never stored from now on; reads made outside any field's resolution (a handler deserializing all claims) count for every field"
    );
}

fn per_token(path: &ClaimPath) -> bool {
    path.segments()
        .first()
        .is_some_and(|name| PER_TOKEN.contains(&name.as_str()))
}

/// The scopes learned so far.
#[derive(Debug, Default)]
pub(crate) struct LearnedScopes {
    fields: RwLock<HashMap<Arc<str>, Known>>,
}

/// The decision for one request once learned scopes are known.
#[derive(Debug)]
pub(crate) enum Resolved<'d> {
    /// Every learned field's scope is known: this is the decision to cache under.
    Known(Cow<'d, Decision>),
    /// Some field has not been learned yet, or reads a claim that differs per token:
    /// execute, learn, do not store.
    Learning,
}

impl LearnedScopes {
    /// `decision` with the learned scopes of its fields added.
    pub(crate) fn resolve<'d>(&self, decision: &'d Decision) -> Resolved<'d> {
        if decision.learned.is_empty() {
            return Resolved::Known(Cow::Borrowed(decision));
        }
        let fields = self.fields.read().unwrap_or_else(PoisonError::into_inner);
        let mut scope: Vec<ClaimPath> = decision.scope.to_vec();
        for subject in decision.learned.iter() {
            match fields.get(subject) {
                Some(Known::Claims(learned)) => scope.extend(learned.iter().cloned()),
                Some(Known::NotStored) | None => return Resolved::Learning,
            }
        }
        scope.sort();
        scope.dedup();
        Resolved::Known(Cow::Owned(Decision {
            scope: scope.into(),
            ..decision.clone()
        }))
    }

    /// Records what an execution of `decision`'s learning fields read (`reads_of` a
    /// subject: the claims it is credited with); returns the fields whose scope widened
    /// (their stored entries are now too widely shared). A field seen for the first time
    /// is learned, not widened.
    pub(crate) fn learn(
        &self,
        decision: &Decision,
        reads_of: impl Fn(&str) -> Vec<ClaimPath>,
    ) -> Vec<Arc<str>> {
        if decision.learned.is_empty() {
            return Vec::new();
        }
        let reads: Vec<(&Arc<str>, Vec<ClaimPath>)> = decision
            .learned
            .iter()
            .map(|subject| (subject, reads_of(subject)))
            .collect();
        if self.knows(&reads) {
            return Vec::new();
        }
        let mut widened = Vec::new();
        let mut fields = self.fields.write().unwrap_or_else(PoisonError::into_inner);
        for (subject, reads) in reads {
            let reads_per_token = reads.iter().any(per_token);
            match fields.get(subject) {
                Some(Known::NotStored) => {}
                // Its stored answers were shared by every token of a bucket.
                Some(Known::Claims(_)) if reads_per_token => {
                    not_stored(
                        subject,
                        "it reads a claim that differs per token (exp, iat, nbf or jti)",
                    );
                    fields.insert(Arc::clone(subject), Known::NotStored);
                    widened.push(Arc::clone(subject));
                }
                Some(Known::Claims(known)) => {
                    let new: Vec<&ClaimPath> = reads
                        .iter()
                        .filter(|read| !known.iter().any(|k| k.covers(read)))
                        .collect();
                    if new.is_empty() {
                        continue;
                    }
                    let mut wider: Vec<ClaimPath> = known.to_vec();
                    wider.extend(new.into_iter().cloned());
                    wider.sort();
                    wider.dedup();
                    let known = if wider.len() > MAX_PATHS {
                        not_stored(subject, "it reads more than 32 claim paths");
                        Known::NotStored
                    } else {
                        Known::Claims(wider.into())
                    };
                    fields.insert(Arc::clone(subject), known);
                    widened.push(Arc::clone(subject));
                }
                None if fields.len() < MAX_LEARNED => {
                    let mut learned = reads.to_vec();
                    learned.sort();
                    learned.dedup();
                    let known = if reads_per_token || learned.len() > MAX_PATHS {
                        not_stored(
                            subject,
                            "it reads a claim that differs per token (exp, iat, nbf or jti), or more than 32 claim paths",
                        );
                        Known::NotStored
                    } else {
                        Known::Claims(learned.into())
                    };
                    fields.insert(Arc::clone(subject), known);
                }
                None => {}
            }
        }
        widened
    }
}

impl LearnedScopes {
    /// Whether every subject is learned and covers what it read (the common case,
    /// checked under the read lock).
    fn knows(&self, reads: &[(&Arc<str>, Vec<ClaimPath>)]) -> bool {
        let fields = self.fields.read().unwrap_or_else(PoisonError::into_inner);
        reads
            .iter()
            .all(|(subject, reads)| match fields.get(*subject) {
                Some(Known::NotStored) => true,
                Some(Known::Claims(known)) => reads
                    .iter()
                    .all(|read| !per_token(read) && known.iter().any(|k| k.covers(read))),
                None => false,
            })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_subject_reads_back_as_it_was_spelled() {
        for subject in [
            Subject::Field("Query.me"),
            Subject::Operation("Feed"),
            Subject::Unnamed,
        ] {
            assert_eq!(Subject::parse(&subject.spelled()), subject);
        }
        // A root field is `Type.field`: never read as an operation.
        assert_eq!(
            Subject::parse("Query.operation"),
            Subject::Field("Query.operation")
        );
    }

    use std::time::Duration;

    use super::*;

    fn decision(learned: &[&str]) -> Decision {
        Decision {
            scope: Arc::from(Vec::new()),
            max_age: Duration::from_secs(60),
            stale_while_revalidate: None,
            stale_if_error: None,
            bypass: false,
            learned: learned.iter().map(|s| Arc::from(*s)).collect(),
            rule: 0,
            operation: 0,
            by_default: true,
        }
    }

    fn paths(p: &[&str]) -> Vec<ClaimPath> {
        p.iter().map(|p| ClaimPath::parse(p).unwrap()).collect()
    }

    fn scope_of(resolved: Resolved<'_>) -> Vec<String> {
        match resolved {
            Resolved::Known(d) => d.scope.iter().map(ToString::to_string).collect(),
            Resolved::Learning => panic!("still learning"),
        }
    }

    #[test]
    fn a_field_is_learned_then_widened() {
        let learned = LearnedScopes::default();
        let me = decision(&["Query.me"]);
        assert!(matches!(learned.resolve(&me), Resolved::Learning));
        assert!(learned.learn(&me, |_| paths(&["sub"])).is_empty());
        assert_eq!(scope_of(learned.resolve(&me)), ["/sub"]);
        // A read already covered changes nothing.
        assert!(learned.learn(&me, |_| paths(&["sub"])).is_empty());
        let widened = learned.learn(&me, |_| paths(&["role", "sub"]));
        assert_eq!(widened, [Arc::<str>::from("Query.me")]);
        assert_eq!(scope_of(learned.resolve(&me)), ["/role", "/sub"]);
    }

    #[test]
    fn an_operation_waits_for_all_its_fields() {
        let learned = LearnedScopes::default();
        learned.learn(&decision(&["Query.me"]), |_| paths(&["sub"]));
        assert!(matches!(
            learned.resolve(&decision(&["Query.me", "Query.feed"])),
            Resolved::Learning
        ));
        assert!(matches!(
            learned.resolve(&decision(&[])),
            Resolved::Known(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn a_field_that_reads_a_per_token_claim_is_never_stored() {
        let learned = LearnedScopes::default();
        let me = decision(&["Query.me"]);
        // First seen reading `exp`: never a bucket per token, never stored.
        assert!(learned.learn(&me, |_| paths(&["sub", "exp"])).is_empty());
        assert!(matches!(learned.resolve(&me), Resolved::Learning));

        // Learned from `sub`, then seen reading `jti`: its stored answers go, and from
        // then on it is not stored.
        let feed = decision(&["Query.feed"]);
        learned.learn(&feed, |_| paths(&["sub"]));
        assert_eq!(scope_of(learned.resolve(&feed)), ["/sub"]);
        assert_eq!(
            learned.learn(&feed, |_| paths(&["sub", "jti"])),
            [Arc::<str>::from("Query.feed")]
        );
        assert!(matches!(learned.resolve(&feed), Resolved::Learning));
        assert!(learned.learn(&feed, |_| paths(&["iat"])).is_empty(), "once");
        for name in PER_TOKEN {
            assert!(per_token(&ClaimPath::top_level(name)));
        }
        assert!(!per_token(&ClaimPath::parse("org.exp").unwrap()));
    }

    #[test]
    fn a_field_cannot_widen_without_bound() {
        let learned = LearnedScopes::default();
        let field = decision(&["Query.byPath"]);
        let path = |n: usize| ClaimPath::top_level(format!("c{n}"));
        learned.learn(&field, |_| vec![path(0)]);
        // Each new path widens (and purges) once, up to the bound...
        for n in 1..MAX_PATHS {
            assert_eq!(learned.learn(&field, |_| vec![path(n)]).len(), 1);
        }
        assert_eq!(learned.learn(&field, |_| vec![path(MAX_PATHS)]).len(), 1);
        // ...past which the field is never stored, and nothing widens again.
        assert!(matches!(learned.resolve(&field), Resolved::Learning));
        assert!(
            learned
                .learn(&field, |_| vec![path(MAX_PATHS + 1)])
                .is_empty()
        );
    }
}
