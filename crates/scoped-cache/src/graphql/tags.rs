//! [`EntityTags`]: the async-graphql extension that tells the layer which entities a
//! response holds, so that it can purge the stored response when one of them changes.
//!
//! It works as GraphQL Yoga's response cache does: the document is rewritten before
//! validation so that every object in the response also carries its type and id under
//! reserved aliases, and the response is walked after execution to read them and take them
//! out again. What was seen travels to the layer as an [`ExecutionReport`] in a response
//! header.
//!
//! Everything here is linear in the document and in the response, and walks them with
//! explicit stacks: nothing recurses on how deeply a client nests its selections.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextResolve, ResolveInfo,
};
use async_graphql::indexmap::{IndexMap, IndexSet};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, InlineFragment, OperationDefinition,
    OperationType, Selection, SelectionSet, TypeCondition,
};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use async_graphql::{
    CacheControl, Name, PathSegment, Pos, Positioned, Request, Response, ServerResult, Value,
    Variables,
};

use crate::report::{ExecutionReport, REPORT_HEADER};

/// The most entities one response is tagged with by default (see [`EntityTags::max_tags`]).
pub const DEFAULT_MAX_ENTITY_TAGS: usize = 1000;

/// The prefix of every alias the extension adds. A document that uses it itself is left
/// alone and reported unreliable.
const RESERVED: &str = "__scoped_cache";
/// The alias of the added `__typename`.
const TYPENAME_KEY: &str = "__scoped_cache_typename";
/// The alias of an added id field is this followed by the object type's name, so that id
/// fields of different scalar types never share a response key.
const ID_KEY_PREFIX: &str = "__scoped_cache_id_";
/// The id field of types not named by [`EntityTags::id_field`].
const DEFAULT_ID_FIELD: &str = "id";

/// An async-graphql extension that records the types and ids of the objects a query or
/// mutation returns, and the mutation fields it ran, for the
/// [`ScopedCacheLayer`](crate::ScopedCacheLayer): stored responses are tagged with them and
/// [purged](crate::ScopedCacheLayer::purge) when an entity they hold changes.
///
/// Clients need not select `id` or `__typename`: before validation, the selection set of
/// each field returning an object, interface or union (except the root operation types and
/// introspection) also gets `__typename` and, for each object type it may hold, that type's
/// id field, under aliases starting with `__scoped_cache`. After execution they are read and
/// removed, so the body a client receives is the one it would get without the extension. A
/// document that uses such an alias or field name itself is executed as written and its
/// response is not stored.
///
/// Install it with [`ScopedCacheLayer::entity_tags`](crate::ScopedCacheLayer::entity_tags),
/// which configures it like the layer, or directly:
///
/// ```
/// use async_graphql::{EmptyMutation, EmptySubscription, Schema, SimpleObject, ID};
/// use scoped_cache::graphql::EntityTags;
///
/// #[derive(SimpleObject)]
/// struct Post {
///     id: ID,
///     title: String,
/// }
///
/// struct Query;
///
/// #[async_graphql::Object]
/// impl Query {
///     async fn posts(&self) -> Vec<Post> {
///         vec![Post { id: "1".into(), title: "Hello".into() }]
///     }
/// }
///
/// let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
///     .extension(EntityTags::new())
///     .finish();
/// ```
///
/// # What is recorded
///
/// - every object type present in the response data (`Post`);
/// - `(type, id)` for every object whose id field resolved to a string or a number, at
///   most [`max_tags`](Self::max_tags) distinct entities (default
///   [`DEFAULT_MAX_ENTITY_TAGS`]). Past that bound further entities are not listed: their
///   type is tagged instead, and the layer treats *every* entity of that type as present
///   (a purge of any `Post` removes a response that listed 1,000 posts and held 2,000);
/// - the names (not aliases) of the mutation root fields that ran.
///
/// The id field is `id` unless [`id_field`](Self::id_field) names another. Types without
/// it (or whose id field is a list, an object, or needs arguments) are tagged by type only.
///
/// # Costs and caveats
///
/// - The added selections are validated and counted like the client's:
///   [`limit_complexity`](async_graphql::SchemaBuilder::limit_complexity) counts one more
///   field in each selection set of an object type with an id field (the id; async-graphql
///   does not count `__typename`), so `posts { title author { name } }` counts 6 instead of
///   4; in each selection set of an interface or union, one per member type with an id
///   field. A field with a complexity function multiplies its share like any other child.
///   Depth is unchanged. Leave room for them when setting limits. The rewrite costs time
///   linear in the document (times the member count of its interfaces and unions).
/// - Resolvers that look ahead (`ctx.look_ahead()`, `ctx.field().selection_set()`) see
///   the added fields. Id fields should be cheap and infallible: an error from one adds an
///   error to the response (and may null its parent), and such a response is not stored.
/// - An interface or union member type with its own `cache_control` would make the whole
///   response as restrictive if its id were selected; its id is therefore left out there
///   and, when one of its objects is found without an id, its type is tagged as if it had
///   overflowed.
/// - Add it after the schema's other extensions: their `execute` hooks then see the
///   response as the client will (all extensions see the added fields while validating and
///   resolving).
/// - The report travels in a response header that must not reach clients: the
///   `ScopedCacheLayer` removes it. Don't install the extension on a schema served
///   without the layer.
/// - Subscriptions are left alone.
#[derive(Debug, Clone)]
pub struct EntityTags {
    /// Object type name → its id field, where it is not `id`.
    id_fields: Arc<HashMap<String, String>>,
    max_tags: usize,
}

