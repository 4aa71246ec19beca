//! Rules: per root field or operation name, how an operation is cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::OperationType;

use crate::BuildError;
use crate::graphql::schema::RootFields;
use crate::scope::learned::Subject;
use crate::scope::{ClaimPath, Scope};

/// How matching operations are cached: their [`Scope`], their max-age, or a bypass.
///
/// Rules match **before execution**, by root field (`Query.me`; the prefix names the
/// operation kind, `Query`, `Mutation` or `Subscription`, whatever your root types are
/// called; root fields reached through fragments count) or by operation name (the name of
/// the operation that runs, sent as `operationName` or not). Each root field uses its rule
/// or the default rule; a matching operation-name rule joins them. The operation takes the
/// union of their scopes, the shortest max-age, and bypasses if any of them does, so
/// naming an operation can only narrow how it is cached, never widen it. Settings a rule
/// leaves unset come from the default rule.
///
/// ```
/// use std::time::Duration;
/// use scoped_cache::{Rule, Scope};
///
/// let me = Rule::root_field("Query.me").scope(Scope::claims(["sub", "name", "role"]));
/// let feed = Rule::root_field("Query.publicPosts").max_age(Duration::from_secs(300));
/// let debug = Rule::operation("Debug").bypass();
/// # let _ = (me, feed, debug);
/// ```
#[derive(Debug, Clone)]
pub struct Rule {
    matcher: Matcher,
    scope: Option<Scope>,
    max_age: Option<Duration>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    bypass: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    Default,
    RootField(String),
    Operation(String),
}

impl Default for Rule {
    fn default() -> Self {
        Self::new()
    }
}

impl Rule {
    /// A rule that matches nothing by itself: pass it to
    /// [`default_rule`](crate::ScopedCacheLayerBuilder::default_rule).
    pub fn new() -> Self {
        Self {
            matcher: Matcher::Default,
            scope: None,
            max_age: None,
            stale_while_revalidate: None,
            stale_if_error: None,
            bypass: false,
        }
    }

    /// A rule for one root field, written `Query.field` (or `Mutation.`/`Subscription.`).
    pub fn root_field(field: impl Into<String>) -> Self {
        Self {
            matcher: Matcher::RootField(field.into()),
            ..Self::new()
        }
    }

    /// A rule for operations with this `operationName`; it decides for the whole operation.
    pub fn operation(name: impl Into<String>) -> Self {
        Self {
            matcher: Matcher::Operation(name.into()),
            ..Self::new()
        }
    }

    /// The scope that chooses the bucket. Default: the default rule's, which is
    /// [`Scope::public`] unless changed.
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// The longest time an entry is served. The response's own `Cache-Control: max-age`
    /// (computed by async-graphql from `#[graphql(cache_control(..))]`) can shorten it.
    /// Default: the default rule's, which is 60 seconds unless changed. Zero disables
    /// caching; more than a year is refused by `build()`.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// How long past its max-age an entry is still served (`x-cache: STALE`) while one
    /// request revalidates it in the background, RFC 5861's `stale-while-revalidate`.
    /// The revalidation runs with the claims of the request that found the entry stale,
    /// once per key however many requests arrive (coalesced with misses of the key). The
    /// response's own `Cache-Control: stale-while-revalidate=N` is honoured too; when both
    /// are set the shorter wins. Default: the default rule's, which is none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use scoped_cache::Rule;
    ///
    /// let ticker = Rule::root_field("Query.ticker")
    ///     .max_age(Duration::from_secs(2))
    ///     .stale_while_revalidate(Duration::from_secs(30));
    /// # let _ = ticker;
    /// ```
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// How long past its max-age an entry is served (`x-cache: STALE`) when executing
    /// the operation again fails: an error result, a status other than 200, a panic, or
    /// no answer within 10 seconds. RFC 5861's `stale-if-error`; the response's own
    /// `Cache-Control: stale-if-error=N` is honoured too (the shorter wins). A purged
    /// entry is never served stale. Default: the default rule's, which is none.
    #[must_use]
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// Never cache matching operations (`x-cache: BYPASS`).
    #[must_use]
    pub fn bypass(mut self) -> Self {
        self.bypass = true;
        self
    }
}

/// The default max-age of the default rule.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// The longest max-age accepted (RFC 9111 suggests a year as "never expires").
pub(crate) const MAX_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A rule with every setting decided.
#[derive(Debug, Clone)]
struct Settled {
    scope: Vec<ClaimPath>,
    /// The scope is learned ([`Scope::auto`]).
    auto: bool,
    max_age: Duration,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    bypass: bool,
    /// Index of this rule's name in [`RuleSet::rule_labels`].
    label: u16,
}

