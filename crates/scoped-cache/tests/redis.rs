//! The Redis tier against a real `redis-server` each test starts on a free loopback port:
//! two layers (two "instances") share one Redis.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_graphql::{Context, EmptySubscription, ID, Object, Schema, SimpleObject};
use axum::Router;
use http::StatusCode;
use scoped_cache::graphql::GraphQL;
use scoped_cache::{
    Purge, RedisTier, Revoke, RoutePolicy, Rule, Scope, ScopedCacheLayer, Verifier,
};
use tokio::time::Instant;

use common::redis_server::RedisServer;
use common::{AUDIENCE, ISSUER, Reply, SECRET, member, query, send};

#[derive(Clone, SimpleObject)]
struct Post {
    id: ID,
    title: String,
}

/// The "database" both instances read.
#[derive(Default)]
struct World {
    renders: AtomicU64,
}

struct Query;

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

    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

struct Mutation;

#[Object]
impl Mutation {
    async fn touch(&self) -> bool {
        true
    }
}

struct Instance {
    app: Router,
    layer: ScopedCacheLayer,
}

fn tier(url: &str) -> RedisTier {
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

fn instance(world: &Arc<World>, tier: RedisTier) -> Instance {
    let layer = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .default_rule(Rule::new().max_age(Duration::from_secs(60)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub"])))
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
        .layer(layer.clone());
    Instance { app, layer }
}

const FEED: &str = "query Feed { posts { id title } renderId }";
const ME: &str = "{ me renderId }";

fn tier_of(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-cache-tier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

fn render(reply: &Reply) -> u64 {
    reply.body["data"]["renderId"].as_u64().unwrap()
}

/// The names of every entry in Redis (a test may use `KEYS`; the tier never does).
async fn entry_keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("test:e:*")
        .query_async(conn)
        .await
        .unwrap()
}

async fn ask(instance: &Instance, doc: &str, token: Option<&str>) -> Reply {
    send(&instance.app, query("/graphql", token, doc)).await
}

/// Asks until `done` holds or `within` passes (the fleet's messages are asynchronous);
/// returns the last reply.
async fn until(
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

/// Two instances over one Redis, each subscribed.
async fn fleet(server: &RedisServer) -> (Arc<World>, Instance, Instance) {
    let world = Arc::new(World::default());
    let a = instance(&world, tier(&server.url()));
    let b = instance(&world, tier(&server.url()));
    // Both subscribed to the events channel (and so past their first memory flush).
    let mut conn = server.connection().await;
    for _ in 0..500 {
        let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("test:events")
            .query_async(&mut conn)
            .await
            .unwrap();
        if subscribers >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_one_instance_is_a_redis_hit_on_the_other() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;

    let first = ask(&a, FEED, None).await;
    assert_eq!(first.x_cache(), "MISS");
    let shared = until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    assert_eq!((shared.x_cache(), tier_of(&shared)), ("HIT", "redis"));
    assert_eq!(render(&shared), render(&first), "one execution served both");
    assert_eq!(shared.body, first.body);
    let again = ask(&b, FEED, None).await;
    assert_eq!(tier_of(&again), "memory", "the L2 hit filled L1");

    // Buckets stay apart across instances.
    let alice = ask(&a, ME, Some(&member("alice"))).await;
    assert_eq!(alice.body["data"]["me"], "alice");
    let bob = until(
        &b,
        ME,
        Some(&member("bob")),
        Duration::from_millis(300),
        |_| false,
    )
    .await;
    assert_eq!(bob.body["data"]["me"], "bob", "never alice's answer");
    let alice_on_b = until(
        &b,
        ME,
        Some(&member("alice")),
        Duration::from_secs(2),
        |r| tier_of(r) == "redis",
    )
    .await;
    assert_eq!(alice_on_b.body["data"]["me"], "alice");
    assert_eq!(render(&alice_on_b), render(&alice));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_purge_on_one_instance_reaches_the_other() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let alice = member("alice");
    let purges = [
        (FEED, None, Purge::entity("Post", "1")),
        (FEED, None, Purge::tags(["Post"])),
        (FEED, None, Purge::types(["Post"])),
        (FEED, None, Purge::operation("Feed")),
        (
            ME,
            Some(alice.as_str()),
            Purge::scope([("sub", "alice")]).unwrap(),
        ),
        (FEED, None, Purge::all()),
        (ME, Some(alice.as_str()), Purge::all()),
    ];
    for (round, (doc, token, purge)) in purges.into_iter().enumerate() {
        // A new key each round (same tags, operation and scope): the last round's answers
        // are not in the way.
        let doc = &doc.replace("renderId", &format!("renderId round{round}: renderId"));
        let stored = ask(&a, doc, token).await;
        let held = until(&b, doc, token, Duration::from_secs(2), |r| {
            r.x_cache() == "HIT"
        })
        .await;
        assert_eq!(
            render(&held),
            render(&stored),
            "{purge:?}: B holds A's answer"
        );
        // B's copy is in its memory now, for 60 s unless a message drops it.
        assert_eq!(tier_of(&ask(&b, doc, token).await), "memory");

        a.layer.purge(&purge).await.unwrap();
        let after = until(&b, doc, token, Duration::from_secs(2), |r| {
            r.x_cache() == "MISS"
        })
        .await;
        assert_eq!(
            after.x_cache(),
            "MISS",
            "{purge:?} reached B's memory and Redis"
        );
        assert_ne!(render(&after), render(&stored));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_purge_spares_other_buckets_and_a_mutation_purges_fleet_wide() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let (alice, bob) = (member("alice"), member("bob"));
    let bobs = ask(&a, ME, Some(&bob)).await;
    ask(&a, ME, Some(&alice)).await;
    a.layer
        .purge(&Purge::scope([("sub", "alice")]).unwrap())
        .await
        .unwrap();
    let bob_on_b = until(&b, ME, Some(&bob), Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    assert_eq!(
        render(&bob_on_b),
        render(&bobs),
        "bob's bucket survives alice's purge"
    );

    // A mutation's entities purge every instance (EntityTags + invalidate).
    let feed = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    a.layer.purge(&Purge::entity("Post", "1")).await.unwrap();
    let after = until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    assert_ne!(render(&after), render(&feed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_is_refused_by_the_other() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let alice = member("alice");
    assert_eq!(ask(&b, ME, Some(&alice)).await.status, StatusCode::OK);
    a.layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(2), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.code(), "UNAUTHENTICATED");

    // An instance that starts later loads it from Redis.
    let world = Arc::new(World::default());
    let c = instance(&world, tier(&server.url()));
    let late = until(&c, ME, Some(&alice), Duration::from_secs(2), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(
        late.status,
        StatusCode::UNAUTHORIZED,
        "mirrored on subscribe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_and_coming_back_is_nobody_elses_trouble() {
    let mut server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let cached = ask(&a, FEED, None).await;

    server.kill();
    for round in 0..5 {
        // What A holds in memory keeps serving; new questions execute.
        let held = ask(&a, FEED, None).await;
        assert_eq!((held.status, held.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(render(&held), render(&cached));
        let fresh = ask(&b, &format!("{{ renderId slow(ms: {round}) }}"), None).await;
        assert_eq!(fresh.status, StatusCode::OK, "{:?}", fresh.body);
        assert!(fresh.body["errors"].is_null());
        // A purge still works here (and waits for Redis to reach the rest).
        assert!(b.layer.purge(&Purge::tags(["Nothing"])).await.is_ok());
    }

    server.restart().await;
    // Back without a restart of ours: a new answer on A becomes a redis hit on B.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut resumed = false;
    let mut n = 100;
    while Instant::now() < deadline && !resumed {
        n += 1;
        let doc = format!("{{ renderId slow(ms: {n}) }}");
        ask(&a, &doc, None).await;
        let reply = until(&b, &doc, None, Duration::from_millis(200), |r| {
            tier_of(r) == "redis"
        })
        .await;
        resumed = tier_of(&reply) == "redis";
    }
    assert!(resumed, "L2 hits resume when Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_value_is_a_miss() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    ask(&a, FEED, None).await;
    let mut conn = server.connection().await;
    let keys = entry_keys(&mut conn).await;
    assert!(!keys.is_empty());
    for key in &keys {
        let value: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // Truncated, and a value that is not ours at all.
        let broken = if key.len() % 2 == 0 {
            value[..value.len() / 2].to_vec()
        } else {
            b"{\"data\":{\"renderId\":999}}".to_vec()
        };
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(broken)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let reply = ask(&b, FEED, None).await;
    assert_eq!((reply.status, reply.x_cache()), (StatusCode::OK, "MISS"));
    assert_ne!(render(&reply), 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_flushes_memory_when_it_resubscribes() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");

    // A purge B never hears of: the entry leaves Redis with no message, and B's
    // subscription is cut.
    let mut conn = server.connection().await;
    let keys = entry_keys(&mut conn).await;
    for key in keys {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    // B resubscribes and starts over: its 60-second copy is gone.
    let after = until(&b, FEED, None, Duration::from_secs(3), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    assert_eq!(after.x_cache(), "MISS");
    assert_ne!(render(&after), render(&stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_two_instances_execute_once() {
    let server = RedisServer::start().await;
    let (world, a, b) = fleet(&server).await;
    let before = world.renders.load(Ordering::SeqCst);
    let doc = "{ renderId slow(ms: 300) }";
    let (x, y) = tokio::join!(ask(&a, doc, None), ask(&b, doc, None));
    assert_eq!(render(&x), render(&y), "one execution answered both");
    assert_eq!(world.renders.load(Ordering::SeqCst), before + 1);
    let tiers = [tier_of(&x), tier_of(&y)];
    assert!(
        tiers.contains(&"redis"),
        "the waiter read the holder's entry: {tiers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_serves_when_redis_is_unreachable_at_start() {
    let down = RedisServer::start().await;
    let url = down.url();
    drop(down);
    let world = Arc::new(World::default());
    let lonely = instance(&world, tier(&url));
    let first = ask(&lonely, FEED, None).await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    let second = ask(&lonely, FEED, None).await;
    assert_eq!((second.x_cache(), tier_of(&second)), ("HIT", "memory"));
    // Minted before the revocation: one minted in a later second is a new token.
    let alice = member("alice");
    let revoked = lonely
        .layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await;
    assert!(revoked.is_ok(), "held here until Redis answers");
    let refused = ask(&lonely, ME, Some(&alice)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_is_a_deployment_of_its_own() {
    let server = RedisServer::start().await;
    let (world, a, _b) = fleet(&server).await;
    ask(&a, FEED, None).await;
    let other = instance(&world, tier(&server.url()).key_prefix("other:"));
    let reply = ask(&other, FEED, None).await;
    assert_eq!(reply.x_cache(), "MISS", "nothing shared across prefixes");
    let mut conn = server.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("test:") || k.starts_with("other:")),
        "every key carries its prefix: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waited_for_redis_reaches_the_fleet_when_it_is_back() {
    let mut server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let alice = member("alice");
    assert_eq!(ask(&b, ME, Some(&alice)).await.status, StatusCode::OK);

    server.kill();
    // Misses while Redis is down open A's breaker.
    for n in 0..4 {
        ask(&a, &format!("{{ renderId slow(ms: {n}) }}"), None).await;
    }
    a.layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    assert_eq!(
        ask(&a, ME, Some(&alice)).await.status,
        StatusCode::UNAUTHORIZED
    );
    server.restart().await;
    // B never heard of it; A shares it once Redis answers, with no request of its own
    // to find out, and no restart.
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(10), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_never_brings_purged_answers_back() {
    let mut server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    for _ in 0..5 {
        a.layer.purge(&Purge::types(["Nothing"])).await.unwrap();
    }
    // Redis restarts empty: its purge sequence starts over below what the instances saw.
    server.restart().await;
    let stored = until(&a, FEED, None, Duration::from_secs(5), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if a.layer.purge(&Purge::all()).await.unwrap() > 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    assert_eq!(after.x_cache(), "MISS");
    assert_ne!(
        render(&after),
        render(&stored),
        "the purged answer is never served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_subscription_stays_up() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    // Past the keepalive PING (every 5 s): a failing PING would drop the subscription and
    // flush B's memory.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_holder_stored_nothing_lets_the_others_go_at_once() {
    let server = RedisServer::start().await;
    let (_world, a, _b) = fleet(&server).await;
    let reply = ask(&a, "{ renderId broken }", None).await;
    assert!(reply.body["errors"].is_array());
    // The holder marked its lease: waiting instances execute now instead of taking the
    // lease one after another for its whole duration.
    let mut conn = server.connection().await;
    let mut marked = Vec::new();
    for _ in 0..200 {
        let leases: Vec<String> = redis::cmd("KEYS")
            .arg("test:l:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        marked = Vec::new();
        for lease in &leases {
            let held: Option<String> = redis::cmd("GET")
                .arg(lease)
                .query_async(&mut conn)
                .await
                .unwrap();
            marked.push(held.unwrap_or_default());
        }
        if marked.iter().any(|held| held == "none") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(marked, ["none"]);
}
