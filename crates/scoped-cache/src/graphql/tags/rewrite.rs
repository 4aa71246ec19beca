//! Rewriting the document before it runs: an id field added (under a reserved alias) to
//! every object whose entities the response is tagged with.

use super::*;

/// Decides what to do with `doc` and rewrites it when it is a query or mutation.
///
/// # Errors
///
/// A query or mutation whose document uses the reserved prefix: it must not execute.
pub(super) fn plan(
    config: &EntityTags,
    registry: &Registry,
    doc: &mut ExecutableDocument,
    operation_name: Option<&str>,
) -> ServerResult<Plan> {
    let Some((_, operation)) = selected_operation(&doc.operations, operation_name) else {
        // async-graphql refuses the request before executing anything.
        return Ok(Plan::Unseen);
    };
    let root = match operation.ty {
        OperationType::Subscription => return Ok(Plan::Subscription),
        OperationType::Query => Some(registry.query_type.as_str()),
        OperationType::Mutation => registry.mutation_type.as_deref(),
    };
    let Some(root) = root else {
        return Ok(Plan::Unseen);
    };
    let fields = count_fields(doc).map_err(|pos| ServerError::new(RESERVED_MESSAGE, Some(pos)))?;
    let mut rewriter = Rewriter::new(config, registry, fields);
    let ExecutableDocument {
        operations,
        fragments,
    } = doc;
    let Some(operation) = selected_operation_mut(operations, operation_name) else {
        return Ok(Plan::Unseen);
    };
    let mut roots = vec![(&mut operation.selection_set.node, root)];
    for fragment in fragments.values_mut() {
        let fragment = &mut fragment.node;
        roots.push((
            &mut fragment.selection_set.node,
            fragment.type_condition.node.on.node.as_str(),
        ));
    }
    rewriter.rewrite(roots);
    Ok(Plan::Rewritten(rewriter.out))
}

/// The number of field selections in the whole document, or the position of the first
/// field or alias found starting with [`RESERVED`].
pub(super) fn count_fields(doc: &ExecutableDocument) -> Result<usize, Pos> {
    let mut stack: Vec<&SelectionSet> = doc
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node)
        .chain(doc.fragments.values().map(|f| &f.node.selection_set.node))
        .collect();
    let mut fields = 0usize;
    while let Some(set) = stack.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if let Some(alias) = &field.alias
                        && alias.node.starts_with(RESERVED)
                    {
                        return Err(alias.pos);
                    }
                    if field.name.node.starts_with(RESERVED) {
                        return Err(field.name.pos);
                    }
                    fields += 1;
                    stack.push(&field.selection_set.node);
                }
                Selection::InlineFragment(inline) => stack.push(&inline.node.selection_set.node),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    Ok(fields)
}

/// How an object type's id is selected, when it can be.
pub(super) struct IdField {
    alias: Name,
    field: Name,
    /// The type itself has its own `cache_control`, which an inline fragment on it would
    /// add to the response's.
    restricted_type: bool,
}

pub(super) struct Rewriter<'r> {
    config: &'r EntityTags,
    registry: &'r Registry,
    /// Object type → how its id is selected (`None`: it is not), decided once per type.
    ids: HashMap<&'r str, Option<IdField>>,
    /// Interface or union → the inline fragments selecting its members' ids, built once
    /// per type.
    member_ids: HashMap<&'r str, Vec<Positioned<Selection>>>,
    /// How many more member id fragments the document may get (see [`id_budget`]).
    member_budget: usize,
    typename_alias: Name,
    typename_field: Name,
    out: Rewrite,
}

impl<'r> Rewriter<'r> {
    /// A rewriter for a document holding `fields` field selections.
    fn new(config: &'r EntityTags, registry: &'r Registry, fields: usize) -> Self {
        Self {
            config,
            registry,
            ids: HashMap::new(),
            member_ids: HashMap::new(),
            // Object ids take at most one per field selection; members share the rest.
            member_budget: id_budget(fields).saturating_sub(fields),
            typename_alias: Name::new(TYPENAME_KEY),
            typename_field: Name::new("__typename"),
            out: Rewrite::default(),
        }
    }