/// Label of the default rule in [`RuleSet::rule_labels`].
pub(crate) const DEFAULT_RULE: u16 = 0;
/// Label of a decision several named rules made together.
pub(crate) const SEVERAL_RULES: u16 = 1;
/// Label of an operation without a name in [`RuleSet::operation_labels`].
pub(crate) const ANONYMOUS_OPERATION: u16 = 0;
/// Label of an operation whose name no rule knows: client-chosen names never become
/// labels, so a metric's series stay as few as the rules.
pub(crate) const OTHER_OPERATION: u16 = 1;

/// What the cache does with one operation.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    /// Sorted, deduplicated union of the scopes involved (learned scopes are added per
    /// request, see [`crate::scope::learned`]).
    pub(crate) scope: Arc<[ClaimPath]>,
    pub(crate) max_age: Duration,
    /// Set when every rule involved allows it: the shortest.
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) bypass: bool,
    /// What learns its scope: `Query.me` for a root field, `operation Feed` for an
    /// operation rule.
    pub(crate) learned: Arc<[Arc<str>]>,
    /// Which rule decided, for metrics and traces: an index into
    /// [`RuleSet::rule_labels`].
    pub(crate) rule: u16,
    /// Which operation this is, for metrics and traces: an index into
    /// [`RuleSet::operation_labels`].
    pub(crate) operation: u16,
    /// Whether a bypass came from the default rule alone.
    pub(crate) by_default: bool,
}

impl Decision {
    pub(crate) fn is_scoped(&self) -> bool {
        !self.scope.is_empty()
    }
}

/// All rules, compiled for lookup.
#[derive(Debug)]
pub(crate) struct RuleSet {
    default: Settled,
    fields: HashMap<(Kind, String), Settled>,
    operations: HashMap<String, (Settled, u16)>,
    /// Names of the rules, for metrics and traces: `default`, `several`, then each rule
    /// as it was written (`Query.me`, `operation Feed`).
    rule_labels: Vec<Arc<str>>,
    /// Names of the operations the rules know: `anonymous`, `other`, then each name an
    /// operation rule gives.
    operation_labels: Vec<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Query,
    Mutation,
    Subscription,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Query => "Query",
            Kind::Mutation => "Mutation",
            Kind::Subscription => "Subscription",
        }
    }
}

impl From<OperationType> for Kind {
    fn from(ty: OperationType) -> Self {
        match ty {
            OperationType::Query => Kind::Query,
            OperationType::Mutation => Kind::Mutation,
            OperationType::Subscription => Kind::Subscription,
        }
    }
}

impl RuleSet {
    /// Compiles the rules; with `schema`, a root-field rule must name a root field the
    /// schema has.
    pub(crate) fn compile(
        default: Option<Rule>,
        rules: Vec<Rule>,
        schema: Option<&RootFields>,
    ) -> Result<Self, BuildError> {
        let default_rule = default.unwrap_or_default();
        for rule in std::iter::once(&default_rule).chain(&rules) {
            let windows = [
                rule.max_age,
                rule.stale_while_revalidate,
                rule.stale_if_error,
            ];
            if windows.iter().flatten().any(|age| *age > MAX_MAX_AGE) {
                return Err(BuildError::MaxAgeTooLong);
            }
        }
        let default_scope = default_rule.scope.unwrap_or_default();
        let default = Settled {
            scope: default_scope.parse()?,
            auto: default_scope.is_auto(),
            max_age: default_rule.max_age.unwrap_or(DEFAULT_MAX_AGE),
            stale_while_revalidate: default_rule.stale_while_revalidate,
            stale_if_error: default_rule.stale_if_error,
            bypass: default_rule.bypass,
            label: DEFAULT_RULE,
        };
        let mut fields = HashMap::new();
        let mut operations = HashMap::new();
        let mut rule_labels: Vec<Arc<str>> = vec!["default".into(), "several".into()];
        let mut operation_labels: Vec<Arc<str>> = vec!["anonymous".into(), "other".into()];
        if rules.len() > usize::from(u16::MAX) - rule_labels.len() {
            return Err(BuildError::TooManyRules);
        }
        for rule in rules {
            let (scope, auto) = match &rule.scope {
                Some(scope) => (scope.parse()?, scope.is_auto()),
                None => (default.scope.clone(), default.auto),
            };
            let settled = Settled {
                scope,
                auto,
                max_age: rule.max_age.unwrap_or(default.max_age),
                stale_while_revalidate: rule
                    .stale_while_revalidate
                    .or(default.stale_while_revalidate),
                stale_if_error: rule.stale_if_error.or(default.stale_if_error),
                bypass: rule.bypass,
                label: u16::try_from(rule_labels.len()).unwrap_or(SEVERAL_RULES),
            };
            match rule.matcher {
                Matcher::Default => {
                    return Err(BuildError::InvalidRootField(
                        "a rule from Rule::new() belongs in default_rule(..)".into(),
                    ));
                }
                Matcher::RootField(field) => {
                    let (kind, name) = parse_root_field(&field)?;
                    if let Some(schema) = schema {
                        let fields = match kind {
                            Kind::Query => &schema.query,
                            Kind::Mutation => &schema.mutation,
                            Kind::Subscription => &schema.subscription,
                        };
                        if !fields.as_ref().is_some_and(|f| f.contains(name)) {
                            return Err(BuildError::UnknownRootField(field));
                        }
                    }
                    if fields.insert((kind, name.to_owned()), settled).is_some() {
                        return Err(BuildError::DuplicateRule(field));
                    }
                    rule_labels.push(field.into());
                }
                Matcher::Operation(name) => {
                    let operation =
                        u16::try_from(operation_labels.len()).unwrap_or(OTHER_OPERATION);
                    if operations
                        .insert(name.clone(), (settled, operation))
                        .is_some()
                    {
                        return Err(BuildError::DuplicateRule(name));
                    }
                    rule_labels.push(Subject::Operation(&name).spelled().into());
                    operation_labels.push(name.into());
                }
            }
        }
        Ok(Self {
            default,
            fields,
            operations,
            rule_labels,
            operation_labels,
        })
    }