impl Default for EntityTags {
    fn default() -> Self {
        Self::new()
    }
}

impl EntityTags {
    /// The extension with `id` as every type's id field and at most
    /// [`DEFAULT_MAX_ENTITY_TAGS`] entities per response.
    ///
    /// ```
    /// let tags = scoped_cache::graphql::EntityTags::new();
    /// # let _ = tags;
    /// ```
    pub fn new() -> Self {
        Self {
            id_fields: Arc::default(),
            max_tags: DEFAULT_MAX_ENTITY_TAGS,
        }
    }

    /// The field that identifies objects of the object type `type_name` (`User` → `login`
    /// tags `User:alice`). Default: `id`. It must be a field of `type_name` returning a
    /// scalar or enum and needing no arguments, or the type is tagged by type only.
    ///
    /// ```
    /// use scoped_cache::graphql::EntityTags;
    ///
    /// let tags = EntityTags::new().id_field("User", "login");
    /// # let _ = tags;
    /// ```
    pub fn id_field(mut self, type_name: impl Into<String>, field: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.id_fields).insert(type_name.into(), field.into());
        self
    }

    /// Most distinct entities one response is tagged with. Past it, the types of further
    /// entities are tagged instead, and a purge of any entity of such a type removes the
    /// response. Default: [`DEFAULT_MAX_ENTITY_TAGS`] (1,000). Each listed entity costs a
    /// few dozen bytes in the report and in the layer's purge index.
    ///
    /// ```
    /// use scoped_cache::graphql::EntityTags;
    ///
    /// let tags = EntityTags::new().max_tags(200);
    /// # let _ = tags;
    /// ```
    pub fn max_tags(mut self, tags: usize) -> Self {
        self.max_tags = tags;
        self
    }

    fn id_field_of<'a>(&'a self, type_name: &str) -> &'a str {
        self.id_fields
            .get(type_name)
            .map_or(DEFAULT_ID_FIELD, String::as_str)
    }
}

impl ExtensionFactory for EntityTags {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(TagsExtension {
            config: self.clone(),
            state: Mutex::default(),
        })
    }
}

/// The extension instance of one request.
struct TagsExtension {
    config: EntityTags,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The operation the request names, to know which one runs.
    operation_name: Option<String>,
    plan: Plan,
    /// Mutation root fields that ran, each once.
    mutations: Vec<String>,
}

#[derive(Default)]
enum Plan {
    /// The document never reached this extension's `parse_query` (another extension
    /// produced it): nothing is known, so the report is unreliable.
    #[default]
    Unseen,
    /// A subscription: nothing added, nothing reported.
    Subscription,
    /// The document uses the reserved prefix itself: nothing added, report unreliable.
    Reserved,
    Rewritten(Rewrite),
}

/// What the rewrite added, to find it again in the response.
#[derive(Default)]
struct Rewrite {
    /// Object type → the alias of its added id field.
    id_keys: HashMap<String, Name>,
    /// Response keys of fields that return objects (or lists of them): the only values the
    /// walk descends into, so scalar values shaped like objects (JSON) are not touched
    /// unless the document itself uses one response key for both.
    composite_keys: HashSet<Name>,
    /// Types whose id was left out of some selection set (see the `cache_control` caveat):
    /// their objects found without an id are tagged by type, as if overflowed.
    untagged: HashSet<String>,
}

