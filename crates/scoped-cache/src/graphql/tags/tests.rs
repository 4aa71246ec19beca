use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::extensions::Analyzer;
use async_graphql::futures_util::{Stream, StreamExt, stream};
use async_graphql::{
    BatchRequest, Context, ID, Interface, Json, Object, Schema, SimpleObject, Subscription, Union,
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
    M00, M01, M02, M03, M04, M05, M06, M07, M08, M09, M10, M11, M12, M13, M14, M15, M16, M17, M18,
    M19, M20, M21, M22, M23, M24, M25, M26, M27, M28, M29, M30, M31, M32, M33, M34, M35, M36, M37,
    M38, M39, M40, M41, M42, M43, M44, M45, M46, M47, M48, M49,
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
        Request::new(r#"mutation { x: createPost(title: "x") { title } }"#).data(Arc::clone(&runs)),
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
                Selection::InlineFragment(inline) => stack.push(&inline.node.selection_set.node),
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