    /// The rules' names, by [`Decision::rule`].
    pub(crate) fn rule_labels(&self) -> &[Arc<str>] {
        &self.rule_labels
    }

    /// The operation names the rules know, by [`Decision::operation`].
    pub(crate) fn operation_labels(&self) -> &[Arc<str>] {
        &self.operation_labels
    }

    /// Decides for an operation of kind `ty` named `name` selecting `root_fields`.
    /// Mutations and subscriptions are never cached.
    pub(crate) fn decide<'a>(
        &self,
        ty: OperationType,
        name: Option<&str>,
        root_fields: impl IntoIterator<Item = &'a str>,
    ) -> Decision {
        let kind = Kind::from(ty);
        // Each matched rule, with what would learn its scope if it is learned.
        let mut matched: Vec<(&Settled, String)> = root_fields
            .into_iter()
            .map(|field| {
                let rule = self
                    .fields
                    .get(&(kind, field.to_owned()))
                    .unwrap_or(&self.default);
                let field = format!("{}.{field}", kind.label());
                (rule, Subject::Field(&field).spelled())
            })
            .collect();
        let named = name.and_then(|n| self.operations.get(n));
        matched.extend(
            named
                .zip(name)
                .map(|((rule, _), n)| (rule, Subject::Operation(n).spelled())),
        );
        if matched.is_empty() {
            matched.push((&self.default, Subject::Unnamed.spelled()));
        }
        let operation = match (name, named) {
            (None, _) => ANONYMOUS_OPERATION,
            (Some(_), None) => OTHER_OPERATION,
            (Some(_), Some((_, operation))) => *operation,
        };
        // The operation's own rule if it has one, else the one named rule among its
        // fields, else "several" or "default".
        let rule = match named {
            Some((rule, _)) => rule.label,
            None => {
                let mut named_fields = matched
                    .iter()
                    .map(|(r, _)| r.label)
                    .filter(|label| *label != DEFAULT_RULE);
                match named_fields.next() {
                    None => DEFAULT_RULE,
                    Some(first) if named_fields.all(|label| label == first) => first,
                    Some(_) => SEVERAL_RULES,
                }
            }
        };
        let by_default = matched.iter().all(|(r, _)| r.label == DEFAULT_RULE);
        let mut scope: Vec<ClaimPath> = matched
            .iter()
            .flat_map(|(r, _)| r.scope.iter().cloned())
            .collect();
        scope.sort();
        scope.dedup();
        let mut learned: Vec<Arc<str>> = matched
            .iter()
            .filter(|(r, _)| r.auto)
            .map(|(_, subject)| subject.as_str().into())
            .collect();
        learned.sort();
        learned.dedup();
        // A window applies only when every rule involved allows one: the shortest.
        let window = |get: fn(&Settled) -> Option<Duration>| {
            matched
                .iter()
                .map(|(r, _)| get(r))
                .try_fold(Duration::MAX, |shortest, w| w.map(|w| shortest.min(w)))
        };
        Decision {
            scope: scope.into(),
            max_age: matched
                .iter()
                .map(|(r, _)| r.max_age)
                .min()
                .unwrap_or_default(),
            stale_while_revalidate: window(|r| r.stale_while_revalidate),
            stale_if_error: window(|r| r.stale_if_error),
            bypass: kind != Kind::Query || matched.iter().any(|(r, _)| r.bypass),
            learned: learned.into(),
            rule,
            operation,
            by_default,
        }
    }
}

