//! Keeping answers fresh: entity tags, mutation-driven invalidation, purges,
//! stale-while-revalidate, stale-if-error, ETags and learned scopes, through a real schema
//! behind the layer.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Context, EmptySubscription, Error, ID, Object, Schema, SimpleObject};
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use scoped_cache::graphql::GraphQL;
use scoped_cache::{Purge, RoutePolicy, Rule, Scope, ScopedCacheLayer, Verifier};
use serde_json::{Value, json};

use common::{AUDIENCE, ISSUER, Reply, SECRET, member, post, query, send, token};

#[derive(Clone, SimpleObject)]
struct Post {
    id: ID,
    title: String,
}

/// Identified by `login`, not `id`.
#[derive(Clone, SimpleObject)]
struct Author {
    login: String,
    name: String,
}

/// What the resolvers run against, and what they did.
#[derive(Default)]
struct World {
    posts: Mutex<Vec<Post>>,
    tickers: AtomicU64,
    greetings: AtomicU64,
    fail: AtomicBool,
    panic: AtomicBool,
    /// How long `ticker` takes, in milliseconds.
    delay_ms: AtomicU64,
}

impl World {
    fn seeded() -> Arc<Self> {
        let world = Self::default();
        *world.posts.lock().unwrap() = (1..=3)
            .map(|n| Post {
                id: ID(n.to_string()),
                title: format!("post {n}"),
            })
            .collect();
        Arc::new(world)
    }
}

fn world<'c>(ctx: &Context<'c>) -> &'c Arc<World> {
    ctx.data_unchecked::<Arc<World>>()
}

struct Query;

#[Object]
impl Query {
    /// Newest first.
    async fn public_posts(&self, ctx: &Context<'_>) -> Vec<Post> {
        let mut posts = world(ctx).posts.lock().unwrap().clone();
        posts.reverse();
        posts
    }

    async fn post(&self, ctx: &Context<'_>, id: ID) -> Option<Post> {
        world(ctx)
            .posts
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.id == id)
            .cloned()
    }

    async fn authors(&self) -> Vec<Author> {
        vec![Author {
            login: "ann".into(),
            name: "Ann".into(),
        }]
    }

    /// A fresh value per execution; fails or panics on demand.
    async fn ticker(&self, ctx: &Context<'_>) -> Result<String, Error> {
        let world = world(ctx);
        let delay = world.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if world.panic.load(Ordering::SeqCst) {
            panic!("ticker panicked on purpose");
        }
        if world.fail.load(Ordering::SeqCst) {
            return Err(Error::new("ticker failed on purpose"));
        }
        Ok(format!(
            "tick-{}",
            world.tickers.fetch_add(1, Ordering::SeqCst) + 1
        ))
    }

    async fn me(&self, ctx: &Context<'_>) -> Option<String> {
        ctx.data_opt::<scoped_cache::Claims>()?
            .subject()
            .map(str::to_owned)
    }

    /// Reads `role`; for admins also `sub` (a read that depends on data).
    async fn greeting(&self, ctx: &Context<'_>) -> String {
        world(ctx).greetings.fetch_add(1, Ordering::SeqCst);
        let Some(claims) = ctx.data_opt::<scoped_cache::Claims>() else {
            return "hello stranger".into();
        };
        match claims.claim_str("role") {
            Some("admin") => format!("hello admin {}", claims.subject().unwrap_or("?")),
            Some(role) => format!("hello {role}"),
            None => "hello".into(),
        }
    }
}

struct Mutation;

#[Object]
impl Mutation {
    async fn create_post(&self, ctx: &Context<'_>, title: String) -> Post {
        let mut posts = world(ctx).posts.lock().unwrap();
        let post = Post {
            id: ID((posts.len() + 1).to_string()),
            title,
        };
        posts.push(post.clone());
        post
    }

    /// Always refused.
    async fn forbidden_post(&self) -> Result<Post, Error> {
        Err(Error::new("members only"))
    }

    async fn rename_post(&self, ctx: &Context<'_>, id: ID, title: String) -> Option<Post> {
        let mut posts = world(ctx).posts.lock().unwrap();
        let post = posts.iter_mut().find(|p| p.id == id)?;
        post.title = title;
        Some(post.clone())
    }
}

