//! What a purge removes: [`Purge`], and the entry metadata it is matched against.

use std::sync::Arc;

use serde_json::Value;

use crate::canonical::{put_field, put_json};
use crate::scope::ClaimPath;

/// A set of cache entries to remove, for [`ScopedCacheLayer::purge`](crate::ScopedCacheLayer::purge).
///
/// Entries are tagged when stored: with the types and `Type:id` entities in the response
/// (recorded by [`EntityTags`](crate::graphql::EntityTags)), the name of the operation
/// that produced them, the claim values of their bucket, and their root fields.
///
/// ```
/// use scoped_cache::Purge;
///
/// let one_post = Purge::tags(["Post:42"]);
/// let every_post = Purge::types(["Post"]);
/// let the_feed = Purge::operation("Feed");
/// let alice = Purge::scope([("sub", "alice")])?; // every bucket whose `sub` is alice
/// let everything = Purge::all();
/// # let _ = (one_post, every_post, the_feed, alice, everything);
/// # Ok::<(), scoped_cache::PurgeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Purge {
    pub(crate) selector: Selector,
}

/// Why a [`Purge`] could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// A claim path in a scope purge does not parse.
    #[error("invalid claim path {0:?}")]
    InvalidClaimPath(String),
    /// A scope purge named no claim (it would match every scoped bucket; use
    /// [`Purge::all`] to mean everything).
    #[error("a scope purge needs at least one claim")]
    EmptyScope,
    /// A tag, type or operation list was empty.
    #[error("nothing to purge: the {0} list is empty")]
    Empty(&'static str),
}

/// What a purge did, from [`ScopedCacheLayer::purge`](crate::ScopedCacheLayer::purge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Purged {
    /// Entries removed here and, with a Redis tier, from Redis (scope, operation and
    /// "everything" purges in Redis are not counted: their entries go when next read).
    pub removed: u64,
    /// Whether the purge is fleet-wide: without a Redis tier always (every clone of the
    /// layer shares one store); with one, whether Redis recorded it within
    /// [`insert_timeout`](crate::RedisTier::insert_timeout). When `false`, it holds on
    /// this instance, this instance serves nothing from Redis until Redis has it, and it
    /// is retried every second until Redis records it; the other instances may serve
    /// what it removed until then.
    pub fleet_wide: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    /// Entries tagged with any of these: a type (`Post`) or an entity (`Post:42`).
    Tags(Vec<Tag>),
    /// Entries produced by an operation of this name.
    Operation(Arc<str>),
    /// Entries whose bucket holds every one of these claim values.
    Scope(Vec<Arc<[u8]>>),
    /// Entries of operations selecting one of these root fields (`Query.me`).
    Fields(Vec<Arc<str>>),
    All,
}

/// One tag of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Tag {
    /// The response holds objects of this type.
    Type(Arc<str>),
    /// The response holds this entity (type, id).
    Entity(Arc<str>, Arc<str>),
    /// The response holds more entities of this type than were listed: any entity of the
    /// type matches it.
    AnyOf(Arc<str>),
}

impl Tag {
    /// `Post:42` is an entity (GraphQL type names never contain `:`), `Post` a type.
    pub(crate) fn parse(text: &str) -> Self {
        match text.split_once(':') {
            Some((ty, id)) => Tag::Entity(ty.into(), id.into()),
            None => Tag::Type(text.into()),
        }
    }
}

