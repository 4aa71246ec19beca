//! Two or three layers ("instances") over one real `redis-server`: the schema they serve,
//! how each is built, and how a test talks to them.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_graphql::{Context, EmptySubscription, ID, Object, Schema, SimpleObject};
use axum::Router;
use http::StatusCode;
use scoped_cache::graphql::GraphQL;
use scoped_cache::{RedisTier, RoutePolicy, Rule, Scope, ScopedCacheLayer, Verifier};
use tokio::time::Instant;

use super::redis_server::RedisServer;
use super::{AUDIENCE, ISSUER, Reply, SECRET, member, query, send};

#[derive(Clone, SimpleObject)]
pub(crate) struct Post {
    pub(crate) id: ID,
    pub(crate) title: String,
}

/// The "database" both instances read.
#[derive(Default)]
pub(crate) struct World {
    pub(crate) renders: AtomicU64,
    /// While set, `flaky` fails.
    pub(crate) failing: AtomicBool,
}

pub(crate) struct Query;

#[Object]
impl Query {
    /// A new number per execution: equal numbers mean one execution served both.
    async fn render_id(&self, ctx: &Context<'_>) -> u64 {
        ctx.data_unchecked::<Arc<World>>()
            .renders
            .fetch_add(1, Ordering::SeqCst)
            + 1
    }

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

    /// Always an error: its answers are never stored.
    async fn broken(&self) -> async_graphql::Result<u64> {
        Err("broken on purpose".into())
    }

    /// Fails while [`World::failing`] is set.
    async fn flaky(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        if ctx
            .data_unchecked::<Arc<World>>()
            .failing
            .load(Ordering::SeqCst)
        {
            return Err("down on purpose".into());
        }
        Ok(1)
    }

    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

pub(crate) struct Mutation;

#[Object]
impl Mutation {
    async fn touch(&self) -> bool {
        true
    }
}

pub(crate) struct Instance {
    pub(crate) app: Router,
    pub(crate) layer: ScopedCacheLayer,
}

pub(crate) fn tier(url: &str) -> RedisTier {
    // A long L1 life: a test passes only if the fleet's messages, not L1 expiry, make it.
    // A long fetch time-out: on a loaded machine a lookup can take longer than the default
    // 150 ms, and a lookup that gives up is a miss the instance then keeps in its own memory,
    // which is not what these tests are about.
    RedisTier::new(url)
        .key_prefix("test:")
        .local_ttl(Duration::from_secs(60))
        .fetch_timeout(Duration::from_secs(2))
        .cool_down(Duration::from_millis(200))
}

/// The admin credential of every instance.
pub(crate) const ADMIN_TOKEN: &str = "fleet-admin-token-of-the-redis-tests";

pub(crate) fn instance(world: &Arc<World>, tier: RedisTier) -> Instance {
    let layer = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .default_rule(Rule::new().max_age(Duration::from_secs(60)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub"])))
        .rule(
            Rule::root_field("Query.flaky")
                .max_age(Duration::from_secs(1))
                .stale_if_error(Duration::from_secs(60)),
        )
        .route("/graphql", RoutePolicy::cached())
        .redis(tier)
        .build()
        .unwrap();
    let schema = Schema::build(Query, Mutation, EmptySubscription)
        .data(Arc::clone(world))
        .extension(layer.entity_tags())
        .finish();
    let app = Router::new()
        .route_service("/graphql", GraphQL::new(schema))
        .layer(layer.clone())
        .nest(
            "/admin",
            scoped_cache::admin::router(
                &layer,
                scoped_cache::admin::AdminToken::new(ADMIN_TOKEN).unwrap(),
            ),
        );
    Instance { app, layer }
}

pub(crate) const FEED: &str = "query Feed { posts { id title } renderId }";
pub(crate) const ME: &str = "{ me renderId }";

pub(crate) fn tier_of(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-cache-tier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

pub(crate) fn render(reply: &Reply) -> u64 {
    reply.body["data"]["renderId"].as_u64().unwrap()
}

/// The names of every entry in Redis (a test may use `KEYS`; the tier never does).
pub(crate) async fn entry_keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("test:e:*")
        .query_async(conn)
        .await
        .unwrap()
}

pub(crate) async fn ask(instance: &Instance, doc: &str, token: Option<&str>) -> Reply {
    send(&instance.app, query("/graphql", token, doc)).await
}

/// Asks until `done` holds or `within` passes (the fleet's messages are asynchronous);
/// returns the last reply.
pub(crate) async fn until(
    instance: &Instance,
    doc: &str,
    token: Option<&str>,
    within: Duration,
    done: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        let reply = ask(instance, doc, token).await;
        if done(&reply) || Instant::now() >= deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `instance` is in step with Redis: it takes tokens (a cut-off one answers
/// them `503`) and so caches again.
pub(crate) async fn in_step(instance: &Instance) {
    let probe = member("probe");
    let reply = until(instance, ME, Some(&probe), Duration::from_secs(10), |r| {
        r.status != StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(reply.status, StatusCode::OK, "in step: {:?}", reply.body);
}

/// Two instances over one Redis, in step with it.
pub(crate) async fn fleet(server: &RedisServer) -> (Arc<World>, Instance, Instance) {
    fleet_of(server, tier(&server.url()), tier(&server.url())).await
}

/// Two instances with these tiers, in step with Redis, B reading what A wrote.
pub(crate) async fn fleet_of(
    server: &RedisServer,
    a: RedisTier,
    b: RedisTier,
) -> (Arc<World>, Instance, Instance) {
    let _ = server;
    fleet_on(a, b).await
}

/// Two instances with these tiers (on whatever Redis they name), in step, B reading what
/// A wrote.
pub(crate) async fn fleet_on(a: RedisTier, b: RedisTier) -> (Arc<World>, Instance, Instance) {
    let world = Arc::new(World::default());
    let a = instance(&world, a);
    let b = instance(&world, b);
    in_step(&a).await;
    in_step(&b).await;
    let probe = until(&a, "{ posts { id } }", None, Duration::from_secs(5), |_| {
        true
    })
    .await;
    assert_eq!(probe.status, StatusCode::OK);
    let seen = until(&b, "{ posts { id } }", None, Duration::from_secs(5), |r| {
        tier_of(r) == "redis"
    })
    .await;
    assert_eq!(tier_of(&seen), "redis", "B reads what A wrote");
    (world, a, b)
}
