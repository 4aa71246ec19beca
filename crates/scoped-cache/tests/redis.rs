//! The Redis tier against a real `redis-server` each test starts on a free loopback port:
//! two layers (two "instances") share one Redis.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use scoped_cache::{Purge, Revoke};
use tokio::time::Instant;

use common::fleet::{
    FEED, ME, World, ask, entry_keys, fleet, in_step, instance, render, tier, tier_of, until,
};
use common::fleet::{fleet_of, fleet_on};
use common::member;
use common::redis_server::{RedisServer, free_port};
use common::tls::Certificates;
use common::topology::{TestRedis, Topo};

async fn a_miss_on_one_instance_is_a_redis_hit_on_the_other(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (_world, a, b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;

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

async fn every_purge_on_one_instance_reaches_the_other(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (_world, a, b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;
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

async fn a_scope_purge_spares_other_buckets_and_a_mutation_purges_fleet_wide(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (_world, a, b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;
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

async fn a_revocation_on_one_instance_is_refused_by_the_other(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (_world, a, b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;
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
    let c = instance(&world, tier(&redis.url()));
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
        // What A holds in memory keeps serving for `max_lag` (5 s); new questions
        // execute.
        let held = ask(&a, FEED, None).await;
        assert_eq!((held.status, held.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(render(&held), render(&cached));
        let fresh = ask(&b, &format!("{{ renderId slow(ms: {round}) }}"), None).await;
        assert_eq!(fresh.status, StatusCode::OK, "{:?}", fresh.body);
        assert!(fresh.body["errors"].is_null());
        // A purge still works here, and says it waits for Redis to reach the rest.
        let purged = b.layer.purge(&Purge::tags(["Nothing"])).await.unwrap();
        assert!(!purged.fleet_wide);
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

async fn a_change_whose_message_is_lost_still_reaches_the_other_instance(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (_world, a, b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");

    // Every subscription is cut while the purge is published: its message is lost.
    for mut conn in redis.every_node().await {
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert!(
        a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide
    );
    // B reads the journal (on its next tick, or when it resubscribes): its 60-second
    // copy goes.
    let after = until(&b, FEED, None, Duration::from_secs(3), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    assert_eq!(after.x_cache(), "MISS");
    assert_ne!(render(&after), render(&stored));
}

async fn concurrent_misses_on_two_instances_execute_once(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (world, a, b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;
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
async fn a_layer_cut_off_from_the_start_executes_and_refuses_tokens() {
    let down = RedisServer::start().await;
    let url = down.url();
    drop(down);
    let world = Arc::new(World::default());
    let lonely = instance(&world, tier(&url));
    // It serves: anonymous requests execute, and nothing is cached (a purge elsewhere
    // could cover it, and this instance could not hear of it).
    for _ in 0..2 {
        let reply = ask(&lonely, FEED, None).await;
        assert_eq!((reply.status, reply.x_cache()), (StatusCode::OK, "MISS"));
    }
    // It cannot know what the fleet revoked: a token gets 503, and a revocation holds
    // here without being fleet-wide.
    let alice = member("alice");
    let unknown = ask(&lonely, ME, Some(&alice)).await;
    assert_eq!(unknown.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unknown.code(), "AUTH_UNAVAILABLE");
    let revoked = lonely
        .layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    assert!(!revoked.fleet_wide, "held here until Redis answers");

    // Told to take tokens when cut off, it still refuses the ones it revoked itself.
    let lenient = instance(&world, tier(&url).accept_tokens_when_cut_off(true));
    lenient
        .layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    assert_eq!(
        ask(&lenient, ME, Some(&alice)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ask(&lenient, ME, Some(&member("bob"))).await.status,
        StatusCode::OK
    );
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
        if a.layer.purge(&Purge::all()).await.unwrap().removed > 0 || Instant::now() > deadline {
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

async fn a_quiet_subscription_stays_up(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (_world, _a, _b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;
    // Client ids, with the node they are on.
    let subscribers = || async {
        let mut ids = Vec::new();
        for (node, mut conn) in redis.every_node().await.into_iter().enumerate() {
            let list: String = redis::cmd("CLIENT")
                .arg(&["LIST", "TYPE", "pubsub"])
                .query_async(&mut conn)
                .await
                .unwrap();
            // (Sentinels subscribe too, under their own name.)
            ids.extend(
                list.lines()
                    .filter(|l| !l.contains("name=sentinel-"))
                    .filter_map(|l| l.split_whitespace().next().map(|id| format!("{node}/{id}"))),
            );
        }
        ids.sort();
        ids
    };
    let before = subscribers().await;
    assert_eq!(before.len(), 2, "both subscribed: {before:?}");
    // Past the keepalive PING (every 5 s): a PING that failed on a healthy connection
    // would drop the subscription, and a new one would have a new client id.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(subscribers().await, before);
}

async fn a_lease_whose_holder_stored_nothing_lets_the_others_go_at_once(topo: Topo) {
    let redis = TestRedis::start(topo).await;
    let (_world, a, _b) = fleet_on(tier(&redis.url()), tier(&redis.url())).await;
    let reply = ask(&a, "{ renderId broken }", None).await;
    assert!(reply.body["errors"].is_array());
    // The holder marked its lease: waiting instances execute now instead of taking the
    // lease one after another for its whole duration.
    let mut conn = redis.home().await;
    let mut marked = Vec::new();
    for _ in 0..200 {
        let leases: Vec<String> = redis::cmd("KEYS")
            .arg(redis.key("l:*"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_an_acl_user() {
    let certificates = Certificates::generate();
    let tls_port = free_port().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &certificates.path("server.crt"),
        "--tls-key-file",
        &certificates.path("server.key"),
        "--tls-ca-cert-file",
        &certificates.path("ca.crt"),
        "--tls-auth-clients",
        "yes",
    ])
    .await;
    // A user that may touch only its deployment's keys and channel.
    let mut conn = server.connection().await;
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "cache",
            "on",
            ">cache-password",
            "~test:*",
            "&test:*",
            "+@all",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("rediss://cache:cache-password@127.0.0.1:{tls_port}");
    let secured = || {
        tier(&url)
            .ca_certificate(certificates.read("ca.crt"))
            .client_certificate(
                certificates.read("client.crt"),
                certificates.read("client.key"),
            )
    };
    assert!(!format!("{:?}", secured()).contains("cache-password"));
    let (_world, a, b) = fleet_of(&server, secured(), secured()).await;
    let stored = ask(&a, FEED, None).await;
    let shared = until(&b, FEED, None, Duration::from_secs(2), |r| {
        tier_of(r) == "redis"
    })
    .await;
    assert_eq!(render(&shared), render(&stored), "shared over TLS");
    let alice = member("alice");
    assert!(
        a.layer
            .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
            .await
            .unwrap()
            .fleet_wide
    );
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(3), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // Without the client certificate the server hangs up: never in step, tokens 503.
    let world = Arc::new(World::default());
    let anonymous = instance(
        &world,
        tier(&url).ca_certificate(certificates.read("ca.crt")),
    );
    let unknown = until(
        &anonymous,
        ME,
        Some(&member("bob")),
        Duration::from_secs(1),
        |_| false,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::SERVICE_UNAVAILABLE);
    // A `redis://` URL with TLS settings is refused at build().
    let plain = scoped_cache::ScopedCacheLayer::builder()
        .verifier(
            scoped_cache::Verifier::hmac(scoped_cache::Algorithm::HS256, common::SECRET)
                .audience([common::AUDIENCE]),
        )
        .redis(
            scoped_cache::RedisTier::new(server.url()).ca_certificate(certificates.read("ca.crt")),
        )
        .build();
    let refused = plain.unwrap_err().to_string();
    assert!(refused.contains("rediss://"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_signing_key_nothing_written_without_it_is_read() {
    let server = RedisServer::start().await;
    let signed = || tier(&server.url()).signing_key("a-deployment-signing-key-of-32-bytes!!");
    let (world, a, b) = fleet_of(&server, signed(), signed()).await;
    let stored = ask(&a, FEED, None).await;
    let shared = until(&b, FEED, None, Duration::from_secs(5), |r| {
        tier_of(r) == "redis"
    })
    .await;
    assert_eq!(
        render(&shared),
        render(&stored),
        "signed entries are shared"
    );

    // Someone who can write to Redis but has not this fleet's key plants answers under
    // the keys B reads: one written without a key, one signed with the same key for
    // another prefix (another app or schema version sharing the key).
    let mut conn = server.connection().await;
    for (prefix, key, doc) in [
        ("keyless:", None, "{ renderId planted: renderId }"),
        (
            "elsewhere:",
            Some("a-deployment-signing-key-of-32-bytes!!"),
            "{ renderId planted: renderId again: renderId }",
        ),
    ] {
        let mut other = scoped_cache::RedisTier::new(server.url())
            .key_prefix(prefix)
            .fetch_timeout(Duration::from_secs(2));
        if let Some(key) = key {
            other = other.signing_key(key);
        }
        let planter = instance(&world, other);
        in_step(&planter).await;
        let planted = ask(&planter, doc, None).await;
        let pattern = format!("{prefix}e:*");
        // The planter's entry for `doc` (its probe's is there too): the one whose answer
        // holds `planted`.
        let written: String = until_some(|| {
            let mut conn = conn.clone();
            let pattern = pattern.clone();
            async move {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                for key in keys {
                    let value: Vec<u8> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    if value.windows(7).any(|w| w == b"planted") {
                        return Some(key);
                    }
                }
                None
            }
        })
        .await;
        let target = written.replacen(prefix, "test:", 1);
        let _: () = redis::cmd("RENAME")
            .arg(&written)
            .arg(&target)
            .query_async(&mut conn)
            .await
            .unwrap();
        let read = ask(&b, doc, None).await;
        assert_eq!(
            read.x_cache(),
            "MISS",
            "an answer planted from {prefix} is never served"
        );
        assert_ne!(render(&read), render(&planted));
    }

    // An instance with no key (or another) under this prefix would skip the fleet's
    // signed purges and revocations: it stays out of step, refusing tokens, instead.
    let stranger = instance(&world, tier(&server.url()));
    let deadline = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < deadline {
        assert_eq!(
            ask(&stranger, ME, Some(&member("alice"))).await.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a keyless instance in a signed fleet never takes tokens"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ask(&a, ME, Some(&member("alice"))).await.status,
        StatusCode::OK
    );
}

/// Polls `probe` every 10 ms until it finds something (at most 5 s).
async fn until_some<T, F: std::future::Future<Output = Option<T>>>(
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never found");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_layer_built_outside_a_runtime_gets_ready_from_readiness_probes_alone() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(RedisServer::start());
    let world = Arc::new(World::default());
    // Outside the runtime: `build()` cannot start the tier's syncer, and no request will
    // (an orchestrator holds traffic back until the probe says ready).
    let probed = instance(&world, tier(&server.url()));
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probed.layer.readiness().await.ready && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready = probed.layer.readiness().await;
        assert!(ready.ready, "{ready:?}");
        assert!(ready.tier.is_some_and(|t| t.in_step));
    });
}

on_every_topology!(
    a_miss_on_one_instance_is_a_redis_hit_on_the_other,
    every_purge_on_one_instance_reaches_the_other,
    a_scope_purge_spares_other_buckets_and_a_mutation_purges_fleet_wide,
    a_revocation_on_one_instance_is_refused_by_the_other,
    a_change_whose_message_is_lost_still_reaches_the_other_instance,
    concurrent_misses_on_two_instances_execute_once,
    a_quiet_subscription_stays_up,
    a_lease_whose_holder_stored_nothing_lets_the_others_go_at_once,
);
