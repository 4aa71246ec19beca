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

mod rewrite;
mod tagger;

use rewrite::*;
use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tagger::*;

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

#[cfg(test)]
mod tests;