impl Purge {
    /// The selector's kind, for metrics: `tags`, `operation`, `scope`, `fields`, `all`.
    pub(crate) fn kind(&self) -> &'static str {
        match self.selector {
            Selector::Tags(_) => "tags",
            Selector::Operation(_) => "operation",
            Selector::Scope(_) => "scope",
            Selector::Fields(_) => "fields",
            Selector::All => "all",
        }
    }

    /// Entries tagged with any of `tags`: a type name (`Post`: every entry holding a post)
    /// or an entity, `Type:id` (`Post:42`). An entry that held more entities of a type than
    /// it could list (see [`max_entity_tags`](crate::ScopedCacheLayerBuilder::max_entity_tags))
    /// matches every entity of that type.
    pub fn tags<I, S>(tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            selector: Selector::Tags(tags.into_iter().map(|t| Tag::parse(t.as_ref())).collect()),
        }
    }

    /// Entries holding an object of any of these types.
    pub fn types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            selector: Selector::Tags(
                types
                    .into_iter()
                    .map(|t| Tag::Type(t.as_ref().into()))
                    .collect(),
            ),
        }
    }

    /// Entries holding the entity `ty` with this `id`.
    pub fn entity(ty: impl AsRef<str>, id: impl AsRef<str>) -> Self {
        Self {
            selector: Selector::Tags(vec![Tag::Entity(ty.as_ref().into(), id.as_ref().into())]),
        }
    }

    /// Entries produced by operations named `name` (the operation that ran, whether the
    /// client sent `operationName` or not).
    pub fn operation(name: impl AsRef<str>) -> Self {
        Self {
            selector: Selector::Operation(name.as_ref().into()),
        }
    }

    /// Every bucket whose scoped claims include all of these values, whatever other
    /// claims its scope also has: `[("sub", "alice")]` removes alice's `me`, and her
    /// entries under a `sub` + `role` scope, and nobody else's. Paths are spelled as in
    /// [`Scope::claims`](crate::Scope::claims); values are compared as JSON.
    ///
    /// # Errors
    ///
    /// [`PurgeError::InvalidClaimPath`] or [`PurgeError::EmptyScope`].
    pub fn scope<I, P, V>(claims: I) -> Result<Self, PurgeError>
    where
        I: IntoIterator<Item = (P, V)>,
        P: AsRef<str>,
        V: Into<Value>,
    {
        let mut encoded = Vec::new();
        for (path, value) in claims {
            let parsed = ClaimPath::parse(path.as_ref())
                .map_err(|_| PurgeError::InvalidClaimPath(path.as_ref().to_owned()))?;
            encoded.push(claim_tag(&parsed, &value.into()));
        }
        if encoded.is_empty() {
            return Err(PurgeError::EmptyScope);
        }
        Ok(Self {
            selector: Selector::Scope(encoded),
        })
    }

    /// Everything.
    pub fn all() -> Self {
        Self {
            selector: Selector::All,
        }
    }

    /// Entries whose operation selects one of these root fields (`Query.me`).
    pub(crate) fn fields(fields: impl IntoIterator<Item = Arc<str>>) -> Self {
        Self {
            selector: Selector::Fields(fields.into_iter().collect()),
        }
    }

    pub(crate) fn check(&self) -> Result<(), PurgeError> {
        match &self.selector {
            Selector::Tags(tags) if tags.is_empty() => Err(PurgeError::Empty("tags")),
            Selector::Fields(fields) if fields.is_empty() => Err(PurgeError::Empty("fields")),
            _ => Ok(()),
        }
    }
}

/// The encoding of one claim value of a bucket: path segments and canonical JSON, the
/// same bytes however the value was spelled.
pub(crate) fn claim_tag(path: &ClaimPath, value: &Value) -> Arc<[u8]> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&(path.segments().len() as u64).to_le_bytes());
    for segment in path.segments() {
        put_field(&mut bytes, segment.as_bytes());
    }
    put_json(&mut bytes, value);
    bytes.into()
}

/// What an entry is tagged with, for purges.
#[derive(Debug, Default, Clone)]
pub(crate) struct EntryMeta {
    pub(crate) tags: Vec<Tag>,
    pub(crate) operation: Option<Arc<str>>,
    /// The claim values of the entry's bucket ([`claim_tag`]); absent claims are left out.
    pub(crate) claims: Vec<Arc<[u8]>>,
    /// Root fields, `Query.me`.
    pub(crate) fields: Vec<Arc<str>>,
}

/// Bytes of bookkeeping per index key besides its text: the entry's copy (the enum and
/// its `Arc`s) and the index's slot (hash, holder, control bytes, spare capacity).
/// Measured with `cargo bench --bench tag_memory`: 100 to 230 bytes per entity tag,
/// text included, depending on where the index's table is in its growth.
const TAG_OVERHEAD: usize = 216;

impl EntryMeta {
    /// Whether `selector` removes this entry.
    pub(crate) fn matches(&self, selector: &Selector) -> bool {
        match selector {
            Selector::All => true,
            Selector::Operation(name) => self.operation.as_ref() == Some(name),
            Selector::Scope(claims) => claims.iter().all(|c| self.claims.contains(c)),
            Selector::Fields(fields) => fields.iter().any(|f| self.fields.contains(f)),
            Selector::Tags(tags) => tags.iter().any(|tag| match tag {
                Tag::Entity(ty, _) => self.has(tag) || self.has(&Tag::AnyOf(Arc::clone(ty))),
                _ => self.has(tag),
            }),
        }
    }

    /// Whether the entry carries `tag` (tags are kept sorted: see [`EntryMeta::new`]).
    fn has(&self, tag: &Tag) -> bool {
        self.tags.binary_search(tag).is_ok()
    }

    /// Metadata with its tags sorted and deduplicated, as [`matches`](Self::matches) needs.
    pub(crate) fn new(
        mut tags: Vec<Tag>,
        operation: Option<Arc<str>>,
        claims: Vec<Arc<[u8]>>,
        fields: Vec<Arc<str>>,
    ) -> Self {
        tags.sort();
        tags.dedup();
        Self {
            tags,
            operation,
            claims,
            fields,
        }
    }

