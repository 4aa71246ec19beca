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
//! explicit stacks: nothing recurses on how deeply a client nests its selections. What the
//! rewrite adds is bounded by a budget proportional to the document (see [`id_budget`]).

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextResolve, ResolveInfo,
};
use async_graphql::indexmap::{IndexMap, IndexSet};
use async_graphql::parser::types::{
    ExecutableDocument, Field, InlineFragment, OperationType, Selection, SelectionSet,
    TypeCondition,
};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use async_graphql::{
    CacheControl, Name, PathSegment, Pos, Positioned, Request, Response, ServerError, ServerResult,
    Value, Variables,
};

use crate::graphql::document::{selected_operation, selected_operation_mut};
use crate::report::ExecutionReport;

/// The most entities one response is tagged with by default (see [`EntityTags::max_tags`]).
pub const DEFAULT_MAX_ENTITY_TAGS: usize = 1000;

/// The prefix of every alias the extension adds. A query or mutation that uses it itself
/// is refused.
const RESERVED: &str = "__scoped_cache";
/// What a client using [`RESERVED`] is told.
const RESERVED_MESSAGE: &str = "aliases and field names starting with __scoped_cache are reserved";
/// The alias of the added `__typename`.
const TYPENAME_KEY: &str = "__scoped_cache_typename";
/// The alias of an added id field is this followed by the object type's name, so that id
/// fields of different scalar types never share a response key.
const ID_KEY_PREFIX: &str = "__scoped_cache_id_";
/// The id field of types not named by [`EntityTags::id_field`].
const DEFAULT_ID_FIELD: &str = "id";
/// The smallest [`id_budget`], so that ordinary documents never reach it.
const MIN_ID_BUDGET: usize = 1_000;

/// The most id selections the rewrite adds to a document holding `fields` field
/// selections: `max(1_000, 2 × fields)`.
///
/// Object types' ids are always added: one per selection set of a field, so at most
/// `fields`. The inline fragments selecting the ids of interface and union members (one
/// per member type with an id, in every such selection set) share what is left, at least
/// `max(1_000 - fields, fields)`, in document-walk order and all of a selection set's or
/// none. Without that bound a union of 60 members turned a 1 MB document of 48,000
/// `aN: u { __typename }` fields into 2.9 million selections.
fn id_budget(fields: usize) -> usize {
    fields.saturating_mul(2).max(MIN_ID_BUDGET)
}

