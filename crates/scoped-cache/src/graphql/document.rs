//! Reading a GraphQL document before execution: which operation runs, its kind, its root
//! fields (through fragments), and a canonical text that ignores formatting.

use std::collections::{HashMap, HashSet};
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
    /// The operation selects more distinct root fields than [`MAX_ROOT_FIELDS`].
    TooManyRootFields,
}

/// The most distinct root fields an operation may select and still be cached. Real
/// operations select a handful; past this, the request is passed on uncached, and no
/// per-field work (rule lookup, bucket union) grows with a hostile document.
pub(crate) const MAX_ROOT_FIELDS: usize = 256;

/// Reads `query`. The caller has bounded its nesting, so the parser's recursion is bounded;
/// everything here is linear in the document: each fragment is visited once, root fields are
/// deduplicated through a hash set, and the walk uses an explicit stack.
pub(crate) fn analyze(
    query: &str,
    operation_name: Option<&str>,
) -> Result<Operation, Unanalyzable> {
    let doc = parse_query(query).map_err(|_| Unanalyzable::Syntax)?;
    let (name, op) = select_operation(&doc, operation_name)?;
    let root_fields = collect_root_fields(&doc, &op.selection_set.node)?;
    Ok(Operation {
        ty: op.ty,
        name: name.map(ToString::to_string),
        root_fields,
        canonical: print_document(&doc),
    })
}

/// The kind of operation async-graphql would run for `name`, if it could pick one.
pub(crate) fn select_operation_type(
    doc: &ExecutableDocument,
    name: Option<&str>,
) -> Option<OperationType> {
    select_operation(doc, name).ok().map(|(_, op)| op.ty)
}

/// The operation async-graphql would run (the named one, or the only one) and its name.
fn select_operation<'d>(
    doc: &'d ExecutableDocument,
    name: Option<&str>,
) -> Result<(Option<&'d Name>, &'d OperationDefinition), Unanalyzable> {
    selected_operation(&doc.operations, name).ok_or(Unanalyzable::NoSuchOperation)
}

/// The operation async-graphql will run for `name`: the named one, or, without a name,
/// the only one; with its name, if it has one. The one rule every part of the crate
/// picks an operation by.
pub(crate) fn selected_operation<'d>(
    operations: &'d DocumentOperations,
    name: Option<&str>,
) -> Option<(Option<&'d Name>, &'d OperationDefinition)> {
    match (operations, name) {
        (DocumentOperations::Single(op), None) => Some((None, &op.node)),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get_key_value(name)
            .map(|(name, op)| (Some(name), &op.node)),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.iter().next().map(|(name, op)| (Some(name), &op.node))
        }
        _ => None,
    }
}

/// [`selected_operation`], to rewrite it (the same rule; Rust gives the two borrows two
/// bodies).
pub(crate) fn selected_operation_mut<'d>(
    operations: &'d mut DocumentOperations,
    name: Option<&str>,
) -> Option<&'d mut OperationDefinition> {
    match (operations, name) {
        (DocumentOperations::Single(op), None) => Some(&mut op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get_mut(name).map(|op| &mut op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values_mut().next().map(|op| &mut op.node)
        }
        _ => None,
    }
}

/// A GraphQL name: `[_A-Za-z][_0-9A-Za-z]*`.
pub(crate) fn is_graphql_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// Root field names in document order, through inline fragments and fragment spreads.
/// Each fragment is expanded once, however often it is spread (and cycles end there), so
/// fragments that spread each other twice per level cost linear, not exponential, work.
fn collect_root_fields(
    doc: &ExecutableDocument,
    root: &SelectionSet,
) -> Result<Vec<String>, Unanalyzable> {
    let mut seen_fields: HashSet<&str> = HashSet::new();
    let mut seen_fragments: HashSet<&Name> = HashSet::new();
    let mut out = Vec::new();
    // Selections still to visit, last first, so the walk keeps document order.
    let mut stack: Vec<&Positioned<Selection>> = root.items.iter().rev().collect();
    while let Some(selection) = stack.pop() {
        match &selection.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                if name != "__typename" && seen_fields.insert(name) {
                    if out.len() == MAX_ROOT_FIELDS {
                        return Err(Unanalyzable::TooManyRootFields);
                    }
                    out.push(name.to_owned());
                }
            }
            Selection::InlineFragment(inline) => {
                stack.extend(inline.node.selection_set.node.items.iter().rev());
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                // A fragment cycle is invalid GraphQL; the server will say so. Don't loop.
                if seen_fragments.insert(name)
                    && let Some(fragment) = doc.fragments.get(name)
                {
                    stack.extend(fragment.node.selection_set.node.items.iter().rev());
                }
            }
        }
    }
    Ok(out)
}