    /// Rewrites each selection set reachable from `roots` (selection sets with their
    /// types) without crossing fragment spreads: every fragment definition is a root, so
    /// each selection set is visited once. Only field selection sets get the added
    /// selections: every object in a response is the value of a field, and the fields of
    /// fragments merge into it.
    fn rewrite<'d>(&mut self, roots: Vec<(&'d mut SelectionSet, &'d str)>) {
        let registry = self.registry;
        let mut stack: Vec<(&'d mut SelectionSet, &'r MetaType, bool)> = roots
            .into_iter()
            .filter_map(|(set, ty)| Some((set, registry.types.get(ty)?, false)))
            .collect();
        while let Some((set, meta, add)) = stack.pop() {
            let items = &mut set.items;
            let original = items.len();
            if self.is_tagged(meta) {
                self.select(meta);
            }
            if add && original > 0 && self.is_tagged(meta) {
                self.add_selections(items, meta);
            }
            for selection in items.iter_mut().take(original) {
                match &mut selection.node {
                    Selection::Field(field) => {
                        let field = &mut field.node;
                        let Some(target) = meta
                            .field_by_name(field.name.node.as_str())
                            .and_then(|f| {
                                registry.types.get(MetaTypeName::concrete_typename(&f.ty))
                            })
                            .filter(|target| target.is_composite())
                        else {
                            continue;
                        };
                        self.out
                            .composite_keys
                            .insert(field.response_key().node.clone());
                        stack.push((&mut field.selection_set.node, target, true));
                    }
                    Selection::InlineFragment(inline) => {
                        let InlineFragment {
                            type_condition,
                            selection_set,
                            ..
                        } = &mut inline.node;
                        let target = match type_condition {
                            Some(condition) => {
                                match registry.types.get(condition.node.on.node.as_str()) {
                                    Some(target) => target,
                                    None => continue,
                                }
                            }
                            None => meta,
                        };
                        stack.push((&mut selection_set.node, target, false));
                    }
                    Selection::FragmentSpread(_) => {}
                }
            }
        }
    }

    /// Records that the document selects `meta`: itself if it is an object type, else each
    /// of its members (once per abstract type, so linear in the schema).
    fn select(&mut self, meta: &'r MetaType) {
        match meta {
            MetaType::Object { name, .. } => {
                if !self.out.selected.contains(name.as_str()) {
                    self.out.selected.insert(name.clone());
                }
            }
            _ => {
                let abstract_name = format!("{RESERVED}:{}", meta.name());
                if self.out.selected.contains(abstract_name.as_str()) {
                    return;
                }
                self.out.selected.insert(abstract_name);
                for member in meta.possible_types().into_iter().flatten() {
                    if !self.out.selected.contains(member.as_str()) {
                        self.out.selected.insert(member.clone());
                    }
                }
            }
        }
    }

    /// Objects of this type get their type and id recorded.
    fn is_tagged(&self, meta: &MetaType) -> bool {
        let name = meta.name();
        let registry = self.registry;
        meta.is_composite()
            && !name.starts_with("__")
            && name != registry.query_type
            && registry.mutation_type.as_deref() != Some(name)
            && registry.subscription_type.as_deref() != Some(name)
    }

    /// Adds `__typename` and the id selections to the selection set of a field returning
    /// `meta`. Constant work besides what is added, which the budget bounds.
    fn add_selections(&mut self, items: &mut Vec<Positioned<Selection>>, meta: &'r MetaType) {
        items.push(field_selection(
            self.typename_alias.clone(),
            self.typename_field.clone(),
        ));
        if let MetaType::Object { name, .. } = meta {
            if let Some(id) = self.id_field(name) {
                items.push(field_selection(id.alias.clone(), id.field.clone()));
            }
            return;
        }
        let name = meta.name();
        if !self.member_ids.contains_key(name) {
            let fragments = self.member_fragments(meta);
            self.member_ids.insert(name, fragments);
        }
        // All of them or none: past the budget, the members' objects are tagged by type.
        if let Some(fragments) = self.member_ids.get(name)
            && fragments.len() <= self.member_budget
        {
            self.member_budget -= fragments.len();
            items.extend(fragments.iter().cloned());
        }
    }

    /// `... on Member { alias: id }` for each member type of `meta` whose id can be
    /// selected without changing the response's cache policy.
    fn member_fragments(&mut self, meta: &'r MetaType) -> Vec<Positioned<Selection>> {
        let mut fragments = Vec::new();
        for name in meta.possible_types().into_iter().flatten() {
            if let Some(IdField {
                alias,
                field,
                restricted_type: false,
            }) = self.id_field(name)
            {
                fragments.push(inline_fragment(
                    Name::new(name),
                    field_selection(alias.clone(), field.clone()),
                ));
            }
        }
        fragments
    }

    /// How objects of `type_name` are identified; decided once per type and request.
    fn id_field(&mut self, type_name: &'r str) -> Option<&IdField> {
        let (config, registry) = (self.config, self.registry);
        let id_keys = &mut self.out.id_keys;
        self.ids
            .entry(type_name)
            .or_insert_with(|| {
                let id = decide_id(config, registry, type_name);
                if let Some(id) = &id {
                    id_keys.insert(type_name.to_owned(), id.alias.clone());
                }
                id
            })
            .as_ref()
    }
}