impl TagsExtension {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for TagsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        self.state().operation_name = request.operation_name.clone();
        Ok(request)
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // async-graphql calls this for pre-parsed requests too, with the parsed document.
        let mut doc = next.run(ctx, query, variables).await?;
        let operation_name = self.state().operation_name.take();
        let plan = plan(
            &self.config,
            &ctx.schema_env.registry,
            &mut doc,
            operation_name.as_deref(),
        );
        self.state().plan = plan;
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let plan = mem::take(&mut self.state().plan);
        if matches!(plan, Plan::Subscription) {
            return next.run(ctx, operation_name).await;
        }
        let mut response = next.run(ctx, operation_name).await;
        let mut report = match plan {
            Plan::Rewritten(rewrite) => {
                let mut tagger = Tagger::new(&rewrite, self.config.max_tags);
                tagger.walk(&mut response.data);
                let mut report = tagger.finish();
                // An added id field failed: the response may differ from what the client
                // asked for (a nulled parent), so it must not be stored.
                report.unreliable = response.errors.iter().any(|error| {
                    error.path.iter().any(|segment| match segment {
                        PathSegment::Field(key) => key.starts_with(RESERVED),
                        PathSegment::Index(_) => false,
                    })
                });
                report
            }
            Plan::Unseen | Plan::Reserved | Plan::Subscription => ExecutionReport {
                unreliable: true,
                ..ExecutionReport::default()
            },
        };
        report.mutations = mem::take(&mut self.state().mutations);
        let value = report.encode().or_else(|| {
            ExecutionReport {
                unreliable: true,
                ..ExecutionReport::default()
            }
            .encode()
        });
        if let Some(value) = value {
            response.http_headers.append(REPORT_HEADER, value);
        }
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let mutation = (info.path_node.parent.is_none()
            && ctx.schema_env.registry.mutation_type.as_deref() == Some(info.parent_type))
        .then(|| info.name.to_owned());
        let resolved = next.run(ctx, info).await;
        // A mutation field that failed (refused, invalid input) is taken to have changed
        // nothing: otherwise anyone could empty the cache by sending mutations they may
        // not run.
        if let Some(name) = mutation
            && resolved.is_ok()
        {
            let mut state = self.state();
            if !state.mutations.contains(&name) {
                state.mutations.push(name);
            }
        }
        resolved
    }
}

/// Decides what to do with `doc` and rewrites it when it is a query or mutation.
fn plan(
    config: &EntityTags,
    registry: &Registry,
    doc: &mut ExecutableDocument,
    operation_name: Option<&str>,
) -> Plan {
    let Some(operation) = selected_operation(&doc.operations, operation_name) else {
        // async-graphql refuses the request before executing anything.
        return Plan::Unseen;
    };
    let root = match operation.ty {
        OperationType::Subscription => return Plan::Subscription,
        OperationType::Query => Some(registry.query_type.as_str()),
        OperationType::Mutation => registry.mutation_type.as_deref(),
    };
    let Some(root) = root else {
        return Plan::Unseen;
    };
    if uses_reserved_names(doc) {
        return Plan::Reserved;
    }
    let mut rewriter = Rewriter::new(config, registry);
    let ExecutableDocument {
        operations,
        fragments,
    } = doc;
    let Some(operation) = selected_operation_mut(operations, operation_name) else {
        return Plan::Unseen;
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
    Plan::Rewritten(rewriter.out)
}

/// The operation async-graphql will run: the named one, or the only one.
fn selected_operation<'d>(
    operations: &'d DocumentOperations,
    name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    match (operations, name) {
        (DocumentOperations::Single(op), None) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        _ => None,
    }
}

fn selected_operation_mut<'d>(
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

/// Whether any field or alias in the document starts with [`RESERVED`].
fn uses_reserved_names(doc: &ExecutableDocument) -> bool {
    let mut stack: Vec<&SelectionSet> = doc
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node)
        .chain(doc.fragments.values().map(|f| &f.node.selection_set.node))
        .collect();
    while let Some(set) = stack.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let reserved = field.name.node.starts_with(RESERVED)
                        || field
                            .alias
                            .as_ref()
                            .is_some_and(|alias| alias.node.starts_with(RESERVED));
                    if reserved {
                        return true;
                    }
                    stack.push(&field.selection_set.node);
                }
                Selection::InlineFragment(inline) => stack.push(&inline.node.selection_set.node),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    false
}

/// How an object type's id is selected.
#[derive(Clone)]
enum IdSelection {
    /// The type has no usable id field: tagged by type only.
    None,
    /// The id field has its own `cache_control`: selecting it would change the response's.
    Restricted,
    Select {
        alias: Name,
        field: Name,
        type_name: Name,
        /// The type itself has its own `cache_control`, which an inline fragment on it
        /// would add to the response's.
        restricted_type: bool,
    },
}

struct Rewriter<'r> {
    config: &'r EntityTags,
    registry: &'r Registry,
    ids: HashMap<&'r str, IdSelection>,
    typename_alias: Name,
    typename_field: Name,
    out: Rewrite,
}

