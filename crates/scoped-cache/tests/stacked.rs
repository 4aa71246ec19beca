//! Two layers on one route (an app-wide layer around a route's own): what the inner one
//! learns reaches the outer one. Its entries are tagged as the inner's are, so mutations
//! purge both; an inner hit's `Age` counts against the outer's freshness; an inner
//! stale answer is not stored by the outer as fresh.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_graphql::{Context, EmptySubscription, ID, Object, Schema, SimpleObject};
use axum::Router;
use common::{AUDIENCE, ISSUER, SECRET, query, send};
use scoped_cache::graphql::GraphQL;
use scoped_cache::{Purge, RoutePolicy, Rule, ScopedCacheLayer, Verifier};

#[derive(SimpleObject)]
struct Post {
    id: ID,
    title: String,
}

#[derive(Default)]
struct Renders(AtomicU64);

struct Query;

#[Object]
impl Query {
    async fn posts(&self) -> Vec<Post> {
        vec![Post {
            id: ID("1".into()),
            title: "hello".into(),
        }]
    }

    async fn me(&self, ctx: &Context<'_>) -> Option<String> {
        ctx.data_opt::<scoped_cache::Claims>()?
            .subject()
            .map(str::to_owned)
    }

    async fn render_id(&self, ctx: &Context<'_>) -> u64 {
        ctx.data_unchecked::<Arc<Renders>>()
            .0
            .fetch_add(1, Ordering::SeqCst)
    }
}

struct Mutation;

#[Object]
impl Mutation {
    async fn edit_post(&self, id: ID) -> Post {
        Post {
            id,
            title: "edited".into(),
        }
    }
}

const FEED: &str = "{ posts { id title } renderId }";

fn layer(rule: Rule) -> ScopedCacheLayer {
    ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .default_rule(rule)
        .route("/graphql", RoutePolicy::cached())
        .build()
        .unwrap()
}

/// The outer layer around the inner one, over a schema tagged by the inner one.
fn stack(inner: &ScopedCacheLayer, outer: &ScopedCacheLayer) -> Router {
    let schema = Schema::build(Query, Mutation, EmptySubscription)
        .data(Arc::new(Renders::default()))
        .extension(inner.entity_tags())
        .finish();
    Router::new()
        .route_service("/graphql", GraphQL::new(schema))
        .layer(inner.clone())
        .layer(outer.clone())
}

fn minute() -> Rule {
    Rule::new().max_age(Duration::from_secs(60))
}

async fn feed(app: &Router) -> common::Reply {
    send(app, query("/graphql", None, FEED)).await
}

#[tokio::test]
async fn a_mutation_purges_the_outer_layers_entries_too() {
    let (inner, outer) = (layer(minute()), layer(minute()));
    let app = stack(&inner, &outer);
    assert_eq!(feed(&app).await.x_cache(), "MISS");
    assert_eq!(feed(&app).await.x_cache(), "HIT");
    let edit = common::post(
        "/graphql",
        None,
        serde_json::json!({"query": "mutation { editPost(id: \"1\") { id title } }"}),
    );
    assert_eq!(send(&app, edit).await.status, http::StatusCode::OK);
    // Both layers' entries held Post 1: both are gone.
    assert_eq!(feed(&app).await.x_cache(), "MISS");
}

