//! The root fields a schema offers, read from its SDL, so `build()` can refuse rules that
//! name fields or operation types the schema does not have. A rule that never matches
//! would leave its field to the default rule: a private field cached publicly.

use std::collections::HashSet;

use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};

use crate::BuildError;

/// The root field names of each operation type; `None` when the schema has no such type.
#[derive(Debug, Default)]
pub(crate) struct RootFields {
    pub(crate) query: Option<HashSet<String>>,
    pub(crate) mutation: Option<HashSet<String>>,
    pub(crate) subscription: Option<HashSet<String>>,
}

impl RootFields {
    /// Reads the root types of `sdl` (as printed by async-graphql's `Schema::sdl`).
    pub(crate) fn from_sdl(sdl: &str) -> Result<Self, BuildError> {
        let doc = parse_schema(sdl).map_err(|err| BuildError::InvalidSchema(err.to_string()))?;
        let mut names = [
            "Query".to_owned(),
            "Mutation".to_owned(),
            "Subscription".to_owned(),
        ];
        for definition in &doc.definitions {
            if let TypeSystemDefinition::Schema(schema) = definition {
                let schema = &schema.node;
                for (slot, name) in
                    names
                        .iter_mut()
                        .zip([&schema.query, &schema.mutation, &schema.subscription])
                {
                    if let Some(name) = name {
                        *slot = name.node.to_string();
                    }
                }
            }
        }
        let mut roots: [Option<HashSet<String>>; 3] = Default::default();
        for definition in &doc.definitions {
            let TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            let TypeKind::Object(object) = &ty.node.kind else {
                continue;
            };
            for (root, name) in roots.iter_mut().zip(&names) {
                if ty.node.name.node.as_str() == name {
                    root.get_or_insert_with(HashSet::new).extend(
                        object
                            .fields
                            .iter()
                            .map(|field| field.node.name.node.to_string()),
                    );
                }
            }
        }
        let [query, mutation, subscription] = roots;
        Ok(Self {
            query,
            mutation,
            subscription,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_fields_are_read_with_custom_root_names() {
        let roots = RootFields::from_sdl(
            "schema { query: QueryRoot } type QueryRoot { me: String posts: [String] } type Other { x: Int }",
        )
        .unwrap();
        let query = roots.query.unwrap();
        assert!(query.contains("me") && query.contains("posts") && !query.contains("x"));
        assert!(roots.mutation.is_none());
    }

    #[test]
    fn default_root_names_are_used_without_a_schema_definition() {
        let roots = RootFields::from_sdl("type Query { a: Int } type Mutation { b: Int }").unwrap();
        assert!(roots.query.unwrap().contains("a"));
        assert!(roots.mutation.unwrap().contains("b"));
        assert!(roots.subscription.is_none());
    }

    #[test]
    fn bad_sdl_is_a_build_error() {
        assert!(matches!(
            RootFields::from_sdl("type {"),
            Err(BuildError::InvalidSchema(_))
        ));
    }
}