/// The id field of `type_name`, when it has a usable one whose selection does not change
/// the response's cache policy.
pub(super) fn decide_id(
    config: &EntityTags,
    registry: &Registry,
    type_name: &str,
) -> Option<IdField> {
    let Some(MetaType::Object {
        fields,
        cache_control,
        ..
    }) = registry.types.get(type_name)
    else {
        return None;
    };
    let field_name = config.id_field_of(type_name);
    let field = fields.get(field_name)?;
    let leaf = match MetaTypeName::create(&field.ty).unwrap_non_null() {
        MetaTypeName::Named(named) => registry.types.get(named).is_some_and(MetaType::is_leaf),
        MetaTypeName::List(_) | MetaTypeName::NonNull(_) => false,
    };
    let needs_arguments = field
        .args
        .values()
        .any(|arg| arg.ty.ends_with('!') && arg.default_value.is_none());
    let neutral = CacheControl::default();
    if !leaf || needs_arguments || field.cache_control != neutral {
        return None;
    }
    Some(IdField {
        alias: Name::new(format!("{ID_KEY_PREFIX}{type_name}")),
        field: Name::new(field_name),
        restricted_type: *cache_control != neutral,
    })
}

/// `alias: name`, with no arguments, directives or selections.
pub(super) fn field_selection(alias: Name, name: Name) -> Positioned<Selection> {
    Positioned::new(
        Selection::Field(Positioned::new(
            Field {
                alias: Some(Positioned::new(alias, Pos::default())),
                name: Positioned::new(name, Pos::default()),
                arguments: Vec::new(),
                directives: Vec::new(),
                selection_set: Positioned::new(SelectionSet::default(), Pos::default()),
            },
            Pos::default(),
        )),
        Pos::default(),
    )
}

/// `... on type_name { selection }`.
pub(super) fn inline_fragment(
    type_name: Name,
    selection: Positioned<Selection>,
) -> Positioned<Selection> {
    Positioned::new(
        Selection::InlineFragment(Positioned::new(
            InlineFragment {
                type_condition: Some(Positioned::new(
                    TypeCondition {
                        on: Positioned::new(type_name, Pos::default()),
                    },
                    Pos::default(),
                )),
                directives: Vec::new(),
                selection_set: Positioned::new(
                    SelectionSet {
                        items: vec![selection],
                    },
                    Pos::default(),
                ),
            },
            Pos::default(),
        )),
        Pos::default(),
    )
}
