//! The fleet's two promises under real Redis faults: after a purge or a revocation is
//! answered as fleet-wide, no instance serves what it removed, and none takes the token,
//! past `max_lag`; whatever Redis does (a full memory, a user without `SUBSCRIBE`, a
//! restart from a snapshot, a flush, a stall of writes, an instance cut off), and every
//! wait re-checks revocation. Each test starts its own `redis-server`, and a real TCP
//! proxy where a fault sits between one instance and Redis.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use scoped_cache::{Purge, Reason, Revoke};
use serde_json::json;
use tokio::time::Instant;

use common::fleet::{
    ADMIN_TOKEN, FEED, ME, ask, entry_keys, fleet, fleet_of, in_step, instance, render, tier,
    tier_of, until,
};
use common::proxy::{Mode, Proxy};
use common::redis_server::RedisServer;
use common::{member, post, query, send};

async fn redis_cmd<T: redis::FromRedisValue>(server: &RedisServer, args: &[&str]) -> T {
    let mut conn = server.connection().await;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

async fn used_memory(server: &RedisServer) -> u64 {
    let info: String = redis_cmd(server, &["INFO", "memory"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Asks `instance` for `doc` again and again for `during`, asserting every answer:
/// the promise must hold on every request, not only eventually.
async fn always(
    instance: &common::fleet::Instance,
    doc: &str,
    during: Duration,
    holds: impl Fn(&common::Reply) -> bool,
    what: &str,
) {
    let deadline = Instant::now() + during;
    while Instant::now() < deadline {
        let reply = ask(instance, doc, None).await;
        assert!(holds(&reply), "{what}: {:?} {:?}", reply.status, reply.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_cannot_crowd_out_purges_and_revocations() {
    let server =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).await;
    let (_world, a, b) = fleet(&server).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");

    // An anonymous flood of distinct keys (the query string is in the key).
    for i in 0..3000 {
        let reply = send(
            &a.app,
            query(&format!("/graphql?r={i}"), None, "{ posts { id title } }"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // And then Redis is full all the same (another tenant, a lower maxmemory): writes
    // are refused while reads and deletes still work.
    let used = used_memory(&server).await;
    let _: () = redis_cmd(
        &server,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            &(used - 64 * 1024).to_string(),
        ],
    )
    .await;
    let mut conn = server.connection().await;
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("test:probe")
        .arg("x")
        .query_async(&mut conn)
        .await;
    assert_eq!(refused.unwrap_err().code(), Some("OOM"), "redis is full");

    let purged = a.layer.purge(&Purge::entity("Post", "1")).await.unwrap();
    assert!(purged.fleet_wide, "the purge made room for its record");
    let after = until(&b, FEED, None, Duration::from_secs(3), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    assert_eq!(after.x_cache(), "MISS");
    assert_ne!(render(&after), render(&stored));

    let alice = member("alice");
    let revoked = a
        .layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    assert!(revoked.fleet_wide);
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(3), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_user_may_not_subscribe_still_converges() {
    let server = RedisServer::start().await;
    let _: () = redis_cmd(
        &server,
        &[
            "ACL",
            "SETUSER",
            "nosub",
            "on",
            ">nosub-password",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
            "-psubscribe",
            "-ssubscribe",
        ],
    )
    .await;
    let nosub = format!("redis://nosub:nosub-password@127.0.0.1:{}", server.port);
    let (_world, a, b) = fleet_of(&server, tier(&server.url()), tier(&nosub)).await;
    let (_, subscribers): (String, u64) =
        redis_cmd(&server, &["PUBSUB", "NUMSUB", "test:events"]).await;
    assert_eq!(subscribers, 1, "only A listens");

    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");
    assert!(
        a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide
    );
    let after = until(&b, FEED, None, Duration::from_secs(3), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    assert_ne!(render(&after), render(&stored), "B read the journal");

    let alice = member("alice");
    assert_eq!(ask(&b, ME, Some(&alice)).await.status, StatusCode::OK);
    a.layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(3), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_a_snapshot_never_serves_what_was_purged_after_it() {
    let mut server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    // The snapshot holds the entry; the purge comes after it.
    let _: () = redis_cmd(&server, &["SAVE"]).await;
    assert!(
        a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide
    );
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "MISS"
    })
    .await;

    server.restart().await;
    let not_purged = |r: &common::Reply| render(r) != render(&stored);
    for instance in [&a, &b] {
        always(
            instance,
            FEED,
            Duration::from_secs(2),
            not_purged,
            "the purged answer came back from the snapshot",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_redis_lost_are_written_back_for_later_instances() {
    let server = RedisServer::start().await;
    let (world, a, b) = fleet(&server).await;
    let alice = member("alice");
    let revoked = a
        .layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    assert!(revoked.fleet_wide);
    until(&b, ME, Some(&alice), Duration::from_secs(2), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;

    let _: () = redis_cmd(&server, &["FLUSHALL"]).await;
    let c = instance(&world, tier(&server.url()));
    let refused = until(&c, ME, Some(&alice), Duration::from_secs(5), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "an instance started after the flush learns the revocation"
    );
    assert_eq!(
        ask(&b, ME, Some(&alice)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// A fault that holds Redis for about 1.5 s: writes only, everything, or the server
/// itself busy.
#[derive(Debug, Clone, Copy)]
enum Hold {
    PauseWrites,
    PauseAll,
    DebugSleep,
}

async fn hold(server: &RedisServer, fault: Hold) {
    let mut conn = server.connection().await;
    let mut cmd = redis::cmd(match fault {
        Hold::PauseWrites | Hold::PauseAll => "CLIENT",
        Hold::DebugSleep => "DEBUG",
    });
    match fault {
        Hold::PauseWrites => cmd.arg(&["PAUSE", "1500", "WRITE"]),
        Hold::PauseAll => cmd.arg(&["PAUSE", "1500", "ALL"]),
        Hold::DebugSleep => cmd.arg(&["SLEEP", "1.5"]),
    };
    // `DEBUG SLEEP` answers when it ends: from a task of its own.
    let sent = tokio::spawn(async move { cmd.query_async::<()>(&mut conn).await });
    if matches!(fault, Hold::DebugSleep) {
        // It holds the server once it is read; the sleep below only lets it be read.
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        sent.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_redis_is_too_slow_to_record_is_202_and_its_instance_reads_nothing_it_covers() {
    for fault in [Hold::PauseWrites, Hold::PauseAll, Hold::DebugSleep] {
        let server = RedisServer::start().await;
        let (_world, a, b) = fleet(&server).await;
        let stored = ask(&a, FEED, None).await;
        until(&b, FEED, None, Duration::from_secs(2), |r| {
            r.x_cache() == "HIT"
        })
        .await;

        // Longer than the insert timeout (500 ms).
        hold(&server, fault).await;
        let answer = send(
            &a.app,
            post(
                "/admin/purge",
                Some(ADMIN_TOKEN),
                json!({ "tags": ["Post:1"] }),
            ),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "{fault:?}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["shared"], false);
        // A's own memory is purged, and A reads nothing back from Redis while its purge
        // is on its way there.
        let during = ask(&a, FEED, None).await;
        assert_ne!(render(&during), render(&stored), "{fault:?}");
        assert_ne!(tier_of(&during), "redis", "{fault:?}");

        // Once Redis answers again, the purge reaches the fleet.
        let after = until(&b, FEED, None, Duration::from_secs(5), |r| {
            r.x_cache() == "MISS"
        })
        .await;
        assert_ne!(render(&after), render(&stored), "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_that_missed_a_purge_never_serves_what_it_removed() {
    // With `INFO` (a new `run_id` tells the server changed) and without it (an ACL user
    // without `INFO`: only the sequence and the journal can tell).
    for with_info in [true, false] {
        failover(with_info).await;
    }
}

async fn failover(with_info: bool) {
    let primary = RedisServer::start().await;
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await;
    let proxy = Proxy::start(primary.port).await;
    let url = if with_info {
        proxy.url()
    } else {
        for server in [&primary, &replica] {
            let _: () = redis_cmd(
                server,
                &[
                    "ACL",
                    "SETUSER",
                    "blind",
                    "on",
                    ">blind-pass",
                    "~*",
                    "&*",
                    "+@all",
                    "-info",
                    "-config",
                ],
            )
            .await;
        }
        format!("redis://blind:blind-pass@127.0.0.1:{}", proxy.port)
    };
    let (_world, a, b) = fleet_of(&primary, tier(&url), tier(&url)).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    // The replica holds the entry, then stops following: it will lack the purge.
    // (`WAIT` within the test connection's 500 ms response time-out, until it answers.)
    let mut synced = 0u64;
    for _ in 0..50 {
        synced = redis_cmd(&primary, &["WAIT", "1", "300"]).await;
        if synced == 1 {
            break;
        }
    }
    assert_eq!(synced, 1, "the replica caught up");
    let _: () = redis_cmd(&replica, &["REPLICAOF", "NO", "ONE"]).await;
    assert!(
        a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide
    );
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "MISS"
    })
    .await;

    // The replica is promoted in the primary's place.
    proxy.fail_over(replica.port);
    let not_purged = |r: &common::Reply| render(r) != render(&stored);
    for instance in [&a, &b] {
        always(
            instance,
            FEED,
            Duration::from_secs(2),
            not_purged,
            if with_info {
                "the promoted replica brought the purged answer back"
            } else {
                "the promoted replica brought the purged answer back (no INFO)"
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_waiting_on_another_instances_lease_is_refused() {
    let server = RedisServer::start().await;
    let (_world, a, b) = fleet(&server).await;
    let alice = member("alice");
    let doc = "{ me slow(ms: 1500) }";
    let waiting = async {
        // A holds the lease and executes for 1.5 s; B waits on it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (reply, ()) = tokio::join!(ask(&b, doc, Some(&alice)), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.layer
                .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
                .await
                .unwrap();
        });
        reply
    };
    let (_, on_b) = tokio::join!(ask(&a, doc, Some(&alice)), waiting);
    assert_eq!(on_b.status, StatusCode::UNAUTHORIZED, "{:?}", on_b.body);
    assert_eq!(on_b.code(), "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_a_redis_entry_after_its_local_copy_ended() {
    let server = RedisServer::start().await;
    let short = |url: &str| tier(url).local_ttl(Duration::from_millis(500));
    let (world, a, b) = fleet_of(&server, short(&server.url()), short(&server.url())).await;
    let doc = "{ flaky }";
    assert_eq!(ask(&a, doc, None).await.x_cache(), "MISS");
    let copied = until(&b, doc, None, Duration::from_secs(2), |r| {
        tier_of(r) == "redis"
    })
    .await;
    assert_eq!(copied.body["data"]["flaky"], 1);

    world.failing.store(true, Ordering::SeqCst);
    // Past the entry's max-age (1 s) and B's copy (0.5 s): only Redis holds it now,
    // within stale-if-error (60 s).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stale = ask(&b, doc, None).await;
    assert_eq!(
        (stale.status, stale.x_cache()),
        (StatusCode::OK, "STALE"),
        "{:?}",
        stale.body
    );
    assert_eq!(stale.body["data"]["flaky"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_serves_nothing_cached_and_refuses_tokens_until_back() {
    let server = RedisServer::start().await;
    let proxy = Proxy::start(server.port).await;
    let lag = Duration::from_secs(2);
    let (_world, a, b) = fleet_of(
        &server,
        tier(&server.url()),
        tier(&proxy.url()).max_lag(lag),
    )
    .await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        r.x_cache() == "HIT"
    })
    .await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");
    let ready = b.layer.readiness().await;
    assert!(ready.ready && ready.tier.is_some_and(|t| t.in_step && t.reachable));

    proxy.set(Mode::Cut);
    // A purge B cannot hear of.
    assert!(
        a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide
    );
    let alice = member("alice");
    let cut_off = until(&b, FEED, None, lag * 3, |r| r.x_cache() == "MISS").await;
    assert_eq!(
        cut_off.x_cache(),
        "MISS",
        "its 60-second copy is not served"
    );
    assert_ne!(render(&cut_off), render(&stored));
    assert_eq!(cut_off.reason, Some(Reason::OutOfStep));
    let unknown = ask(&b, ME, Some(&alice)).await;
    assert_eq!(unknown.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unknown.code(), "AUTH_UNAVAILABLE");
    // A readiness probe says so too: cut off, it cannot serve with its guarantees.
    let cut = b.layer.readiness().await;
    assert!(!cut.ready && cut.tier.is_some_and(|t| !t.in_step));

    proxy.set(Mode::Open);
    in_step(&b).await;
    assert_eq!(ask(&b, ME, Some(&alice)).await.status, StatusCode::OK);
    assert!(b.layer.readiness().await.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_record_replayed_under_another_number_is_a_loss_not_a_skipped_purge() {
    let server = RedisServer::start().await;
    let proxy = Proxy::start(server.port).await;
    let key = "a-deployment-signing-key-of-32-bytes!!";
    let (world, a, b) = fleet_of(
        &server,
        tier(&server.url())
            .signing_key(key)
            .insert_timeout(Duration::from_secs(5)),
        tier(&proxy.url()).signing_key(key),
    )
    .await;
    // An older signed record to replay.
    assert!(
        a.layer
            .revoke(&Revoke::subject("nobody", std::time::SystemTime::now()))
            .await
            .unwrap()
            .fleet_wide
    );
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(2), |r| {
        tier_of(r) == "memory"
    })
    .await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");

    // B lags behind; meanwhile the purge's record is swapped for the older one, replayed
    // under the purge's number.
    proxy.set(Mode::Stalled);
    assert!(
        a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide
    );
    let mut conn = server.connection().await;
    let log: Vec<(Vec<u8>, u64)> = redis::cmd("ZRANGE")
        .arg("test:log")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let [.., (older, _), (purge, n)] = log.as_slice() else {
        panic!("two records: {log:?}");
    };
    // A, which would notice its own record replaced, is gone.
    drop(a);
    let colon = older.iter().position(|b| *b == b':').unwrap();
    let replayed = [format!("{n}").as_bytes(), &older[colon..]].concat();
    let _: () = redis::pipe()
        .cmd("ZREM")
        .arg("test:log")
        .arg(purge)
        .ignore()
        .cmd("ZADD")
        .arg("test:log")
        .arg(n)
        .arg(replayed)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    proxy.set(Mode::Open);
    // A change after it: once B refuses this token (or all tokens, starting over), B has
    // read past the replayed record.
    let c = instance(
        &world,
        tier(&server.url())
            .signing_key(key)
            .insert_timeout(Duration::from_secs(5)),
    );
    in_step(&c).await;
    let witness = member("witness");
    assert!(
        c.layer
            .revoke(&Revoke::subject("witness", std::time::SystemTime::now()))
            .await
            .unwrap()
            .fleet_wide
    );
    let refused = until(&b, ME, Some(&witness), Duration::from_secs(5), |r| {
        r.status != StatusCode::OK
    })
    .await;
    assert_ne!(refused.status, StatusCode::OK);

    // B never serves what the hidden purge removed: it saw a missing record and started
    // over.
    always(
        &b,
        FEED,
        Duration::from_secs(2),
        |r| render(r) != render(&stored),
        "the purged answer was served past a replayed record",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_no_layer_wrote_keeps_instances_out_of_step_until_it_is_deleted() {
    let server = RedisServer::start().await;
    let lag = Duration::from_secs(1);
    let (_world, a, b) = fleet_of(
        &server,
        tier(&server.url()).max_lag(lag),
        tier(&server.url()).max_lag(lag),
    )
    .await;
    let alice = member("alice");
    // Beyond any sequence a fleet reaches (2^46 + 1): a layer adopting it could soon
    // record nothing more.
    let _: () = redis_cmd(&server, &["SET", "test:seq", "70368744177665"]).await;
    for instance in [&a, &b] {
        let refused = until(instance, ME, Some(&alice), lag * 4, |r| {
            r.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        !a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide,
        "nothing is recorded above it"
    );

    // The operator deletes it: Redis lost the sequence, the fleet recovers.
    let _: () = redis_cmd(&server, &["DEL", "test:seq"]).await;
    for instance in [&a, &b] {
        in_step(instance).await;
        assert_eq!(ask(instance, ME, Some(&alice)).await.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_back_in_step_within_a_tick_of_redis_not_a_cool_down() {
    let server = RedisServer::start().await;
    let proxy = Proxy::start(server.port).await;
    let lag = Duration::from_secs(1);
    // A cool-down no test waits out: only the syncer's probe can bring B back in time.
    let (_world, a, b) = fleet_of(
        &server,
        tier(&server.url()),
        tier(&proxy.url())
            .max_lag(lag)
            .cool_down(Duration::from_secs(600)),
    )
    .await;
    let alice = member("alice");
    proxy.set(Mode::Cut);
    let down = until(&b, ME, Some(&alice), lag * 5, |r| {
        r.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    // The fault lasts: the syncer fails once a tick, and its failures open the breaker.
    tokio::time::sleep(Duration::from_secs(5)).await;

    proxy.set(Mode::Open);
    in_step(&b).await;
    assert_eq!(ask(&b, ME, Some(&alice)).await.status, StatusCode::OK);
    // And its requests read Redis again: the breaker closed with the probe (with it open
    // for ten minutes, B would only ever execute or serve its memory). Right after the
    // fault, B's first write may still meet the connection the fault broke, an outage
    // that keeps B off Redis's answers until its next sync (at once): so each round asks
    // about a new answer, which A first puts in Redis.
    let mut conn = server.connection().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 0.. {
        let doc = format!("query Feed{round} {{ posts {{ id title }} renderId }}");
        let before = entry_keys(&mut conn).await.len();
        ask(&a, &doc, None).await;
        while entry_keys(&mut conn).await.len() == before {
            assert!(Instant::now() < deadline, "A's answer never reached Redis");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if tier_of(&ask(&b, &doc, None).await) == "redis" {
            break;
        }
        assert!(Instant::now() < deadline, "B never read Redis again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_record_swapped_for_an_older_one_as_the_newest_is_never_skipped() {
    let server = RedisServer::start().await;
    let proxy = Proxy::start(server.port).await;
    let key = "a-deployment-signing-key-of-32-bytes!!";
    let (_world, a, b) = fleet_of(
        &server,
        tier(&server.url())
            .signing_key(key)
            .insert_timeout(Duration::from_secs(5)),
        tier(&proxy.url()).signing_key(key),
    )
    .await;
    assert!(
        a.layer
            .revoke(&Revoke::subject("nobody", std::time::SystemTime::now()))
            .await
            .unwrap()
            .fleet_wide
    );
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(5), |r| {
        tier_of(r) == "memory"
    })
    .await;
    assert_eq!(tier_of(&ask(&b, FEED, None).await), "memory");

    // B lags; the purge's record, the newest, is swapped for the older one under its
    // number, and nothing is recorded after it.
    proxy.set(Mode::Stalled);
    assert!(
        a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .unwrap()
            .fleet_wide
    );
    drop(a);
    let mut conn = server.connection().await;
    let log: Vec<(Vec<u8>, u64)> = redis::cmd("ZRANGE")
        .arg("test:log")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let [.., (older, _), (purge, n)] = log.as_slice() else {
        panic!("two records: {log:?}");
    };
    let colon = older.iter().position(|b| *b == b':').unwrap();
    let replayed = [format!("{n}").as_bytes(), &older[colon..]].concat();
    let _: () = redis::pipe()
        .cmd("ZREM")
        .arg("test:log")
        .arg(purge)
        .ignore()
        .cmd("ZADD")
        .arg("test:log")
        .arg(n)
        .arg(replayed)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    proxy.set(Mode::Open);

    // Within two ticks B has read the journal, and from then on never serves the answer
    // the hidden purge removed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    always(
        &b,
        FEED,
        Duration::from_secs(2),
        |r| render(r) != render(&stored),
        "the purged answer was served past a replayed newest record",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_revocations_than_a_page_all_load_even_with_one_score() {
    let server = RedisServer::start().await;
    let mut conn = server.connection().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    // 12,000 revocations that Redis forgets at one moment, a day from now: more than a
    // page (10,000), all tied on their score.
    let forget_at_ms = (before + 86_400) * 1000;
    for chunk in (0..12_000).collect::<Vec<u32>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            let member = json!({"kind": "subject", "sub": format!("user{n}"), "iss": null, "before": before});
            pipe.cmd("ZADD")
                .arg("test:revocations")
                .arg(forget_at_ms)
                .arg(member.to_string())
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    let world = std::sync::Arc::new(common::fleet::World::default());
    let c = instance(&world, tier(&server.url()));
    in_step(&c).await;
    for n in [0, 9_999, 10_000, 11_999] {
        assert_eq!(
            ask(&c, ME, Some(&member(&format!("user{n}")))).await.status,
            StatusCode::UNAUTHORIZED,
            "user{n}"
        );
    }
    assert_eq!(
        ask(&c, ME, Some(&member("someone-else"))).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_redis_does_not_answer_in_time_says_so_not_absent() {
    let server = RedisServer::start().await;
    let proxy = Proxy::start(server.port).await;
    let (_world, a, b) = fleet_of(
        &server,
        tier(&server.url()),
        // Short enough to give up long before B could fall out of step.
        tier(&proxy.url()).fetch_timeout(Duration::from_millis(300)),
    )
    .await;
    let absent = ask(&b, "{ posts { title } }", None).await;
    assert_eq!(absent.x_cache(), "MISS");
    assert_eq!(
        absent.reason,
        Some(Reason::Absent),
        "nothing stood in its way"
    );
    // In Redis (A stored it), not in B's memory: B's lookup must ask Redis, which stalls.
    ask(&a, FEED, None).await;
    proxy.set(Mode::Stalled);
    let stalled = ask(&b, FEED, None).await;
    assert_eq!(stalled.x_cache(), "MISS");
    assert_eq!(stalled.status, StatusCode::OK);
    assert_eq!(stalled.reason, Some(Reason::RedisUnavailable));
    proxy.set(Mode::Open);
}