#[tokio::test]
async fn an_outer_entry_made_from_an_inner_hit_is_tagged_too() {
    let (inner, outer) = (layer(minute()), layer(minute()));
    let app = stack(&inner, &outer);
    feed(&app).await;
    // Only the outer forgets: its next answer is the inner layer's hit.
    outer.purge(&Purge::all()).await.unwrap();
    let from_inner = feed(&app).await;
    assert_eq!(from_inner.x_cache(), "MISS");
    assert_eq!(feed(&app).await.x_cache(), "HIT");
    let edit = common::post(
        "/graphql",
        None,
        serde_json::json!({"query": "mutation { editPost(id: \"1\") { id } }"}),
    );
    send(&app, edit).await;
    assert_eq!(feed(&app).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn an_inner_hits_age_counts_against_the_outer_layers_freshness() {
    let (inner, outer) = (layer(minute()), layer(minute()));
    let app = stack(&inner, &outer);
    let first = feed(&app).await;
    tokio::time::advance(Duration::from_secs(40)).await;
    outer.purge(&Purge::all()).await.unwrap();
    // The outer stores the inner's 40-second-old answer: fresh for 20 seconds more.
    let aged = feed(&app).await;
    assert_eq!(aged.headers["age"], "40");
    assert_eq!(
        aged.body["data"]["renderId"],
        first.body["data"]["renderId"]
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(feed(&app).await.x_cache(), "HIT");
    tokio::time::advance(Duration::from_secs(15)).await;
    // 65 seconds after it was made, no layer serves it as fresh.
    let later = feed(&app).await;
    assert_eq!(later.x_cache(), "MISS");
    assert_ne!(
        later.body["data"]["renderId"],
        first.body["data"]["renderId"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_inner_stale_answer_is_not_stored_by_the_outer_layer() {
    let inner = layer(
        Rule::new()
            .max_age(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(60)),
    );
    let outer = layer(minute());
    let app = stack(&inner, &outer);
    feed(&app).await;
    tokio::time::advance(Duration::from_secs(15)).await;
    outer.purge(&Purge::all()).await.unwrap();
    let before = outer.stats().entries;
    // The inner layer serves it stale (and revalidates it): the outer keeps nothing.
    assert_eq!(feed(&app).await.x_cache(), "MISS");
    assert_eq!(outer.stats().entries, before);
}

#[tokio::test]
async fn what_the_inner_layer_does_not_store_the_outer_does_not_either() {
    // The route's own layer only verifies: the app-wide one around it must not cache it.
    let inner = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .route("/graphql", RoutePolicy::verify_only())
        .build()
        .unwrap();
    let outer = layer(minute());
    let app = stack(&inner, &outer);
    for _ in 0..2 {
        let reply = feed(&app).await;
        assert_eq!(reply.x_cache(), "MISS");
        assert!(
            reply
                .headers
                .keys()
                .all(|name| !name.as_str().starts_with("x-scoped-cache")),
            "the layers' own channel never reaches a client"
        );
    }
    assert_eq!(outer.stats().entries, 0);
}

/// A layer whose `Query.me` is scoped by `sub`, reading the token from the header and,
/// with `cookie`, from the `session` cookie too.
fn sub_layer(cookie: bool) -> ScopedCacheLayer {
    let builder = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .default_rule(minute())
        .rule(Rule::root_field("Query.me").scope(scoped_cache::Scope::claims(["sub"])))
        .route("/graphql", RoutePolicy::cached());
    if cookie {
        builder.token_cookie("session")
    } else {
        builder
    }
    .build()
    .unwrap()
}

async fn me(app: &Router, cookie: Option<&str>) -> common::Reply {
    let mut request = query("/graphql", None, "{ me renderId }");
    if let Some(token) = cookie {
        request
            .headers_mut()
            .insert("cookie", format!("session={token}").parse().unwrap());
    }
    send(app, request).await
}

#[tokio::test]
async fn layers_that_read_different_credentials_never_share_an_answer() {
    let alice = common::member("alice");
    // The route's layer reads the cookie; the app-wide one around it, only the header:
    // the outer layer sees an anonymous caller where the inner one sees alice.
    let (inner, outer) = (sub_layer(true), sub_layer(false));
    let app = stack(&inner, &outer);
    assert_eq!(me(&app, Some(&alice)).await.body["data"]["me"], "alice");
    assert_eq!(outer.stats().entries, 0, "the outer layer keyed no caller");
    let anonymous = me(&app, None).await;
    assert_eq!(anonymous.body["data"]["me"], serde_json::Value::Null);

    // The other way round: the outer layer sees alice, the inner one an anonymous caller,
    // and the handler only what the inner one keyed.
    let (inner, outer) = (sub_layer(false), sub_layer(true));
    let app = stack(&inner, &outer);
    assert_eq!(
        me(&app, Some(&alice)).await.body["data"]["me"],
        serde_json::Value::Null
    );
    assert_eq!(outer.stats().entries, 0);
    assert_eq!(
        me(&app, None).await.body["data"]["me"],
        serde_json::Value::Null
    );
}

#[tokio::test(start_paused = true)]
async fn the_outer_layer_keeps_an_answer_no_longer_than_the_inner_one() {
    let inner = layer(Rule::new().max_age(Duration::from_secs(10)));
    let outer = layer(minute());
    let app = stack(&inner, &outer);
    let first = feed(&app).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(feed(&app).await.x_cache(), "HIT");
    // The inner layer's 10 seconds are over: neither serves it fresh.
    tokio::time::advance(Duration::from_secs(6)).await;
    let later = feed(&app).await;
    assert_eq!(later.x_cache(), "MISS");
    assert_ne!(
        later.body["data"]["renderId"],
        first.body["data"]["renderId"]
    );

    // Stored from an inner hit 4 seconds old: 6 seconds left, at the outer layer too.
    tokio::time::advance(Duration::from_secs(4)).await;
    outer.purge(&Purge::all()).await.unwrap();
    let from_inner = feed(&app).await;
    assert_eq!(
        from_inner.body["data"]["renderId"],
        later.body["data"]["renderId"]
    );
    tokio::time::advance(Duration::from_secs(7)).await;
    assert_ne!(
        feed(&app).await.body["data"]["renderId"],
        later.body["data"]["renderId"]
    );
}
