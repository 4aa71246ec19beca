//! The shared tier behind real Redis Sentinels (a primary, its replica, three Sentinels,
//! started by the test): the fleet finds the primary through them, and follows a
//! failover to the replica they promote.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use http::StatusCode;
use scoped_cache::{Purge, Revoke};

use common::fleet::{FEED, ME, ask, fleet_on, in_step, render, tier, tier_of, until};
use common::member;
use common::redis_sentinel::RedisSentinel;
use common::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_behind_sentinels_follows_a_failover_to_the_promoted_replica() {
    let mut sentinel = RedisSentinel::start().await;
    let (_world, a, b) = fleet_on(tier(&sentinel.url()), tier(&sentinel.url())).await;
    let stored = ask(&a, FEED, None).await;
    let shared = until(&b, FEED, None, Duration::from_secs(5), |r| {
        tier_of(r) == "redis"
    })
    .await;
    assert_eq!(render(&shared), render(&stored), "B serves what A stored");
    assert_eq!(sentinel.primary_port().await, sentinel.primary.port);

    sentinel.primary.kill();
    let mut promoted = false;
    for _ in 0..1000 {
        if sentinel.primary_port().await == sentinel.replica.port {
            promoted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(promoted, "the Sentinels promoted the replica");
    in_step(&a).await;
    in_step(&b).await;
    // The promoted node has what A stored (it was replicated): B serves it again, so
    // the purge below has something to remove.
    let again = until(&b, FEED, None, Duration::from_secs(5), |r| {
        render(r) == render(&stored)
    })
    .await;
    assert_eq!(
        render(&again),
        render(&stored),
        "B serves the stored answer"
    );

    let mut purged = false;
    for _ in 0..100 {
        if a.layer
            .purge(&Purge::entity("Post", "1"))
            .await
            .is_ok_and(|p| p.fleet_wide)
        {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(purged, "a purge is shared through the promoted replica");
    let after = until(&b, FEED, None, Duration::from_secs(5), |r| {
        render(r) != render(&stored)
    })
    .await;
    assert_ne!(render(&after), render(&stored), "the purge reached B");
    let alice = member("alice");
    assert!(
        a.layer
            .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
            .await
            .unwrap()
            .fleet_wide
    );
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(5), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let mut shared_again = false;
    for i in 0..50 {
        let doc = format!("{{ posts {{ id }} renderId after{i}: renderId }}");
        let fresh = ask(&a, &doc, None).await;
        let seen = ask(&b, &doc, None).await;
        if tier_of(&seen) == "redis" && render(&seen) == render(&fresh) {
            shared_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shared_again,
        "answers are shared through the promoted replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_the_sentinels_majority_no_longer_names_is_left_even_while_it_answers() {
    let sentinel = RedisSentinel::start().await;
    let (_world, a, b) = fleet_on(tier(&sentinel.url()), tier(&sentinel.url())).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(5), |r| {
        tier_of(r) == "redis"
    })
    .await;

    // Two of the three Sentinels now name another primary (as after a failover the
    // old primary, cut off with this fleet and one Sentinel, never heard of). The old
    // one still answers as a primary: nothing fails, only the Sentinels can tell.
    let other = RedisServer::start().await;
    sentinel.repoint(2, other.port).await;
    let moved = async {
        let mut conn = other.connection().await;
        for _ in 0..500 {
            let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
            if keys > 0 {
                return true;
            }
            ask(&a, ME, Some(&member("probe"))).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(
        moved.await,
        "the fleet went to the primary the majority names"
    );
    // Nothing the old primary holds is served: the new one has none of it.
    in_step(&b).await;
    let after = until(&b, FEED, None, Duration::from_secs(5), |r| {
        render(r) != render(&stored)
    })
    .await;
    assert_ne!(render(&after), render(&stored));
}
