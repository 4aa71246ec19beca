//! Mutation-driven invalidation: what a mutation's response says must be purged.
//!
//! Two sources, combined: the entities the mutation returned (reported by
//! [`EntityTags`](crate::graphql::EntityTags)), and what the builder declares for each
//! mutation field with [`invalidate`](crate::ScopedCacheLayerBuilder::invalidate). The
//! mutation fields are known from the layer's own reading of the request (cached routes)
//! and from the extension's report (every route, batches and uploads too).

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::purge::{Purge, Selector, Tag};
use crate::report::ExecutionReport;

/// What one mutation field invalidates besides the entities it returns.
#[derive(Debug, Default, Clone)]
pub(crate) struct Declared {
    pub(crate) tags: Vec<Tag>,
    /// Root fields whose entries go (`Query.publicPosts`), for schemas without the
    /// extension's tags.
    pub(crate) fields: Vec<Arc<str>>,
}

/// The declarations, by mutation field name (`createPost`).
#[derive(Debug, Default)]
pub(crate) struct Invalidations {
    pub(crate) by_field: HashMap<Arc<str>, Declared>,
}

impl Invalidations {
    /// Whether any of these root fields (`Mutation.createPost`) declares invalidations.
    pub(crate) fn declares<'a>(&self, mut fields: impl Iterator<Item = &'a str>) -> bool {
        fields.any(|f| {
            f.strip_prefix("Mutation.")
                .is_some_and(|name| self.by_field.contains_key(name))
        })
    }

    /// The purges a mutation calls for: `ran` are the mutation fields that ran without an
    /// error (`createPost`), `report` what the extension saw. Empty when none ran.
    pub(crate) fn purges(&self, ran: &[&str], report: Option<&ExecutionReport>) -> Vec<Purge> {
        if ran.is_empty() {
            return Vec::new();
        }
        let mut tags: Vec<Tag> = Vec::new();
        let mut root_fields: Vec<Arc<str>> = Vec::new();
        if let Some(report) = report {
            // What the mutation returned changed, or may have: its entities, and every
            // entity of a type it returned more of than it could list.
            tags.extend(
                report
                    .entities
                    .iter()
                    .map(|(ty, id)| Tag::Entity(ty.as_str().into(), id.as_str().into())),
            );
            tags.extend(
                report
                    .overflowed
                    .iter()
                    .map(|ty| Tag::Type(ty.as_str().into())),
            );
        }
        for field in ran {
            if let Some(declared) = self.by_field.get(*field) {
                tags.extend(declared.tags.iter().cloned());
                root_fields.extend(declared.fields.iter().cloned());
            }
        }
        tags.sort();
        tags.dedup();
        root_fields.sort();
        root_fields.dedup();
        let mut purges = Vec::new();
        if !tags.is_empty() {
            purges.push(Purge {
                selector: Selector::Tags(tags),
            });
        }
        if !root_fields.is_empty() {
            purges.push(Purge::fields(root_fields));
        }
        purges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Invalidations {
        let mut by_field = HashMap::new();
        by_field.insert(
            Arc::from("createPost"),
            Declared {
                tags: vec![Tag::Type("Post".into())],
                fields: vec!["Query.feed".into()],
            },
        );
        Invalidations { by_field }
    }

    #[test]
    fn declared_and_returned_entities_are_purged() {
        let report = ExecutionReport {
            entities: vec![("Post".into(), "8".into())],
            mutations: vec!["createPost".into()],
            ..Default::default()
        };
        let purges = table().purges(&["createPost"], Some(&report));
        assert_eq!(purges.len(), 2);
        assert_eq!(
            purges[0].selector,
            Selector::Tags(vec![
                Tag::Type("Post".into()),
                Tag::Entity("Post".into(), "8".into())
            ])
        );
        assert_eq!(
            purges[1].selector,
            Selector::Fields(vec!["Query.feed".into()])
        );
    }

    #[test]
    fn the_layers_own_reading_is_enough() {
        let purges = table().purges(&["createPost"], None);
        assert_eq!(purges.len(), 2);
        assert!(table().declares(["Mutation.createPost"].into_iter()));
        assert!(!table().declares(["Query.feed", "Mutation.other"].into_iter()));
    }

    #[test]
    fn nothing_that_ran_purges_nothing() {
        let report = ExecutionReport {
            entities: vec![("Post".into(), "8".into())],
            ..Default::default()
        };
        assert!(table().purges(&[], Some(&report)).is_empty());
    }
}