/// How many field selections the whole document comes to with every fragment spread
/// expanded where it is spread: what validating and executing it costs. A few hundred bytes
/// of fragments that spread the next one twice expand to millions; this counts them in
/// linear time (each fragment's own size once, then a memoised sum over the spread graph,
/// saturating), without recursion.
pub(crate) fn expanded_selections(doc: &ExecutableDocument) -> u64 {
    /// A selection set's own fields, and the fragments it spreads (once per spread).
    fn own(set: &SelectionSet) -> (u64, Vec<&Name>) {
        let mut fields = 0u64;
        let mut spreads = Vec::new();
        let mut sets = vec![set];
        while let Some(set) = sets.pop() {
            for item in &set.items {
                match &item.node {
                    Selection::Field(field) => {
                        fields = fields.saturating_add(1);
                        sets.push(&field.node.selection_set.node);
                    }
                    Selection::InlineFragment(inline) => sets.push(&inline.node.selection_set.node),
                    Selection::FragmentSpread(spread) => {
                        spreads.push(&spread.node.fragment_name.node)
                    }
                }
            }
        }
        (fields, spreads)
    }

    let fragments: HashMap<&Name, (u64, Vec<&Name>)> = doc
        .fragments
        .iter()
        .map(|(name, fragment)| (name, own(&fragment.node.selection_set.node)))
        .collect();
    // Expanded size per fragment, computed in post-order; a fragment on a cycle counts
    // its own fields only (the server refuses cycles before executing).
    let mut expanded: HashMap<&Name, u64> = HashMap::with_capacity(fragments.len());
    let mut on_path: HashSet<&Name> = HashSet::new();
    let mut size_of = |root: &Name| -> u64 {
        // (fragment, index of the next spread to visit)
        let mut stack: Vec<(&Name, usize)> = Vec::new();
        if let Some((name, _)) = fragments.get_key_value(root)
            && !expanded.contains_key(*name)
        {
            stack.push((name, 0));
            on_path.insert(name);
        }
        while let Some(&(name, next)) = stack.last() {
            let Some((own_fields, spreads)) = fragments.get(name) else {
                stack.pop();
                continue;
            };
            if let Some(spread) = spreads.get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                if let Some((key, _)) = fragments.get_key_value(*spread)
                    && !expanded.contains_key(*key)
                    && on_path.insert(key)
                {
                    stack.push((key, 0));
                }
                continue;
            }
            let total = spreads.iter().fold(*own_fields, |sum, spread| {
                sum.saturating_add(expanded.get(*spread).copied().unwrap_or(0))
            });
            stack.pop();
            on_path.remove(name);
            expanded.insert(name, total);
        }
        expanded.get(root).copied().unwrap_or(0)
    };
    let mut total = 0u64;
    for (_, operation) in doc.operations.iter() {
        let (fields, spreads) = own(&operation.node.selection_set.node);
        total = total.saturating_add(fields);
        for spread in spreads {
            total = total.saturating_add(size_of(spread));
        }
    }
    total
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
    fn exponential_fragments_are_visited_once() {
        // Each fragment spreads the next twice: expanding them would take 2^40 steps.
        let mut doc = String::from("{ ...F0 }");
        for i in 0..40 {
            doc.push_str(&format!(
                " fragment F{i} on Query {{ f{i}: publicPosts {{ id }} ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        doc.push_str(" fragment F40 on Query { me { id } }");
        let op = analyze(&doc, None).unwrap();
        assert_eq!(op.root_fields, ["publicPosts", "me"]);
    }

    #[test]
    fn too_many_root_fields_are_not_analysed() {
        let fields: String = (0..=MAX_ROOT_FIELDS).map(|i| format!(" f{i}")).collect();
        assert_eq!(
            analyze(&format!("{{{fields} }}"), None).unwrap_err(),
            Unanalyzable::TooManyRootFields
        );
        let repeated = " f".repeat(10 * MAX_ROOT_FIELDS);
        assert_eq!(
            analyze(&format!("{{{repeated} }}"), None)
                .unwrap()
                .root_fields,
            ["f"]
        );
    }

    #[test]
    fn long_fragment_chains_do_not_recurse() {
        let mut doc = String::from("{ ...F0 }");
        for i in 0..20_000 {
            doc.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
        }
        doc.push_str(" fragment F20000 on Query { me }");
        assert_eq!(analyze(&doc, None).unwrap().root_fields, ["me"]);
    }

    fn expanded(query: &str) -> u64 {
        expanded_selections(&parse_query(query).unwrap())
    }

    #[test]
    fn expansion_counts_each_spread_where_it_is_spread() {
        assert_eq!(expanded("{ a { b c } d }"), 4);
        assert_eq!(expanded("{ ...F ...F x } fragment F on Q { a { b } }"), 5);
        assert_eq!(expanded("{ ... on Q { a ...F } } fragment F on Q { b }"), 2);
        // Unused fragments cost nothing; operations add up.
        assert_eq!(
            expanded("query A { a } query B { b } fragment F on Q { c }"),
            2
        );
    }

    #[test]
    fn exponential_expansion_is_counted_in_linear_time_and_saturates() {
        let bomb = |levels: usize| {
            let mut doc = String::from("{ ...F0 }");
            for i in 0..levels {
                doc.push_str(&format!(
                    " fragment F{i} on Q {{ ...F{} ...F{} }}",
                    i + 1,
                    i + 1
                ));
            }
            doc.push_str(&format!(" fragment F{levels} on Q {{ a }}"));
            doc
        };
        assert_eq!(expanded(&bomb(10)), 1024);
        assert_eq!(expanded(&bomb(20)), 1 << 20);
        assert_eq!(expanded(&bomb(200)), u64::MAX);
    }

    #[test]
    fn expansion_survives_cycles_and_long_chains() {
        assert_eq!(
            expanded("{ ...A } fragment A on Q { a ...B } fragment B on Q { b ...A }"),
            2
        );
        let mut chain = String::from("{ ...F0 }");
        for i in 0..20_000 {
            chain.push_str(&format!(" fragment F{i} on Q {{ f ...F{} }}", i + 1));
        }
        chain.push_str(" fragment F20000 on Q { f }");
        assert_eq!(expanded(&chain), 20_001);
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