/// An async-graphql extension that records the types and ids of the objects a query or
/// mutation returns, and the mutation fields it ran, for the
/// [`ScopedCacheLayer`](crate::ScopedCacheLayer): stored responses are tagged with them and
/// [purged](crate::ScopedCacheLayer::purge) when an entity they hold changes.
///
/// Clients need not select `id` or `__typename`: before validation, the selection set of
/// each field returning an object, interface or union (except the root operation types and
/// introspection) also gets `__typename` and, for an object type, that type's id field or,
/// for an interface or union, an inline fragment selecting the id of each member type
/// (within a budget, see below), under aliases starting with `__scoped_cache`. After
/// execution they are read and removed, so the body a client receives is the one it would
/// get without the extension.
///
/// Those names are reserved: a query or mutation that uses an alias or field name starting
/// with `__scoped_cache` is refused before anything executes, with an error
/// (`aliases and field names starting with __scoped_cache are reserved`) as a validation
/// error would be. Executing it would let the client's own values pass for the
/// extension's, and a mutation would run without purging what it changed.
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
/// - `(type, id)` for every object whose id field was selected and resolved to a string, a
///   number or an enum value, at most [`max_tags`](Self::max_tags) distinct entities
///   (default [`DEFAULT_MAX_ENTITY_TAGS`]). Past that bound further entities are not
///   listed: their type is tagged as *overflowed* instead, and the layer treats *every*
///   entity of that type as present (a purge of any `Post` removes a response that listed
///   1,000 posts and held 2,000);
/// - as overflowed too, the type of every object in the response whose id is unknown: its
///   type has no usable id field, its id was not selected (its id field has its own
///   `cache_control`; in an interface or union, its type has its own `cache_control`, or
///   the document used up the rewrite's budget), or it resolved to `null` or to a value
///   that is not a string, number or enum. Such an object may be any entity of its type: a
///   mutation returning a `Settings` without an id purges every stored response holding a
///   `Settings`, and a purge of any `Settings` entity removes a response holding one. A
///   type whose objects in the response all had their id is not overflowed (unless past
///   `max_tags`);
/// - the names (not aliases) of the mutation root fields that ran.
///
/// The id field is `id` unless [`id_field`](Self::id_field) names another. It is usable when
/// it returns a scalar or an enum (possibly non-null) and needs no arguments.
///
/// # Costs and caveats
///
/// - The rewrite is bounded by the document: one `__typename` per selection set of a field
///   returning an object, interface or union, one id per such selection set of an object
///   type, and interface and union member fragments only while the id selections added stay
///   within `max(1_000, 2 × the document's field selections)`. Past that budget, interface
///   and union selection sets get `__typename` alone and their objects' types are tagged
///   as overflowed. A document of `n` field selections thus gets at most `n + max(1_000,
///   2n)` added fields, and the rewrite and the response walk take time linear in the
///   document and the response.
/// - The added selections are validated and counted like the client's:
///   [`limit_complexity`](async_graphql::SchemaBuilder::limit_complexity) counts one more
///   field in each selection set of an object type with an id field (the id; async-graphql
///   does not count `__typename`), so `posts { title author { name } }` counts 6 instead of
///   4; in each selection set of an interface or union given member fragments, one per
///   member type with an id field. A field with a complexity function multiplies its share
///   like any other child. Depth is unchanged. Leave room for them when setting limits.
/// - Resolvers that look ahead (`ctx.look_ahead()`, `ctx.field().selection_set()`) see
///   the added fields. Id fields should be cheap and infallible: an error from one adds an
///   error to the response (and may null its parent), and such a response is not stored.
/// - An interface or union member type with its own `cache_control` would make the whole
///   response as restrictive if its id were selected; its id is therefore left out there,
///   and its objects found there are tagged by type (overflowed). An id field with its own
///   `cache_control` is never selected, so its type is always tagged by type.
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
    /// scalar or enum and needing no arguments, or objects of the type are tagged by type
    /// only (as overflowed: see [What is recorded](Self#what-is-recorded)).
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
    /// Every object type the document selects (the members of a selected interface or
    /// union included): an answer that holds none of a type's objects (an empty list, a
    /// `null`) still depends on that type, and on any of its entities.
    selected: IndexSet<String>,
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
        )?;
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
            Plan::Unseen | Plan::Subscription => ExecutionReport {
                unreliable: true,
                ..ExecutionReport::default()
            },
        };
        report.mutations = mem::take(&mut self.state().mutations);
        // Under a header name of its own: a batch's responses are merged by header name.
        if !report.attach(&mut response.http_headers) {
            ExecutionReport {
                unreliable: true,
                ..ExecutionReport::default()
            }
            .attach(&mut response.http_headers);
        }
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let root = info.path_node.parent.is_none();
        let registry = &ctx.schema_env.registry;
        let mutation = (root && registry.mutation_type.as_deref() == Some(info.parent_type))
            .then(|| info.name.to_owned());
        // A root query field's resolvers read claims for it alone: a learned scope is
        // credited per field, so one operation cannot widen another field's scope.
        let resolved = if root && registry.query_type == info.parent_type {
            let field: Arc<str> = format!("Query.{}", info.name).into();
            crate::claims::reading_for(field, next.run(ctx, info)).await
        } else {
            next.run(ctx, info).await
        };
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
///
/// # Errors
///
/// A query or mutation whose document uses the reserved prefix: it must not execute.
fn plan(
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
fn count_fields(doc: &ExecutableDocument) -> Result<usize, Pos> {
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
struct IdField {
    alias: Name,
    field: Name,
    /// The type itself has its own `cache_control`, which an inline fragment on it would
    /// add to the response's.
    restricted_type: bool,
}

struct Rewriter<'r> {
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
fn decide_id(config: &EntityTags, registry: &Registry, type_name: &str) -> Option<IdField> {
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
            // No id: the type has none, it was not selected here, or it is not one. The
            // object may be any entity of its type.
            _ => {
                self.overflowed.insert(type_name);
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

    fn finish(mut self) -> ExecutionReport {
        // Selected types the answer holds no object of: it depends on them all the same
        // (an empty list of posts changes when a post is created), so any of their
        // entities matches it.
        for selected in &self.rewrite.selected {
            if !selected.starts_with(RESERVED) && !self.types.contains(selected.as_str()) {
                self.types.insert(selected.clone());
                self.overflowed.insert(selected.clone());
            }
        }
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
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_graphql::extensions::Analyzer;
    use async_graphql::futures_util::{Stream, StreamExt, stream};
    use async_graphql::{
        BatchRequest, Context, ID, Interface, Json, Object, Schema, SimpleObject, Subscription,
        Union,
    };
    use serde_json::json;

    use crate::report::REPORT_HEADER_PREFIX;

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

    /// No id field at all: every `Settings` is "any `Settings`".
    #[derive(SimpleObject, Clone)]
    struct Settings {
        theme: String,
    }

    /// A nullable id, null for drafts not saved yet.
    #[derive(SimpleObject, Clone)]
    struct Draft {
        id: Option<ID>,
        body: String,
    }

    /// A union of 50 members with ids, to exhaust the rewrite's budget.
    macro_rules! big_union {
        ($($member:ident),* $(,)?) => {
            $(
                #[derive(SimpleObject, Clone)]
                struct $member {
                    id: ID,
                }
            )*

            #[derive(Union)]
            enum Big {
                $($member($member),)*
            }

            const BIG_MEMBERS: usize = [$(stringify!($member)),*].len();
        };
    }

    big_union!(
        M00, M01, M02, M03, M04, M05, M06, M07, M08, M09, M10, M11, M12, M13, M14, M15, M16, M17,
        M18, M19, M20, M21, M22, M23, M24, M25, M26, M27, M28, M29, M30, M31, M32, M33, M34, M35,
        M36, M37, M38, M39, M40, M41, M42, M43, M44, M45, M46, M47, M48, M49,
    );

    /// How many times a mutation resolver ran, when the request carries one.
    #[derive(Default)]
    struct Runs(AtomicUsize);

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

        async fn drafts(&self) -> Vec<Draft> {
            vec![
                Draft {
                    id: Some("d1".into()),
                    body: "saved".into(),
                },
                Draft {
                    id: None,
                    body: "unsaved".into(),
                },
            ]
        }

        async fn big(&self) -> Big {
            Big::M07(M07 { id: "7".into() })
        }
    }

    struct Mutation;

    #[Object]
    impl Mutation {
        async fn create_post(&self, ctx: &Context<'_>, title: String) -> Post {
            if let Some(runs) = ctx.data_opt::<Arc<Runs>>() {
                runs.0.fetch_add(1, Ordering::SeqCst);
            }
            Post {
                id: format!("new-{title}").into(),
                title,
                ..post(1)
            }
        }

        async fn delete_post(&self, id: ID) -> bool {
            !id.is_empty()
        }

        async fn update_settings(&self, theme: String) -> Settings {
            Settings { theme }
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
        // `Secret` is a member the answer holds none of: it still depends on secrets.
        assert_eq!(report.types, ["Post", "User", "Counter", "Note", "Secret"]);
        // `Note` has no id field: the note found may be any note; any secret may matter.
        assert_eq!(report.overflowed, ["Note", "Secret"]);
    }

    #[tokio::test]
    async fn id_fields_are_configurable_per_type() {
        let query = r#"{ tag { label } post(id: "1") { author { id } } }"#;

        let (_, report) = run(&tagged(EntityTags::new()), query).await;
        assert_eq!(report.types, ["Tag", "Post", "User"]);
        assert_eq!(report.entities, entities(&[("Post", "1"), ("User", "u1")]));
        // `Tag` has no `id`: tagged by type only.
        assert_eq!(report.overflowed, ["Tag"]);

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
        assert!(report.overflowed.is_empty());
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

    /// A document using the extension's names is refused like an invalid one: executed,
    /// it could pass its own values for the extension's, and a mutation would run without
    /// purging what it changed.
    #[tokio::test]
    async fn reserved_names_are_refused_before_anything_runs() {
        let schema = tagged(EntityTags::new());
        let refused = [
            "{ posts(first: 1) { __scoped_cache_id_Post: title author { name } } }",
            "{ posts(first: 1) { ...F } } fragment F on Post { __scoped_cache_typename: title }",
            "{ __scoped_cache_typename }",
            r#"mutation { __scoped_cache_x: createPost(title: "x") { title } }"#,
            r#"mutation { createPost(title: "x") { ... on Post { __scoped_cache: id } } }"#,
        ];
        for query in refused {
            let runs = Arc::new(Runs::default());
            let response = schema
                .execute(Request::new(query).data(Arc::clone(&runs)))
                .await;
            assert_eq!(response.data, Value::Null, "{query}");
            assert_eq!(response.errors.len(), 1, "{query}");
            assert_eq!(response.errors[0].message, RESERVED_MESSAGE, "{query}");
            assert_eq!(response.errors[0].locations.len(), 1, "{query}");
            assert!(!has_report(&response), "{query}");
            assert_eq!(runs.0.load(Ordering::SeqCst), 0, "{query}");
        }
        // The error points at the reserved name.
        let response = schema
            .execute("{ posts(first: 1) {\n  title __scoped_cache_x: title } }")
            .await;
        assert_eq!(response.errors[0].locations, [Pos { line: 2, column: 9 }]);

        // The same mutation under an ordinary alias runs and reports.
        let runs = Arc::new(Runs::default());
        let (_, report) = run(
            &schema,
            Request::new(r#"mutation { x: createPost(title: "x") { title } }"#)
                .data(Arc::clone(&runs)),
        )
        .await;
        assert_eq!(runs.0.load(Ordering::SeqCst), 1);
        assert_eq!(report.mutations, ["createPost"]);
        assert_eq!(report.entities, entities(&[("Post", "new-x")]));

        // Subscriptions are left alone.
        let responses: Vec<Response> = schema
            .execute_stream("subscription { postAdded { __scoped_cache_x: title } }")
            .collect()
            .await;
        assert!(responses[0].errors.is_empty(), "{:?}", responses[0].errors);
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
        // `Note` has no id field at all.
        assert_eq!(report.overflowed, ["Note", "Secret"]);
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
        // No post came back, but the answer still depends on posts.
        assert_eq!(
            report,
            ExecutionReport {
                types: vec!["Post".into()],
                overflowed: vec!["Post".into()],
                ..ExecutionReport::default()
            }
        );

        // Refused before execution: nothing ran, nothing to report.
        let response = tagged(EntityTags::new()).execute("{ nope }").await;
        assert!(!has_report(&response));
    }

    fn has_report(response: &Response) -> bool {
        response
            .http_headers
            .keys()
            .any(|name| name.as_str().starts_with(REPORT_HEADER_PREFIX))
    }

    /// async-graphql merges a batch's headers by name: each report has a name of its own.
    #[tokio::test]
    async fn each_request_of_a_batch_reports() {
        let batch = tagged(EntityTags::new())
            .execute_batch(BatchRequest::Batch(vec![
                Request::new(r#"{ post(id: "1") { title } }"#),
                Request::new(r#"mutation { createPost(title: "x") { title } }"#),
            ]))
            .await;
        let mut headers = batch.http_headers();
        let mut reports = ExecutionReport::take_all(&mut headers);
        assert!(headers.is_empty());
        reports.sort_by_key(|report| report.mutations.len());
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].entities, entities(&[("Post", "1")]));
        assert!(reports[0].mutations.is_empty());
        assert_eq!(reports[1].entities, entities(&[("Post", "new-x")]));
        assert_eq!(reports[1].mutations, ["createPost"]);
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

    /// An object whose id is unknown may be any entity of its type: its type is reported
    /// as overflowed, so that a mutation returning it purges every entry holding that
    /// type, and a purge of any entity of that type reaches entries holding it.
    #[tokio::test]
    async fn objects_without_an_id_tag_their_whole_type() {
        let schema = tagged(EntityTags::new());
        let (response, report) = run(
            &schema,
            r#"mutation { updateSettings(theme: "dark") { theme } }"#,
        )
        .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(
            data(&response),
            json!({ "updateSettings": { "theme": "dark" } })
        );
        assert_eq!(report.types, ["Settings"]);
        assert!(report.entities.is_empty());
        assert_eq!(report.overflowed, ["Settings"]);
        assert_eq!(report.mutations, ["updateSettings"]);

        // An id that resolved to null identifies nothing either.
        let (response, report) = run(&schema, "{ drafts { body } }").await;
        assert_eq!(
            data(&response),
            json!({ "drafts": [{ "body": "saved" }, { "body": "unsaved" }] })
        );
        assert_eq!(report.entities, entities(&[("Draft", "d1")]));
        assert_eq!(report.overflowed, ["Draft"]);

        // Types whose objects all had their id do not overflow.
        let (_, report) = run(&schema, "{ posts { title author { name } } }").await;
        assert_eq!(report.types, ["Post", "User"]);
        assert_eq!(report.entities.len(), 5);
        assert!(report.overflowed.is_empty());
    }

    /// Counts the `__typename` and id selections `EntityTags` added to the document the
    /// schema validates (installed before it, so it sees the rewritten document).
    struct CountAdded(Arc<Mutex<Option<(usize, usize)>>>);

    impl ExtensionFactory for CountAdded {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(CountAdded(Arc::clone(&self.0)))
        }
    }

    #[async_graphql::async_trait::async_trait]
    impl Extension for CountAdded {
        async fn parse_query(
            &self,
            ctx: &ExtensionContext<'_>,
            query: &str,
            variables: &Variables,
            next: NextParseQuery<'_>,
        ) -> ServerResult<ExecutableDocument> {
            let doc = next.run(ctx, query, variables).await?;
            *self.0.lock().unwrap() = Some(count_added(&doc));
            Ok(doc)
        }
    }

    /// `(added __typename selections, added id selections)` in `doc`.
    fn count_added(doc: &ExecutableDocument) -> (usize, usize) {
        let mut stack: Vec<&SelectionSet> = doc
            .operations
            .iter()
            .map(|(_, op)| &op.node.selection_set.node)
            .chain(doc.fragments.values().map(|f| &f.node.selection_set.node))
            .collect();
        let (mut typenames, mut ids) = (0, 0);
        while let Some(set) = stack.pop() {
            for selection in &set.items {
                match &selection.node {
                    Selection::Field(field) => {
                        match field.node.alias.as_ref().map(|alias| alias.node.as_str()) {
                            Some(TYPENAME_KEY) => typenames += 1,
                            Some(alias) if alias.starts_with(ID_KEY_PREFIX) => ids += 1,
                            _ => {}
                        }
                        stack.push(&field.node.selection_set.node);
                    }
                    Selection::InlineFragment(inline) => {
                        stack.push(&inline.node.selection_set.node)
                    }
                    Selection::FragmentSpread(_) => {}
                }
            }
        }
        (typenames, ids)
    }

    /// Unbounded, every selection set of a union gets one id fragment per member: a
    /// document of many small union fields grows by the member count. The budget keeps the
    /// added ids within `max(1_000, 2 × fields)`, and what it leaves out is tagged by type.
    #[tokio::test]
    async fn a_big_document_gets_a_bounded_rewrite_and_still_correct_tags() {
        let added = Arc::new(Mutex::new(None));
        let schema = Schema::build(Query, Mutation, Subscription)
            .extension(CountAdded(Arc::clone(&added)))
            .extension(EntityTags::new())
            .finish();

        // A small document gets an id fragment for every member.
        let (_, report) = run(&schema, "{ big { __typename } }").await;
        assert_eq!(added.lock().unwrap().take(), Some((1, BIG_MEMBERS)));
        assert_eq!(report.entities, entities(&[("M07", "7")]));
        // The member found is listed; the others, absent, match any of their entities.
        assert!(!report.overflowed.iter().any(|t| t == "M07"));
        assert_eq!(report.overflowed.len(), BIG_MEMBERS - 1);

        let n = 2_000;
        let mut query = String::from("{ ");
        for i in 0..n {
            write!(query, "a{i}: big {{ __typename }} ").unwrap();
        }
        query.push_str("posts(first: 1) { title } }");
        let fields = 2 * n + 2;
        let budget = id_budget(fields);
        assert_eq!(budget, 8_004);
        assert!(n * BIG_MEMBERS > 10 * budget);

        let (response, report) = run(&schema, query.as_str()).await;
        let (typenames, ids) = added.lock().unwrap().take().unwrap();
        // `__typename` is still added to every selection set.
        assert_eq!(typenames, n + 1);
        assert!(ids <= budget, "{ids} ids added, budget {budget}");
        assert!(ids > BIG_MEMBERS, "some union selection sets got their ids");
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(
            serde_json::to_string(&response.data).unwrap(),
            serde_json::to_string(&plain().execute(query.as_str()).await.data).unwrap()
        );
        // `M07` objects were found without their id: any `M07` may be there (and so may
        // any of the absent members). The post, with its id, is listed and does not
        // overflow.
        assert_eq!(report.types[..2], ["M07", "Post"]);
        assert_eq!(report.overflowed[0], "M07");
        assert_eq!(report.overflowed.len(), BIG_MEMBERS);
        assert!(!report.overflowed.iter().any(|t| t == "Post"));
        assert!(
            report
                .entities
                .contains(&("Post".to_owned(), "1".to_owned()))
        );
        assert!(!report.unreliable);
    }
}