pub(crate) fn parse_root_field(field: &str) -> Result<(Kind, &str), BuildError> {
    let invalid = || BuildError::InvalidRootField(field.to_owned());
    let (kind, name) = field.split_once('.').ok_or_else(invalid)?;
    let kind = match kind {
        "Query" => Kind::Query,
        "Mutation" => Kind::Mutation,
        "Subscription" => Kind::Subscription,
        _ => return Err(invalid()),
    };
    if name.is_empty() || name.contains('.') {
        return Err(invalid());
    }
    Ok((kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        RuleSet::compile(
            Some(Rule::new().max_age(Duration::from_secs(60))),
            vec![
                Rule::root_field("Query.me").scope(Scope::claims(["sub", "role"])),
                Rule::root_field("Query.memberPosts")
                    .scope(Scope::claims(["role"]))
                    .max_age(Duration::from_secs(30)),
                Rule::root_field("Query.debug").bypass(),
                Rule::operation("Everything").scope(Scope::claims(["org.id"])),
            ],
            None,
        )
        .unwrap()
    }

    fn names(d: &Decision) -> Vec<String> {
        d.scope.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn several_root_fields_take_the_union_and_shortest_max_age() {
        let d = rules().decide(
            OperationType::Query,
            None,
            ["me", "memberPosts", "publicPosts"],
        );
        assert_eq!(names(&d), ["/role", "/sub"]);
        assert_eq!(d.max_age, Duration::from_secs(30));
        assert!(!d.bypass);
    }

    #[test]
    fn unmatched_fields_use_the_default_rule() {
        let d = rules().decide(OperationType::Query, None, ["publicPosts"]);
        assert!(!d.is_scoped());
        assert_eq!(d.max_age, Duration::from_secs(60));
    }

    #[test]
    fn operation_name_rule_joins_the_root_field_rules() {
        let d = rules().decide(OperationType::Query, Some("Everything"), ["me"]);
        assert_eq!(names(&d), ["/org/id", "/role", "/sub"]);
        let d = rules().decide(OperationType::Query, Some("Everything"), ["publicPosts"]);
        assert_eq!(names(&d), ["/org/id"]);
    }

    #[test]
    fn bypass_and_mutations_are_never_cached() {
        assert!(
            rules()
                .decide(OperationType::Query, None, ["me", "debug"])
                .bypass
        );
        assert!(
            rules()
                .decide(OperationType::Mutation, None, ["createPost"])
                .bypass
        );
        assert!(
            rules()
                .decide(OperationType::Subscription, None, ["x"])
                .bypass
        );
    }

    #[test]
    fn rules_must_name_root_fields_the_schema_has() {
        let schema = RootFields::from_sdl(
            "type Query { me: String memberPosts: [String] } type Mutation { createPost: String }",
        )
        .unwrap();
        let compile = |rule| RuleSet::compile(None, vec![rule], Some(&schema));
        assert!(compile(Rule::root_field("Query.memberPosts")).is_ok());
        assert!(compile(Rule::root_field("Mutation.createPost")).is_ok());
        for unknown in ["Query.member_posts", "Query.createPost", "Subscription.me"] {
            assert!(
                matches!(
                    compile(Rule::root_field(unknown)),
                    Err(BuildError::UnknownRootField(ref f)) if f == unknown
                ),
                "{unknown}"
            );
        }
    }

    #[test]
    fn bad_rules_do_not_compile() {
        let compile = |rule| RuleSet::compile(None, vec![rule], None).unwrap_err();
        assert!(matches!(
            compile(Rule::root_field("me")),
            BuildError::InvalidRootField(_)
        ));
        assert!(matches!(
            compile(Rule::root_field("Thing.me")),
            BuildError::InvalidRootField(_)
        ));
        assert!(matches!(
            compile(Rule::root_field("Query.me").scope(Scope::claims(["exp"]))),
            BuildError::VolatileScopeClaim(_)
        ));
        assert!(matches!(
            compile(Rule::root_field("Query.me").scope(Scope::claims(["org..id"]))),
            BuildError::InvalidClaimPath { .. }
        ));
        let forever = Rule::new().max_age(Duration::MAX);
        assert!(matches!(
            RuleSet::compile(Some(forever), vec![], None),
            Err(BuildError::MaxAgeTooLong)
        ));
        let twice = RuleSet::compile(
            None,
            vec![Rule::root_field("Query.me"), Rule::root_field("Query.me")],
            None,
        );
        assert!(matches!(twice, Err(BuildError::DuplicateRule(_))));
    }
}
