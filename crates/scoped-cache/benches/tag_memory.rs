//! What entity tags and revocations cost in memory, measured with a counting allocator:
//! the same responses are cached with and without the `EntityTags` extension, and the
//! difference per entry is what the tags cost (in the entry and in the purge index); then
//! a million `jti`s are revoked.
//!
//! `cargo bench -p scoped-cache --bench tag_memory`

use std::alloc::System;
use std::time::Duration;

use async_graphql::{EmptyMutation, EmptySubscription, ID, Object, Schema, SimpleObject};
use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use scoped_cache::graphql::GraphQL;
use scoped_cache::{Revoke, RoutePolicy, Rule, ScopedCacheLayer, Verifier};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::ServiceExt;

/// The system allocator, counting the bytes currently allocated.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocated() -> isize {
    let stats = GLOBAL.stats();
    // `realloc` is already counted in both totals.
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

#[derive(SimpleObject)]
struct Post {
    id: ID,
    title: String,
}

struct Query;

#[Object]
impl Query {
    /// `n` posts starting at `from`.
    async fn posts(&self, from: i32, n: i32) -> Vec<Post> {
        (from..from + n)
            .map(|id| Post {
                id: ID(format!("{id}")),
                title: "t".into(),
            })
            .collect()
    }
}

fn app(tagged: bool) -> (Router, ScopedCacheLayer) {
    let layer = ScopedCacheLayer::builder()
        .verifier(Verifier::hmac(Algorithm::HS256, [7u8; 32]).any_audience())
        .default_rule(Rule::new().max_age(Duration::from_secs(3600)))
        .max_entity_tags(10_000)
        .max_bytes(8 << 30)
        .route("/graphql", RoutePolicy::cached())
        .build()
        .expect("layer");
    let builder = Schema::build(Query, EmptyMutation, EmptySubscription);
    let schema = if tagged {
        builder.extension(layer.entity_tags()).finish()
    } else {
        builder.finish()
    };
    let router = Router::new()
        .route_service("/graphql", GraphQL::new(schema))
        .layer(layer.clone());
    (router, layer)
}

/// Stores `entries` responses of `tags` posts each (distinct from those of any other
/// `round`); returns the bytes still allocated afterwards.
async fn fill(app: &Router, round: i32, entries: i32, tags: i32) -> isize {
    let before = allocated();
    for entry in 0..entries {
        let query = format!(
            r#"{{"query":"{{ posts(from: {}, n: {tags}) {{ title }} }}"}}"#,
            (round * 100_000 + entry) * tags
        );
        let request = Request::post("/graphql")
            .header("content-type", "application/json")
            .body(Body::from(query))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        assert_eq!(response.headers()["x-cache"], "MISS");
        let _ = response.into_body().collect().await.expect("body");
    }
    allocated() - before
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Allocated bytes include the layer's remembered request texts, the same in both
    // columns; "weighed" is what the cache charges against `max_bytes`.
    println!(
        "| entity tags | allocated per entry, untagged | tagged | tags cost | per tag | weighed per entry, untagged | tagged |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for tags in [1, 10, 100, 1_000] {
        let (untagged_app, untagged_layer) = app(false);
        let (tagged_app, tagged_layer) = app(true);
        // Warm up (lazily built tables, thread-locals, the first growth of every map)
        // before measuring, so one-time costs are not charged to entries.
        let entries = (200_000 / tags).clamp(200, 5_000);
        fill(&untagged_app, 0, 500, tags).await;
        fill(&tagged_app, 0, 500, tags).await;
        let untagged = fill(&untagged_app, 1, entries, tags).await / entries as isize;
        let tagged = fill(&tagged_app, 1, entries, tags).await / entries as isize;
        let cost = tagged - untagged;
        let weighed = |layer: &ScopedCacheLayer| {
            let stats = layer.stats();
            stats.bytes / stats.entries.max(1)
        };
        println!(
            "| {tags} | {untagged} | {tagged} | {cost} | {} | {} | {} |",
            cost / tags as isize,
            weighed(&untagged_layer),
            weighed(&tagged_layer),
        );
    }

    // A million revoked `jti`s (UUID-shaped, 36 characters), each until its token expires.
    let (_, layer) = app(false);
    let before = allocated();
    let exp = 4_000_000_000;
    for n in 0..1_000_000u64 {
        let jti = format!("{n:08x}-0000-4000-8000-{n:012x}");
        layer
            .revoke(&Revoke::token_unix(jti, exp))
            .await
            .expect("revoke");
    }
    let held = allocated() - before;
    println!(
        "\n1,000,000 revoked jtis hold {:.1} MB ({} bytes each)",
        held as f64 / 1e6,
        held / 1_000_000
    );
}
