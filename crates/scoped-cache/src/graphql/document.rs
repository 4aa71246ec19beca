//! Reading a GraphQL document before execution: which operation runs, its kind, its root
//! fields (through fragments), and a canonical text that ignores formatting.

use std::collections::HashSet;
use std::fmt::Write;

use async_graphql::Name;
use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType,
    Selection, SelectionSet,
};
use async_graphql::parser::{Positioned, parse_query};

/// The operation a request would execute, as far as caching needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) ty: OperationType,
    /// The name of the operation that runs, whether or not the request named it.
    pub(crate) name: Option<String>,
    /// Root field names (not aliases), deduplicated, `__typename` left out.
    pub(crate) root_fields: Vec<String>,
    /// The whole document printed canonically: equal for documents that differ only in
    /// whitespace, commas, comments or the order of their definitions.
    pub(crate) canonical: String,
}

/// Why a document is left for the server to answer (and not cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unanalyzable {
    Syntax,
    NoSuchOperation,
}

pub(crate) fn analyze(
    query: &str,
    operation_name: Option<&str>,
) -> Result<Operation, Unanalyzable> {
    let doc = parse_query(query).map_err(|_| Unanalyzable::Syntax)?;
    let (name, op) = select_operation(&doc, operation_name)?;
    let mut root_fields = Vec::new();
    collect_root_fields(
        &doc,
        &op.selection_set.node,
        &mut HashSet::new(),
        &mut root_fields,
    );
    Ok(Operation {
        ty: op.ty,
        name: name.map(ToString::to_string),
        root_fields,
        canonical: print_document(&doc),
    })
}

/// The operation async-graphql would run (the named one, or the only one) and its name.
fn select_operation<'d>(
    doc: &'d ExecutableDocument,
    name: Option<&str>,
) -> Result<(Option<&'d Name>, &'d OperationDefinition), Unanalyzable> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), None) => Ok((None, &op.node)),
        (DocumentOperations::Single(_), Some(_)) => Err(Unanalyzable::NoSuchOperation),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get_key_value(name)
            .map(|(name, op)| (Some(name), &op.node))
            .ok_or(Unanalyzable::NoSuchOperation),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops
            .iter()
            .next()
            .map(|(name, op)| (Some(name), &op.node))
            .ok_or(Unanalyzable::NoSuchOperation),
        (DocumentOperations::Multiple(_), None) => Err(Unanalyzable::NoSuchOperation),
    }
}

fn collect_root_fields(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    seen_fragments: &mut HashSet<Name>,
    out: &mut Vec<String>,
) {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                if name != "__typename" && !out.iter().any(|f| f == name) {
                    out.push(name.to_owned());
                }
            }
            Selection::InlineFragment(inline) => {
                collect_root_fields(doc, &inline.node.selection_set.node, seen_fragments, out);
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                // A fragment cycle is invalid GraphQL; the server will say so. Don't loop.
                if seen_fragments.insert(name.clone())
                    && let Some(fragment) = doc.fragments.get(name)
                {
                    collect_root_fields(
                        doc,
                        &fragment.node.selection_set.node,
                        seen_fragments,
                        out,
                    );
                }
            }
        }
    }
}

fn print_document(doc: &ExecutableDocument) -> String {
    let mut out = String::new();
    let mut operations: Vec<(Option<&Name>, &Positioned<OperationDefinition>)> =
        doc.operations.iter().collect();
    operations.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, op) in operations {
        let op = &op.node;
        let _ = write!(out, "{}", op.ty);
        if let Some(name) = name {
            let _ = write!(out, " {name}");
        }
        if !op.variable_definitions.is_empty() {
            out.push('(');
            for (i, var) in op.variable_definitions.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let var = &var.node;
                let _ = write!(out, "${}:{}", var.name.node, var.var_type.node);
                if let Some(default) = &var.default_value {
                    let _ = write!(out, "={}", default.node);
                }
                print_directives(&mut out, &var.directives);
            }
            out.push(')');
        }
        print_directives(&mut out, &op.directives);
        print_selection_set(&mut out, &op.selection_set.node);
    }
    let mut fragments: Vec<_> = doc.fragments.iter().collect();
    fragments.sort_by(|a, b| a.0.cmp(b.0));
    for (name, fragment) in fragments {
        let fragment = &fragment.node;
        let _ = write!(
            out,
            "fragment {name} on {}",
            fragment.type_condition.node.on.node
        );
        print_directives(&mut out, &fragment.directives);
        print_selection_set(&mut out, &fragment.selection_set.node);
    }
    out
}