impl<'r> Rewriter<'r> {
    fn new(config: &'r EntityTags, registry: &'r Registry) -> Self {
        Self {
            config,
            registry,
            ids: HashMap::new(),
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

    fn add_selections(&mut self, items: &mut Vec<Positioned<Selection>>, meta: &'r MetaType) {
        items.push(field_selection(
            self.typename_alias.clone(),
            self.typename_field.clone(),
        ));
        if let MetaType::Object { name, .. } = meta {
            match self.id_selection(name) {
                IdSelection::Select { alias, field, .. } => {
                    items.push(field_selection(alias, field));
                }
                IdSelection::Restricted => self.untagged(name),
                IdSelection::None => {}
            }
            return;
        }
        for name in meta.possible_types().into_iter().flatten() {
            match self.id_selection(name) {
                IdSelection::Select {
                    alias,
                    field,
                    type_name,
                    restricted_type: false,
                } => items.push(inline_fragment(type_name, field_selection(alias, field))),
                IdSelection::Select { .. } | IdSelection::Restricted => self.untagged(name),
                IdSelection::None => {}
            }
        }
    }

    fn untagged(&mut self, type_name: &str) {
        if !self.out.untagged.contains(type_name) {
            self.out.untagged.insert(type_name.to_owned());
        }
    }

    /// How objects of `type_name` are identified; decided once per type and request.
    fn id_selection(&mut self, type_name: &'r str) -> IdSelection {
        if let Some(known) = self.ids.get(type_name) {
            return known.clone();
        }
        let selection = self.decide_id(type_name);
        if let IdSelection::Select { alias, .. } = &selection {
            self.out.id_keys.insert(type_name.to_owned(), alias.clone());
        }
        self.ids.insert(type_name, selection.clone());
        selection
    }

    fn decide_id(&self, type_name: &str) -> IdSelection {
        let Some(MetaType::Object {
            fields,
            cache_control,
            ..
        }) = self.registry.types.get(type_name)
        else {
            return IdSelection::None;
        };
        let field_name = self.config.id_field_of(type_name);
        let Some(field) = fields.get(field_name) else {
            return IdSelection::None;
        };
        let ty = MetaTypeName::create(&field.ty).unwrap_non_null();
        let leaf = match ty {
            MetaTypeName::Named(named) => self
                .registry
                .types
                .get(named)
                .is_some_and(MetaType::is_leaf),
            MetaTypeName::List(_) | MetaTypeName::NonNull(_) => false,
        };
        let needs_arguments = field
            .args
            .values()
            .any(|arg| arg.ty.ends_with('!') && arg.default_value.is_none());
        if !leaf || needs_arguments {
            return IdSelection::None;
        }
        let neutral = CacheControl::default();
        if field.cache_control != neutral {
            return IdSelection::Restricted;
        }
        IdSelection::Select {
            alias: Name::new(format!("{ID_KEY_PREFIX}{type_name}")),
            field: Name::new(field_name),
            type_name: Name::new(type_name),
            restricted_type: *cache_control != neutral,
        }
    }
}

/// `alias: name`, with no arguments, directives or selections.
fn field_selection(alias: Name, name: Name) -> Positioned<Selection> {
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
fn inline_fragment(type_name: Name, selection: Positioned<Selection>) -> Positioned<Selection> {
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

/// Reads and removes what the rewrite added to a response.
struct Tagger<'a> {
    rewrite: &'a Rewrite,
    max_tags: usize,
    types: IndexSet<String>,
    /// Listed ids per type, to list each entity once.
    ids: HashMap<String, HashSet<String>>,
    entities: Vec<(String, String)>,
    overflowed: IndexSet<String>,
}

impl<'a> Tagger<'a> {
    fn new(rewrite: &'a Rewrite, max_tags: usize) -> Self {
        Self {
            rewrite,
            max_tags,
            types: IndexSet::new(),
            ids: HashMap::new(),
            entities: Vec::new(),
            overflowed: IndexSet::new(),
        }
    }

    /// Walks `data` depth first in document order, descending only into the values of
    /// fields that return objects.
    fn walk(&mut self, data: &mut Value) {
        let mut stack = vec![data];
        while let Some(value) = stack.pop() {
            if let Value::Object(object) = &mut *value {
                self.take(object);
                // async-graphql answers an object whose selections all fell away (a
                // fragment on another type, `@skip`) with null, not `{}`.
                if object.is_empty() {
                    *value = Value::Null;
                    continue;
                }
            }
            match value {
                Value::Object(object) => {
                    let composite = &self.rewrite.composite_keys;
                    stack.extend(
                        object
                            .iter_mut()
                            .rev()
                            .filter(|(key, value)| is_container(value) && composite.contains(*key))
                            .map(|(_, value)| value),
                    );
                }
                Value::List(items) => {
                    stack.extend(items.iter_mut().rev().filter(|v| is_container(v)))
                }
                _ => {}
            }
        }
    }

    /// Removes the added keys from one object and records what they say.
    fn take(&mut self, object: &mut IndexMap<Name, Value>) {
        let Some(Value::String(type_name)) = object.shift_remove(TYPENAME_KEY) else {
            return;
        };
        let id = self
            .rewrite
            .id_keys
            .get(type_name.as_str())
            .and_then(|key| object.shift_remove(key));
        if object.is_empty() {
            return;
        }
        if !self.types.contains(type_name.as_str()) {
            self.types.insert(type_name.clone());
        }
        match id {
            Some(Value::String(id)) => self.entity(type_name, id),
            Some(Value::Number(id)) => self.entity(type_name, id.to_string()),
            Some(Value::Enum(id)) => self.entity(type_name, id.to_string()),
            Some(_) => {}
            None => {
                if self.rewrite.untagged.contains(type_name.as_str()) {
                    self.overflowed.insert(type_name);
                }
            }
        }
    }

    fn entity(&mut self, type_name: String, id: String) {
        if self.overflowed.contains(type_name.as_str()) {
            return;
        }
        if self
            .ids
            .get(type_name.as_str())
            .is_some_and(|ids| ids.contains(&id))
        {
            return;
        }
        if self.entities.len() >= self.max_tags {
            self.overflowed.insert(type_name);
            return;
        }
        self.ids
            .entry(type_name.clone())
            .or_default()
            .insert(id.clone());
        self.entities.push((type_name, id));
    }

    fn finish(self) -> ExecutionReport {
        ExecutionReport {
            types: self.types.into_iter().collect(),
            entities: self.entities,
            overflowed: self.overflowed.into_iter().collect(),
            ..ExecutionReport::default()
        }
    }
}

fn is_container(value: &Value) -> bool {
    matches!(value, Value::Object(_) | Value::List(_))
}

#[cfg(test)]
mod tests {
    use async_graphql::extensions::Analyzer;
    use async_graphql::futures_util::{Stream, StreamExt, stream};
    use async_graphql::{ID, Interface, Json, Object, Schema, SimpleObject, Subscription, Union};
    use serde_json::json;

    use super::*;

    #[derive(SimpleObject, Clone)]
    struct User {
        id: ID,
        name: String,
    }

    #[derive(SimpleObject, Clone)]
    struct Post {
        id: ID,
        title: String,
        author: User,
        tags: Vec<Tag>,
    }

    /// No `id`: identified by `slug` when configured.
    #[derive(SimpleObject, Clone)]
    struct Tag {
        slug: String,
        label: String,
    }

    /// An `Int` id, next to `ID` ids in the union.
    #[derive(SimpleObject, Clone)]
    struct Counter {
        id: i32,
        value: i32,
    }

    #[derive(SimpleObject, Clone)]
    struct Note {
        text: String,
    }

    /// A type with its own cache policy.
    #[derive(SimpleObject, Clone)]
    #[graphql(cache_control(max_age = 5, private))]
    struct Secret {
        id: ID,
        code: String,
    }

    #[derive(Interface)]
    #[graphql(field(name = "id", ty = "&ID"))]
    enum Node {
        Post(Post),
        User(User),
    }

    #[derive(Union)]
    enum SearchResult {
        Post(Post),
        User(User),
        Counter(Counter),
        Note(Note),
        Secret(Secret),
    }

    fn user(n: usize) -> User {
        User {
            id: format!("u{n}").into(),
            name: format!("user {n}"),
        }
    }

    fn post(n: usize) -> Post {
        Post {
            id: n.to_string().into(),
            title: format!("post {n}"),
            author: user(n % 2),
            tags: vec![
                Tag {
                    slug: "rust".into(),
                    label: "Rust".into(),
                },
                Tag {
                    slug: "gql".into(),
                    label: "GraphQL".into(),
                },
            ],
        }
    }

    fn secret() -> Secret {
        Secret {
            id: "s1".into(),
            code: "1234".into(),
        }
    }

    struct Query;

    #[Object]
    impl Query {
        async fn posts(&self, #[graphql(default = 3)] first: usize) -> Vec<Post> {
            (1..=first).map(post).collect()
        }

        async fn post(&self, id: ID) -> Option<Post> {
            id.parse().ok().filter(|n| *n < 404).map(post)
        }

        async fn node(&self, id: ID) -> Option<Node> {
            match id.strip_prefix('u') {
                Some(n) => n.parse().ok().map(|n| Node::User(user(n))),
                None => id.parse().ok().map(|n| Node::Post(post(n))),
            }
        }

        async fn search(&self) -> Vec<SearchResult> {
            vec![
                SearchResult::Post(post(1)),
                SearchResult::User(user(1)),
                SearchResult::Counter(Counter { id: 7, value: 70 }),
                SearchResult::Note(Note { text: "hi".into() }),
                SearchResult::Secret(secret()),
            ]
        }

        async fn tag(&self) -> Tag {
            post(1).tags.swap_remove(0)
        }

        async fn secret(&self) -> Secret {
            secret()
        }

        async fn broken(&self) -> async_graphql::Result<Post> {
            Err("boom".into())
        }

        async fn maybe_broken(&self) -> async_graphql::Result<Option<Post>> {
            Err("boom".into())
        }

        async fn matrix(&self) -> Vec<Vec<Option<User>>> {
            vec![vec![Some(user(1)), None], vec![], vec![Some(user(2))]]
        }

        async fn json(&self) -> Json<serde_json::Value> {
            Json(json!({ "__scoped_cache_typename": "Post", "__scoped_cache_id_Post": "9" }))
        }
    }

    struct Mutation;

    #[Object]
    impl Mutation {
        async fn create_post(&self, title: String) -> Post {
            Post {
                id: format!("new-{title}").into(),
                title,
                ..post(1)
            }
        }

        async fn delete_post(&self, id: ID) -> bool {
            !id.is_empty()
        }
    }

    struct Subscription;

    #[Subscription]
    impl Subscription {
        async fn post_added(&self) -> impl Stream<Item = Post> {
            stream::iter([post(1)])
        }
    }

    type TestSchema = Schema<Query, Mutation, Subscription>;

    fn plain() -> TestSchema {
        Schema::new(Query, Mutation, Subscription)
    }

    fn tagged(tags: EntityTags) -> TestSchema {
        Schema::build(Query, Mutation, Subscription)
            .extension(tags)
            .finish()
    }

    async fn run(schema: &TestSchema, request: impl Into<Request>) -> (Response, ExecutionReport) {
        let mut response = schema.execute(request).await;
        let report = ExecutionReport::take(&mut response.http_headers)
            .expect("an executed request carries a report");
        assert!(response.http_headers.is_empty());
        (response, report)
    }

    fn data(response: &Response) -> serde_json::Value {
        serde_json::to_value(&response.data).unwrap()
    }

    fn entities(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(ty, id)| ((*ty).to_owned(), (*id).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn records_types_and_ids_the_client_did_not_select() {
        let (response, report) = run(
            &tagged(EntityTags::new()),
            "{ posts { title author { name } } }",
        )
        .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(
            data(&response),
            json!({ "posts": [
                { "title": "post 1", "author": { "name": "user 1" } },
                { "title": "post 2", "author": { "name": "user 0" } },
                { "title": "post 3", "author": { "name": "user 1" } },
            ]})
        );
        assert_eq!(report.types, ["Post", "User"]);
        assert_eq!(
            report.entities,
            entities(&[
                ("Post", "1"),
                ("User", "u1"),
                ("Post", "2"),
                ("User", "u0"),
                ("Post", "3"),
            ])
        );
        assert!(report.overflowed.is_empty());
        assert!(report.mutations.is_empty());
        assert!(!report.unreliable);
    }

    #[tokio::test]
    async fn records_through_fragments_aliases_and_interfaces() {
        let (response, report) = run(
            &tagged(EntityTags::new()),
            r#"
            query {
                first: post(id: "2") { ...PostFields }
                who: node(id: "u7") { ... on User { handle: name } }
                n: node(id: "3") { ...NodeFields }
            }
            fragment PostFields on Post { heading: title writer: author { ...UserFields } }
            fragment UserFields on User { name }
            fragment NodeFields on Node { ... on Post { title } }
            "#,
        )
        .await;
        assert_eq!(
            data(&response),
            json!({
                "first": { "heading": "post 2", "writer": { "name": "user 0" } },
                "who": { "handle": "user 7" },
                "n": { "title": "post 3" },
            })
        );
        assert_eq!(
            report.entities,
            entities(&[("Post", "2"), ("User", "u0"), ("User", "u7"), ("Post", "3")])
        );
        assert_eq!(report.types, ["Post", "User"]);
    }

    /// `Post.id` is an `ID`, `Counter.id` an `Int`: each gets its own alias, so the
    /// document stays valid even under the specification's stricter merging rule.
    #[tokio::test]
    async fn union_members_with_ids_of_different_types() {
        let (response, report) = run(
            &tagged(EntityTags::new()),
            "{ search { ... on Post { title } ... on User { name } ... on Counter { value } ... on Note { text } } }",
        )
        .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(
            data(&response),
            json!({ "search": [
                { "title": "post 1" },
                { "name": "user 1" },
                { "value": 70 },
                { "text": "hi" },
                null,
            ]})
        );
        assert_eq!(
            report.entities,
            entities(&[("Post", "1"), ("User", "u1"), ("Counter", "7")])
        );
        assert_eq!(report.types, ["Post", "User", "Counter", "Note"]);
    }

    #[tokio::test]
    async fn id_fields_are_configurable_per_type() {
        let query = r#"{ tag { label } post(id: "1") { author { id } } }"#;

        let (_, report) = run(&tagged(EntityTags::new()), query).await;
        assert_eq!(report.types, ["Tag", "Post", "User"]);
        assert_eq!(report.entities, entities(&[("Post", "1"), ("User", "u1")]));

        let tags = EntityTags::new()
            .id_field("Tag", "slug")
            .id_field("User", "name");
        let (response, report) = run(&tagged(tags), query).await;
        assert_eq!(
            data(&response),
            json!({ "tag": { "label": "Rust" }, "post": { "author": { "id": "u1" } } })
        );
        assert_eq!(
            report.entities,
            entities(&[("Tag", "rust"), ("Post", "1"), ("User", "user 1")])
        );
    }

    #[tokio::test]
    async fn past_the_bound_the_type_is_tagged_instead() {
        let (response, report) = run(
            &tagged(EntityTags::new()),
            "{ posts(first: 2000) { title } }",
        )
        .await;
        let posts = data(&response)["posts"].as_array().unwrap().clone();
        assert_eq!(posts.len(), 2000);
        assert_eq!(posts[1999], json!({ "title": "post 2000" }));
        assert_eq!(report.entities.len(), DEFAULT_MAX_ENTITY_TAGS);
        let listed: HashSet<_> = report.entities.iter().collect();
        assert_eq!(listed.len(), DEFAULT_MAX_ENTITY_TAGS);
        assert!(report.entities.iter().all(|(ty, _)| ty == "Post"));
        assert_eq!(report.overflowed, ["Post"]);
        assert_eq!(report.types, ["Post"]);

        // The bound is on all entities together; every type met past it overflows.
        let (_, report) = run(
            &tagged(EntityTags::new().max_tags(2)),
            "{ posts(first: 2) { author { name } } }",
        )
        .await;
        assert_eq!(report.entities, entities(&[("Post", "1"), ("User", "u1")]));
        assert_eq!(report.overflowed, ["Post", "User"]);
    }

    #[tokio::test]
    async fn mutation_root_fields_that_ran_are_recorded_once() {
        let schema = tagged(EntityTags::new());
        let (response, report) = run(
            &schema,
            r#"mutation {
                __typename
                a: createPost(title: "x") { title }
                deletePost(id: "1")
                b: createPost(title: "y") { title }
            }"#,
        )
        .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(
            data(&response),
            json!({
                "__typename": "Mutation",
                "a": { "title": "x" },
                "deletePost": true,
                "b": { "title": "y" },
            })
        );
        assert_eq!(report.mutations, ["createPost", "deletePost"]);
        assert_eq!(
            report.entities,
            entities(&[("Post", "new-x"), ("Post", "new-y")])
        );

        let (_, report) = run(&schema, "{ posts(first: 1) { title } }").await;
        assert!(report.mutations.is_empty());
    }

    /// The body, errors and cache policy a client gets are those it would get without the
    /// extension.
    #[tokio::test]
    async fn clients_get_the_same_response_as_without_the_extension() {
        let queries = [
            "{ posts { title author { name } tags { label } } }",
            r#"query {
                first: post(id: "2") { ...PostFields }
                who: node(id: "u7") { ... on User { handle: name } }
                n: node(id: "3") { ...NodeFields }
            }
            fragment PostFields on Post { heading: title writer: author { ...UserFields } }
            fragment UserFields on User { name }
            fragment NodeFields on Node { ... on Post { title } }"#,
            "{ search { ... on Post { title } } }",
            "{ search { __typename ... on Counter { id } } }",
            r#"{ node(id: "u1") { id ... on Post { title } } }"#,
            r#"{ nothing: post(id: "404") { title } }"#,
            "{ maybeBroken { title } posts(first: 1) { title } }",
            "{ broken { title } }",
            r#"{ post(id: "1") { title @skip(if: true) } }"#,
            r#"{ post(id: "1") { author { ... on User @include(if: false) { name } } } }"#,
            "{ matrix { name } }",
            "{ json posts(first: 1) { title } }",
            "query Q($n: Int = 2) { posts(first: $n) { title author { ...U } } } fragment U on User { name }",
            "{ __typename posts(first: 1) { __typename id } }",
            r#"{ __type(name: "Post") { name fields { name } } }"#,
            "{ secret { code } }",
            "{ search { ... on Secret { code } } }",
            "{ posts(first: 1) { author { name } author { id } } }",
            "{ tag { label @skip(if: true) } }",
            "{ posts(first: 1) { title } ",
            "{ posts(first: 1) { nope } }",
            "{ posts(first: 1) { author } }",
        ];
        let plain = plain();
        let tagged = tagged(EntityTags::new());
        for query in queries {
            let expected = plain.execute(query).await;
            let mut actual = tagged.execute(query).await;
            let _ = ExecutionReport::take(&mut actual.http_headers);
            assert_eq!(
                serde_json::to_string(&actual.data).unwrap(),
                serde_json::to_string(&expected.data).unwrap(),
                "{query}"
            );
            assert_eq!(
                serde_json::to_string(&actual.errors).unwrap(),
                serde_json::to_string(&expected.errors).unwrap(),
                "{query}"
            );
            assert_eq!(actual.cache_control, expected.cache_control, "{query}");
        }
    }

    #[tokio::test]
    async fn a_json_scalar_shaped_like_added_keys_is_left_alone() {
        // Walked past: `json` is not a field that returns objects; `posts` is.
        let (response, report) = run(
            &tagged(EntityTags::new()),
            "{ json posts(first: 1) { title } }",
        )
        .await;
        assert_eq!(
            data(&response),
            json!({
                "json": { "__scoped_cache_typename": "Post", "__scoped_cache_id_Post": "9" },
                "posts": [{ "title": "post 1" }],
            })
        );
        assert_eq!(report.entities, entities(&[("Post", "1")]));
    }

    #[tokio::test]
    async fn a_document_using_the_reserved_names_is_not_touched_and_unreliable() {
        let query = "{ posts(first: 1) { __scoped_cache_id: title author { name } } }";
        let (response, report) = run(&tagged(EntityTags::new()), query).await;
        assert_eq!(
            data(&response),
            json!({ "posts": [{ "__scoped_cache_id": "post 1", "author": { "name": "user 1" } }] })
        );
        assert_eq!(
            serde_json::to_string(&response.data).unwrap(),
            serde_json::to_string(&plain().execute(query).await.data).unwrap()
        );
        assert!(report.unreliable);
        assert!(report.types.is_empty() && report.entities.is_empty());
    }

    /// A union member with its own `cache_control` does not get its id selected where the
    /// client did not select into it (that would make the response private); its objects
    /// found without an id tag their whole type.
    #[tokio::test]
    async fn member_types_with_their_own_cache_policy_keep_the_response_policy() {
        let query = "{ search { __typename } }";
        let (response, report) = run(&tagged(EntityTags::new()), query).await;
        assert_eq!(
            response.cache_control,
            plain().execute(query).await.cache_control
        );
        assert!(response.cache_control.public);
        assert_eq!(report.overflowed, ["Secret"]);
        assert_eq!(
            report.entities,
            entities(&[("Post", "1"), ("User", "u1"), ("Counter", "7")])
        );

        // Where the client selects the type itself, its id is selected as usual.
        let (_, report) = run(&tagged(EntityTags::new()), "{ secret { code } }").await;
        assert_eq!(report.entities, entities(&[("Secret", "s1")]));
        assert!(report.overflowed.is_empty());
    }

    #[tokio::test]
    async fn reports_even_when_execution_fails() {
        let (response, report) = run(&tagged(EntityTags::new()), "{ broken { title } }").await;
        assert_eq!(response.data, Value::Null);
        assert_eq!(report, ExecutionReport::default());

        // Refused before execution: nothing ran, nothing to report.
        let response = tagged(EntityTags::new()).execute("{ nope }").await;
        assert!(!response.http_headers.contains_key(&REPORT_HEADER));
    }

    #[tokio::test]
    async fn pre_parsed_documents_are_rewritten_too() {
        let query = "{ posts(first: 1) { title } }";
        let mut request = Request::new(query);
        request.set_parsed_query(async_graphql::parser::parse_query(query).unwrap());
        let (response, report) = run(&tagged(EntityTags::new()), request).await;
        assert_eq!(data(&response), json!({ "posts": [{ "title": "post 1" }] }));
        assert_eq!(report.entities, entities(&[("Post", "1")]));
    }

    #[tokio::test]
    async fn the_named_operation_is_the_one_rewritten() {
        let (response, report) = run(
            &tagged(EntityTags::new()),
            Request::new(
                "subscription S { postAdded { title } } query Q { posts(first: 1) { title } }",
            )
            .operation_name("Q"),
        )
        .await;
        assert_eq!(data(&response), json!({ "posts": [{ "title": "post 1" }] }));
        assert_eq!(report.entities, entities(&[("Post", "1")]));
    }

    #[tokio::test]
    async fn subscriptions_are_left_alone() {
        let schema = tagged(EntityTags::new());
        let responses: Vec<Response> = schema
            .execute_stream("subscription { postAdded { title author { name } } }")
            .collect()
            .await;
        assert_eq!(responses.len(), 1);
        assert_eq!(
            data(&responses[0]),
            json!({ "postAdded": { "title": "post 1", "author": { "name": "user 1" } } })
        );
        assert!(responses[0].http_headers.is_empty());
    }

    /// What the added selections cost in `limit_complexity` terms: one field (the id) per
    /// selection set of an object type; one per member with an id for a union. async-graphql's
    /// validation skips `__typename` altogether, so it costs nothing.
    #[tokio::test]
    async fn added_complexity() {
        async fn measure(schema: TestSchema, query: &str) -> (i64, i64) {
            let response = schema.execute(query).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            let analyzer = &serde_json::to_value(&response.extensions).unwrap()["analyzer"];
            (
                analyzer["complexity"].as_i64().unwrap(),
                analyzer["depth"].as_i64().unwrap(),
            )
        }
        let with = || {
            Schema::build(Query, Mutation, Subscription)
                .extension(Analyzer)
                .extension(EntityTags::new())
                .finish()
        };
        let without = || {
            Schema::build(Query, Mutation, Subscription)
                .extension(Analyzer)
                .finish()
        };
        let query = "{ posts { title author { name } } }";
        assert_eq!(measure(without(), query).await, (4, 3));
        assert_eq!(measure(with(), query).await, (6, 3));
        // Post, User and Counter have ids; Note has none; Secret's is left out.
        let query = "{ search { ... on Note { text } } }";
        assert_eq!(measure(without(), query).await, (2, 2));
        assert_eq!(measure(with(), query).await, (5, 2));
    }
}