    /// Every key this entry is indexed under.
    pub(crate) fn index_keys(&self) -> impl Iterator<Item = IndexKey> + '_ {
        self.tags
            .iter()
            .cloned()
            .map(IndexKey::Tag)
            .chain(self.operation.iter().cloned().map(IndexKey::Operation))
            .chain(self.claims.iter().cloned().map(IndexKey::Claim))
            .chain(self.fields.iter().cloned().map(IndexKey::Field))
    }

    /// Memory this metadata costs, in the entry and in the index.
    pub(crate) fn weight(&self) -> usize {
        let text: usize = self
            .tags
            .iter()
            .map(|tag| match tag {
                Tag::Type(t) | Tag::AnyOf(t) => t.len(),
                Tag::Entity(t, id) => t.len() + id.len() + 16,
            })
            .chain(self.operation.iter().map(|o| o.len()))
            .chain(self.claims.iter().map(|c| c.len()))
            .chain(self.fields.iter().map(|f| f.len()))
            .sum();
        let keys = self.tags.len()
            + usize::from(self.operation.is_some())
            + self.claims.len()
            + self.fields.len();
        text + keys * TAG_OVERHEAD
    }
}

/// A key of the purge index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    Tag(Tag),
    Operation(Arc<str>),
    Claim(Arc<[u8]>),
    Field(Arc<str>),
}

impl Selector {
    /// Memory a copy of this selector holds, roughly.
    pub(crate) fn weight(&self) -> usize {
        64 + match self {
            Selector::All => 0,
            Selector::Operation(name) => name.len(),
            Selector::Scope(claims) => claims.iter().map(|c| c.len() + 32).sum(),
            Selector::Fields(fields) => fields.iter().map(|f| f.len() + 32).sum(),
            Selector::Tags(tags) => tags
                .iter()
                .map(|tag| {
                    48 + match tag {
                        Tag::Type(t) | Tag::AnyOf(t) => t.len() + 16,
                        Tag::Entity(t, id) => t.len() + id.len() + 32,
                    }
                })
                .sum(),
        }
    }

    /// The index keys under which every entry this selector matches is found (a superset:
    /// matches are confirmed with [`EntryMeta::matches`]). `None` for [`Selector::All`].
    pub(crate) fn candidates(&self) -> Option<Vec<IndexKey>> {
        Some(match self {
            Selector::All => return None,
            Selector::Operation(name) => vec![IndexKey::Operation(Arc::clone(name))],
            // Every match holds the first claim.
            Selector::Scope(claims) => claims
                .iter()
                .take(1)
                .cloned()
                .map(IndexKey::Claim)
                .collect(),
            Selector::Fields(fields) => fields.iter().cloned().map(IndexKey::Field).collect(),
            Selector::Tags(tags) => tags
                .iter()
                .flat_map(|tag| {
                    let any = match tag {
                        Tag::Entity(ty, _) => Some(IndexKey::Tag(Tag::AnyOf(Arc::clone(ty)))),
                        _ => None,
                    };
                    std::iter::once(IndexKey::Tag(tag.clone())).chain(any)
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta::new(
            vec![
                Tag::Type("Post".into()),
                Tag::Entity("Post".into(), "1".into()),
                Tag::Type("User".into()),
                Tag::AnyOf("User".into()),
            ],
            Some("Feed".into()),
            vec![
                claim_tag(&ClaimPath::parse("sub").unwrap(), &json!("alice")),
                claim_tag(&ClaimPath::parse("role").unwrap(), &json!("member")),
            ],
            vec!["Query.publicPosts".into()],
        )
    }

    #[test]
    fn selectors_match_what_the_entry_holds() {
        let m = meta();
        assert!(m.matches(&Purge::tags(["Post:1"]).selector));
        assert!(!m.matches(&Purge::tags(["Post:2"]).selector));
        assert!(m.matches(&Purge::tags(["Post"]).selector));
        // More users than were listed: any user matches.
        assert!(m.matches(&Purge::entity("User", "zed").selector));
        assert!(m.matches(&Purge::types(["User"]).selector));
        assert!(!m.matches(&Purge::types(["Comment"]).selector));
        assert!(m.matches(&Purge::operation("Feed").selector));
        assert!(!m.matches(&Purge::operation("feed").selector));
        assert!(m.matches(&Purge::scope([("sub", "alice")]).unwrap().selector));
        assert!(
            m.matches(
                &Purge::scope([("role", "member"), ("/sub", "alice")])
                    .unwrap()
                    .selector
            )
        );
        assert!(!m.matches(&Purge::scope([("sub", "bob")]).unwrap().selector));
        assert!(
            !m.matches(
                &Purge::scope([("sub", "alice"), ("role", "admin")])
                    .unwrap()
                    .selector
            )
        );
        assert!(m.matches(&Purge::all().selector));
    }

    #[test]
    fn scope_values_compare_as_json() {
        let m = EntryMeta {
            claims: vec![claim_tag(&ClaimPath::parse("org.id").unwrap(), &json!(7))],
            ..EntryMeta::default()
        };
        assert!(m.matches(&Purge::scope([("org.id", 7)]).unwrap().selector));
        assert!(!m.matches(&Purge::scope([("org.id", "7")]).unwrap().selector));
    }

    #[test]
    fn bad_scopes_are_refused() {
        assert!(matches!(
            Purge::scope([("org..id", "x")]),
            Err(PurgeError::InvalidClaimPath(_))
        ));
        assert!(matches!(
            Purge::scope(Vec::<(&str, &str)>::new()),
            Err(PurgeError::EmptyScope)
        ));
    }
}