fn print_selection_set(out: &mut String, set: &SelectionSet) {
    out.push('{');
    for (i, selection) in set.items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match &selection.node {
            Selection::Field(field) => print_field(out, &field.node),
            Selection::FragmentSpread(spread) => {
                let _ = write!(out, "...{}", spread.node.fragment_name.node);
                print_directives(out, &spread.node.directives);
            }
            Selection::InlineFragment(inline) => {
                out.push_str("...");
                if let Some(condition) = &inline.node.type_condition {
                    let _ = write!(out, " on {}", condition.node.on.node);
                }
                print_directives(out, &inline.node.directives);
                print_selection_set(out, &inline.node.selection_set.node);
            }
        }
    }
    out.push('}');
}

fn print_field(out: &mut String, field: &Field) {
    if let Some(alias) = &field.alias {
        let _ = write!(out, "{}:", alias.node);
    }
    out.push_str(&field.name.node);
    print_arguments(out, &field.arguments);
    print_directives(out, &field.directives);
    if !field.selection_set.node.items.is_empty() {
        print_selection_set(out, &field.selection_set.node);
    }
}

fn print_arguments<V: std::fmt::Display>(
    out: &mut String,
    arguments: &[(Positioned<Name>, Positioned<V>)],
) {
    if arguments.is_empty() {
        return;
    }
    out.push('(');
    for (i, (name, value)) in arguments.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // `Value`'s Display prints GraphQL literal syntax: quoted, escaped strings, bare
        // enums, `$variables`, so distinct values print distinctly.
        let _ = write!(out, "{}:{}", name.node, value.node);
    }
    out.push(')');
}

fn print_directives(out: &mut String, directives: &[Positioned<Directive>]) {
    for directive in directives {
        let _ = write!(out, "@{}", directive.node.name.node);
        print_arguments(out, &directive.node.arguments);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(query: &str) -> String {
        analyze(query, None).unwrap().canonical
    }

    #[test]
    fn formatting_comments_and_commas_do_not_matter() {
        let a = "query Q($id: ID!) { post(id: $id) { id title } }";
        let b = "# a comment\nquery   Q( $id :ID! ){\n  post( id:$id ){ id, title }\n}\n";
        assert_eq!(canonical(a), canonical(b));
    }

    #[test]
    fn different_documents_stay_different() {
        let base = canonical("{ post(id: \"1\") { id } }");
        for other in [
            "{ post(id: 1) { id } }",
            "{ post(id: ONE) { id } }",
            "{ post(id: \"1\") { title } }",
            "{ alias: post(id: \"1\") { id } }",
            "{ post(id: \"1\") @skip(if: true) { id } }",
            "{ post(id: \"1 \") { id } }",
        ] {
            assert_ne!(base, canonical(other), "{other}");
        }
    }

    #[test]
    fn definition_order_does_not_matter() {
        let a = "query A { ...F } query B { me { id } } fragment F on Query { publicPosts { id } }";
        let b = "fragment F on Query { publicPosts { id } } query B { me { id } } query A { ...F }";
        assert_eq!(
            analyze(a, Some("A")).unwrap().canonical,
            analyze(b, Some("A")).unwrap().canonical
        );
    }

    #[test]
    fn root_fields_are_found_through_fragments() {
        let op = analyze(
            "query { __typename ...F ... on Query { me { id } } } \
             fragment F on Query { publicPosts { id } ...G } fragment G on Query { memberPosts { id } }",
            None,
        )
        .unwrap();
        assert_eq!(op.ty, OperationType::Query);
        assert_eq!(op.root_fields, ["publicPosts", "memberPosts", "me"]);
    }

    #[test]
    fn aliases_do_not_hide_root_fields() {
        let op = analyze("{ mine: me { id } }", None).unwrap();
        assert_eq!(op.root_fields, ["me"]);
    }

    #[test]
    fn operation_is_selected_by_name() {
        let doc =
            "query A { me { id } } mutation B { createPost(title: \"t\", body: \"b\") { id } }";
        assert_eq!(analyze(doc, Some("B")).unwrap().ty, OperationType::Mutation);
        assert_eq!(
            analyze(doc, None).unwrap_err(),
            Unanalyzable::NoSuchOperation
        );
        assert_eq!(
            analyze(doc, Some("C")).unwrap_err(),
            Unanalyzable::NoSuchOperation
        );
        assert_eq!(analyze("{ me ", None).unwrap_err(), Unanalyzable::Syntax);
    }

    #[test]
    fn the_only_named_operation_is_selected_without_a_name() {
        let op = analyze("query Debug { renderId }", None).unwrap();
        assert_eq!(op.name.as_deref(), Some("Debug"));
    }

    #[test]
    fn fragment_cycles_do_not_loop() {
        let op = analyze(
            "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A me }",
            None,
        )
        .unwrap();
        assert_eq!(op.root_fields, ["me"]);
    }
}