type FreshSchema = Schema<Query, Mutation, EmptySubscription>;

struct Fixture {
    app: Router,
    layer: ScopedCacheLayer,
    world: Arc<World>,
}

fn fixture() -> Fixture {
    fixture_tagged(true)
}

fn fixture_tagged(tagged: bool) -> Fixture {
    let world = World::seeded();
    let layer = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .schema(&Schema::new(Query, Mutation, EmptySubscription))
        .default_rule(Rule::new().max_age(Duration::from_secs(60)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub"])))
        .rule(
            Rule::root_field("Query.ticker")
                .max_age(Duration::from_secs(2))
                .stale_while_revalidate(Duration::from_secs(30))
                .stale_if_error(Duration::from_secs(120)),
        )
        .rule(Rule::root_field("Query.greeting").scope(Scope::auto()))
        // Types match entries the extension tagged; the root field matches untagged ones.
        .invalidate("Mutation.createPost", ["Post", "Query.publicPosts"])
        .invalidate("Mutation.forbiddenPost", ["Post", "Query.publicPosts"])
        .entity_id("Author", "login")
        .route("/graphql", RoutePolicy::cached())
        .route("/health", RoutePolicy::passthrough())
        .build()
        .unwrap();
    let builder = Schema::build(Query, Mutation, EmptySubscription).data(Arc::clone(&world));
    let schema: FreshSchema = if tagged {
        builder.extension(layer.entity_tags()).finish()
    } else {
        builder.finish()
    };
    let app = Router::new()
        .route_service("/graphql", GraphQL::new(schema))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(layer.clone());
    Fixture { app, layer, world }
}

impl Fixture {
    async fn ask(&self, document: &str) -> Reply {
        send(&self.app, query("/graphql", None, document)).await
    }

    async fn ask_as(&self, token: &str, document: &str) -> Reply {
        send(&self.app, query("/graphql", Some(token), document)).await
    }
}

fn titles(reply: &Reply) -> Vec<String> {
    reply.body["data"]["publicPosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_owned())
        .collect()
}

const FEED: &str = "{ publicPosts { title } }";

#[tokio::test]
async fn a_created_post_is_in_the_next_list() {
    let f = fixture();
    assert_eq!(f.ask(FEED).await.x_cache(), "MISS");
    assert_eq!(f.ask(FEED).await.x_cache(), "HIT");
    let created = f
        .ask_as(
            &member("alice"),
            r#"mutation { createPost(title: "fresh") { title } }"#,
        )
        .await;
    assert_eq!(created.body["data"]["createPost"]["title"], "fresh");
    let after = f.ask(FEED).await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(titles(&after)[0], "fresh");
    assert_eq!(f.ask(FEED).await.x_cache(), "HIT");
}

#[tokio::test]
async fn an_answer_holding_no_post_still_depends_on_posts() {
    let f = fixture();
    let missing = r#"{ post(id: "4") { title } }"#;
    assert_eq!(f.ask(missing).await.body["data"]["post"], Value::Null);
    assert_eq!(f.ask(missing).await.x_cache(), "HIT");
    f.ask_as(
        &member("alice"),
        r#"mutation { createPost(title: "fourth") { title } }"#,
    )
    .await;
    let found = f.ask(missing).await;
    assert_eq!(found.x_cache(), "MISS");
    assert_eq!(found.body["data"]["post"]["title"], "fourth");
    // Null answers match any entity of their type, too.
    f.ask(r#"{ post(id: "9") { title } }"#).await;
    assert_eq!(
        f.layer
            .purge(&Purge::entity("Post", "anything"))
            .await
            .unwrap()
            .removed,
        1
    );
}

#[tokio::test]
async fn a_changed_entity_purges_the_entries_holding_it_and_no_others() {
    let f = fixture();
    // Neither document selects `id`: the extension asks for it on its own.
    let one = r#"{ post(id: "1") { title } }"#;
    let two = r#"{ post(id: "2") { title } }"#;
    for document in [one, two, FEED] {
        assert_eq!(f.ask(document).await.x_cache(), "MISS");
        assert_eq!(f.ask(document).await.x_cache(), "HIT");
    }
    // No declared invalidation for renamePost: what it returned is enough.
    f.ask_as(
        &member("alice"),
        r#"mutation { renamePost(id: "1", title: "renamed") { title } }"#,
    )
    .await;
    let renamed = f.ask(one).await;
    assert_eq!(renamed.x_cache(), "MISS");
    assert_eq!(renamed.body["data"]["post"]["title"], "renamed");
    assert_eq!(f.ask(two).await.x_cache(), "HIT");
    assert_eq!(f.ask(FEED).await.x_cache(), "MISS");
}

#[tokio::test]
async fn a_refused_or_invalid_mutation_purges_nothing() {
    for tagged in [true, false] {
        let f = fixture_tagged(tagged);
        f.ask(FEED).await;
        assert_eq!(f.ask(FEED).await.x_cache(), "HIT");
        for refused in [
            "mutation { forbiddenPost { title } }",
            "mutation { createPost(title: 1) { title } }",
            "mutation { createPost { title } }",
        ] {
            let reply = f.ask(refused).await;
            assert!(reply.body["errors"].is_array(), "{refused}");
            assert_eq!(
                f.ask(FEED).await.x_cache(),
                "HIT",
                "{refused}, tagged: {tagged}"
            );
        }
        // Without the extension the layer's own reading of the mutation is enough.
        f.ask(r#"mutation { createPost(title: "new") { title } }"#)
            .await;
        let after = f.ask(FEED).await;
        assert_eq!(after.x_cache(), "MISS", "tagged: {tagged}");
        assert_eq!(titles(&after)[0], "new");
    }
}

#[tokio::test]
async fn a_batched_mutation_invalidates_too() {
    let f = fixture();
    f.ask(FEED).await;
    let batch = json!([{ "query": r#"mutation { createPost(title: "batched") { title } }"# }]);
    let reply = send(&f.app, post("/graphql", Some(&member("alice")), batch)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let after = f.ask(FEED).await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(titles(&after)[0], "batched");
}

#[tokio::test]
async fn a_mutation_anywhere_in_a_batch_invalidates() {
    let f = fixture();
    let one = r#"{ post(id: "1") { title } }"#;
    f.ask(one).await;
    assert_eq!(f.ask(one).await.x_cache(), "HIT");
    let batch = json!([
        { "query": r#"mutation { renamePost(id: "1", title: "renamed") { title } }"# },
        { "query": r#"{ post(id: "2") { title } }"# },
    ]);
    let reply = send(&f.app, post("/graphql", Some(&member("alice")), batch)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let after = f.ask(one).await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(after.body["data"]["post"]["title"], "renamed");
}

#[tokio::test]
async fn purges_count_what_each_selector_removes() {
    let f = fixture();
    let alice = member("alice");
    let bob = member("bob");
    for document in [
        FEED,
        r#"{ post(id: "1") { title } }"#,
        r#"{ post(id: "2") { title } }"#,
        "{ authors { name } }",
        "query Named { ticker }",
    ] {
        assert_eq!(f.ask(document).await.x_cache(), "MISS");
    }
    for who in [&alice, &bob] {
        assert_eq!(f.ask_as(who, "{ me }").await.x_cache(), "MISS");
    }
    // The feed is public: every authenticated caller shares one entry.
    assert_eq!(f.ask_as(&alice, FEED).await.x_cache(), "MISS");
    assert_eq!(f.ask_as(&bob, FEED).await.x_cache(), "HIT");
    let purge = |p: Purge| {
        let layer = f.layer.clone();
        async move { layer.purge(&p).await.unwrap().removed }
    };
    // Post 1 is in the anonymous feed, the authenticated feed, and its own entry.
    assert_eq!(purge(Purge::entity("Post", "1")).await, 3);
    assert_eq!(purge(Purge::tags(["Post:1"])).await, 0);
    // Authors are tagged by their login.
    assert_eq!(purge(Purge::tags(["Author:ann"])).await, 1);
    assert_eq!(purge(Purge::operation("Named")).await, 1);
    assert_eq!(purge(Purge::types(["Post"])).await, 1);
    // Alice's `me` goes, bob's stays.
    assert_eq!(purge(Purge::scope([("sub", "alice")]).unwrap()).await, 1);
    assert_eq!(f.ask_as(&bob, "{ me }").await.x_cache(), "HIT");
    assert_eq!(f.ask_as(&alice, "{ me }").await.x_cache(), "MISS");
    assert_eq!(purge(Purge::all()).await, 2);
    assert_eq!(f.ask_as(&bob, "{ me }").await.x_cache(), "MISS");
}

#[tokio::test]
async fn the_report_header_never_reaches_a_client() {
    let f = fixture();
    for reply in [
        f.ask(FEED).await,
        f.ask(FEED).await,
        f.ask_as(
            &member("a"),
            r#"mutation { createPost(title: "x") { id } }"#,
        )
        .await,
        send(&f.app, Request::get("/health").body(Body::empty()).unwrap()).await,
        send(
            &f.app,
            post(
                "/graphql",
                None,
                json!([{ "query": FEED }, { "query": FEED }]),
            ),
        )
        .await,
    ] {
        // Each report has a header of its own (`x-scoped-cache-report-7`): none may leave.
        assert!(
            !reply
                .headers
                .keys()
                .any(|name| name.as_str().starts_with("x-scoped-cache-report")),
            "{:?}",
            reply.headers
        );
    }
}

const TICKER: &str = "{ ticker }";

fn tick(reply: &Reply) -> &str {
    reply.body["data"]["ticker"].as_str().unwrap_or("-")
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_served_while_one_background_run_revalidates_it() {
    let f = fixture();
    let first = f.ask(TICKER).await;
    assert_eq!((first.x_cache(), tick(&first)), ("MISS", "tick-1"));
    tokio::time::advance(Duration::from_secs(3)).await;
    let stale: Vec<Reply> = futures_util::future::join_all((0..5).map(|_| f.ask(TICKER))).await;
    for reply in &stale {
        assert_eq!((reply.x_cache(), tick(reply)), ("STALE", "tick-1"));
    }
    // Let the background revalidation run.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        f.world.tickers.load(Ordering::SeqCst),
        2,
        "one revalidation"
    );
    let fresh = f.ask(TICKER).await;
    assert_eq!((fresh.x_cache(), tick(&fresh)), ("HIT", "tick-2"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_revalidation_keeps_serving_stale_within_stale_if_error() {
    let f = fixture();
    assert_eq!(tick(&f.ask(TICKER).await), "tick-1");
    f.world.fail.store(true, Ordering::SeqCst);
    // Within stale-while-revalidate: stale, and the background run fails.
    tokio::time::advance(Duration::from_secs(3)).await;
    let stale = f.ask(TICKER).await;
    assert_eq!((stale.x_cache(), tick(&stale)), ("STALE", "tick-1"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let still = f.ask(TICKER).await;
    assert_eq!((still.x_cache(), tick(&still)), ("STALE", "tick-1"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Past stale-while-revalidate, within stale-if-error: the request executes itself,
    // and a failure (an error result, then a panic) is answered with the stale entry.
    tokio::time::advance(Duration::from_secs(40)).await;
    let fallback = f.ask(TICKER).await;
    assert_eq!((fallback.x_cache(), tick(&fallback)), ("STALE", "tick-1"));
    f.world.panic.store(true, Ordering::SeqCst);
    let fallback = f.ask(TICKER).await;
    assert_eq!((fallback.x_cache(), tick(&fallback)), ("STALE", "tick-1"));
    f.world.panic.store(false, Ordering::SeqCst);
    // Past stale-if-error the failure is the answer.
    tokio::time::advance(Duration::from_secs(120)).await;
    let failed = f.ask(TICKER).await;
    assert_eq!(failed.x_cache(), "MISS");
    assert!(failed.body["errors"].is_array());
    f.world.fail.store(false, Ordering::SeqCst);
    let recovered = f.ask(TICKER).await;
    assert_eq!(recovered.x_cache(), "MISS");
    assert_eq!(tick(&recovered), "tick-2");
}

#[tokio::test(start_paused = true)]
async fn an_entry_purged_while_its_fallback_executes_is_not_served() {
    let f = fixture();
    assert_eq!(tick(&f.ask(TICKER).await), "tick-1");
    // Past stale-while-revalidate, within stale-if-error: the request executes itself.
    tokio::time::advance(Duration::from_secs(40)).await;
    f.world.fail.store(true, Ordering::SeqCst);
    f.world.delay_ms.store(1_000, Ordering::SeqCst);
    let app = f.app.clone();
    let pending = tokio::spawn(async move { send(&app, query("/graphql", None, TICKER)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.layer.purge(&Purge::all()).await.unwrap().removed, 1);
    let reply = pending.await.unwrap();
    assert_ne!(reply.x_cache(), "STALE", "{:?}", reply.body);
    assert!(reply.body["errors"].is_array());
}

#[tokio::test(start_paused = true)]
async fn a_purged_entry_is_never_served_stale() {
    let f = fixture();
    f.ask(TICKER).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(f.layer.purge(&Purge::all()).await.unwrap().removed, 1);
    let after = f.ask(TICKER).await;
    assert_eq!((after.x_cache(), tick(&after)), ("MISS", "tick-2"));
}

fn get_me(token: &str, if_none_match: Option<&str>) -> Request<Body> {
    let mut req = Request::get("/graphql?query=%7B%20me%20%7D")
        .header("authorization", format!("Bearer {token}"));
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    req.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_304_confirms_only_the_callers_own_bucket() {
    let f = fixture();
    let alice = member("alice");
    let first = send(&f.app, get_me(&alice, None)).await;
    assert_eq!(first.x_cache(), "MISS");
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "{etag}");

    let hit = send(&f.app, get_me(&alice, None)).await;
    assert_eq!(hit.headers["etag"], etag.as_str());
    let not_modified = send(&f.app, get_me(&alice, Some(&etag))).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.body, Value::String(String::new()));
    assert_eq!(not_modified.headers["etag"], etag.as_str());
    // A refreshed token with the same claims is the same bucket.
    let refreshed = member("alice");
    let again = send(&f.app, get_me(&refreshed, Some(&format!("W/{etag}")))).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    // Bob sending alice's tag gets his own answer, in full.
    let bob = send(&f.app, get_me(&member("bob"), Some(&etag))).await;
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!(bob.body["data"]["me"], "bob");
    assert_ne!(bob.headers["etag"], etag.as_str());
    let bob_hit = send(&f.app, get_me(&member("bob"), Some(&etag))).await;
    assert_eq!((bob_hit.status, bob_hit.x_cache()), (StatusCode::OK, "HIT"));
}

#[tokio::test]
async fn learned_scopes_separate_callers_by_what_was_read_and_widen() {
    let f = fixture();
    let greeting = "{ greeting }";
    let alice = member("alice");
    let bob = member("bob");
    // The first execution teaches the field its scope (it reads `role`) and is not stored.
    assert_eq!(f.ask_as(&alice, greeting).await.x_cache(), "MISS");
    assert_eq!(f.ask_as(&alice, greeting).await.x_cache(), "MISS");
    assert_eq!(f.ask_as(&alice, greeting).await.x_cache(), "HIT");
    // Bob has the same role: the same bucket.
    let shared = f.ask_as(&bob, greeting).await;
    assert_eq!(
        (shared.x_cache(), shared.body["data"]["greeting"].as_str()),
        ("HIT", Some("hello member"))
    );
    // A guest reads a different role: a different bucket.
    let guest = token(json!({"sub": "gina", "role": "guest"}));
    let reply = f.ask_as(&guest, greeting).await;
    assert_eq!(
        (reply.x_cache(), reply.body["data"]["greeting"].as_str()),
        ("MISS", Some("hello guest"))
    );
    // An admin's greeting also reads `sub`: not stored, the scope widens, and the entries
    // stored under `role` alone are purged.
    let admin = token(json!({"sub": "root", "role": "admin"}));
    let reply = f.ask_as(&admin, greeting).await;
    assert_eq!(
        (reply.x_cache(), reply.body["data"]["greeting"].as_str()),
        ("MISS", Some("hello admin root"))
    );
    assert_eq!(f.ask_as(&alice, greeting).await.x_cache(), "MISS");
    assert_eq!(f.ask_as(&alice, greeting).await.x_cache(), "HIT");
    // Bob no longer shares alice's entry.
    assert_eq!(f.ask_as(&bob, greeting).await.x_cache(), "MISS");
    let executions = f.world.greetings.load(Ordering::SeqCst);
    assert_eq!(executions, 6);
}

#[tokio::test]
async fn a_learned_field_is_credited_only_with_what_its_own_resolvers_read() {
    let f = fixture();
    let alice = member("alice");
    let bob = member("bob");
    // Asked beside `me` (which reads `sub`) first: `greeting` itself reads only `role`.
    let both = f.ask_as(&alice, "{ greeting me }").await;
    assert_eq!(both.body["data"]["me"], "alice");
    let greeting = "{ greeting }";
    assert_eq!(f.ask_as(&alice, greeting).await.x_cache(), "MISS");
    // So bob, of the same role, shares alice's entry: `me`'s read did not make
    // `greeting` per-user.
    let shared = f.ask_as(&bob, greeting).await;
    assert_eq!(
        (shared.x_cache(), shared.body["data"]["greeting"].as_str()),
        ("HIT", Some("hello member"))
    );
}

#[tokio::test]
async fn a_learned_operation_rule_that_widens_purges_its_narrower_entries() {
    let world = World::seeded();
    let layer = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .default_rule(Rule::new().max_age(Duration::from_secs(60)))
        .rule(Rule::operation("Greet").scope(Scope::auto()))
        .route("/graphql", RoutePolicy::cached())
        .build()
        .unwrap();
    let schema = Schema::build(Query, Mutation, EmptySubscription)
        .data(Arc::clone(&world))
        .extension(layer.entity_tags())
        .finish();
    let app = Router::new()
        .route_service("/graphql", GraphQL::new(schema))
        .layer(layer.clone());
    let greet = "query Greet { greeting }";
    let alice = member("alice");
    // Learned (`role`), then stored.
    for _ in 0..2 {
        send(&app, query("/graphql", Some(&alice), greet)).await;
    }
    let hit = send(&app, query("/graphql", Some(&alice), greet)).await;
    assert_eq!(hit.x_cache(), "HIT");
    let stored = layer.stats().entries;
    assert!(stored >= 1);

    // An admin's greeting reads `sub` too: the operation's scope widens, and what was
    // stored under `role` alone goes.
    let admin = token(json!({"sub": "root", "role": "admin"}));
    send(&app, query("/graphql", Some(&admin), greet)).await;
    assert_eq!(
        layer.stats().entries,
        stored - 1,
        "the narrower entry is purged"
    );
}

#[tokio::test]
async fn a_304_confirms_only_the_media_type_it_was_given_for() {
    let f = fixture();
    let alice = member("alice");
    let get = |accept: &str, tag: Option<&str>| {
        let mut req = get_me(&alice, tag);
        req.headers_mut()
            .insert("accept", http::HeaderValue::from_str(accept).unwrap());
        req
    };
    let json = send(&f.app, get("application/json", None)).await;
    let json_tag = json.headers["etag"].to_str().unwrap().to_owned();
    let grj = "application/graphql-response+json";
    // The other representation, stored, then asked with the JSON one's tag.
    send(&f.app, get(grj, None)).await;
    let other = send(&f.app, get(grj, Some(&json_tag))).await;
    assert_eq!(other.x_cache(), "HIT");
    assert_eq!(
        other.status,
        StatusCode::OK,
        "a tag of application/json does not confirm {grj}"
    );
    assert!(
        other.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with(grj)
    );
    // Its own tag does.
    let own = other.headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(own, json_tag);
    let confirmed = send(&f.app, get(grj, Some(&own))).await;
    assert_eq!(confirmed.status, StatusCode::NOT_MODIFIED);
}
