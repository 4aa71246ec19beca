//! The shared tier on a real Redis Cluster (three primaries, three replicas, started by
//! the test): the fleet's promises hold as on one server, every key of the tier lives in
//! one slot (so no command ever crosses slots), and the client follows the cluster as it
//! changes.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use http::StatusCode;
use scoped_cache::{Purge, Revoke};

use common::fleet::{FEED, ME, ask, fleet_on, in_step, render, tier, tier_of, until};
use common::member;
use common::redis_cluster::RedisCluster;

/// Keys of the database each node holds.
async fn keys_per_node(cluster: &RedisCluster) -> Vec<i64> {
    let mut counts = Vec::new();
    for node in &cluster.nodes {
        let mut conn = node.connection().await;
        counts.push(redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_cluster_shares_answers_purges_and_revocations_from_one_slot() {
    let cluster = RedisCluster::start().await;
    let (_world, a, b) = fleet_on(tier(&cluster.url()), tier(&cluster.url())).await;

    let stored = ask(&a, FEED, None).await;
    let shared = until(&b, FEED, None, Duration::from_secs(5), |r| {
        tier_of(r) == "redis"
    })
    .await;
    assert_eq!(render(&shared), render(&stored), "B serves what A stored");

    // Every key is in the slot of the prefix's hash tag, on the one primary that
    // serves it (and its replica).
    let home = cluster.primary_of("{test:}seq").await;
    let counts = keys_per_node(&cluster).await;
    for (node, count) in counts.iter().enumerate().take(3) {
        if node == home {
            assert!(*count > 0, "the home primary holds the tier: {counts:?}");
        } else {
            assert_eq!(*count, 0, "another primary holds a key: {counts:?}");
        }
    }

    let purged = a.layer.purge(&Purge::entity("Post", "1")).await.unwrap();
    assert!(purged.fleet_wide);
    let after = until(&b, FEED, None, Duration::from_secs(5), |r| {
        r.x_cache() == "MISS"
    })
    .await;
    assert_ne!(render(&after), render(&stored), "the purge reached B");

    let alice = member("alice");
    assert_eq!(ask(&b, ME, Some(&alice)).await.status, StatusCode::OK);
    let revoked = a
        .layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    assert!(revoked.fleet_wide);
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(5), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(b.layer.readiness().await.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_home_primary_dies_its_promoted_replica_takes_over_and_changes_converge() {
    let mut cluster = RedisCluster::start().await;
    let (_world, a, b) = fleet_on(tier(&cluster.url()), tier(&cluster.url())).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(5), |r| {
        tier_of(r) == "redis"
    })
    .await;

    let home = cluster.primary_of("{test:}seq").await;
    cluster.nodes[home].kill();
    // Its replica is promoted once the others see it down (about twice the node
    // time-out).
    let promoted = cluster.primary_of("{test:}seq").await;
    cluster.until_ok().await;
    assert_ne!(promoted, home, "a replica took the slot over");
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

    // Changes made after the failover reach the other instance through the new primary.
    let shared = async {
        for _ in 0..100 {
            if a.layer
                .purge(&Purge::entity("Post", "1"))
                .await
                .is_ok_and(|purged| purged.fleet_wide)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(shared.await, "a purge is shared after the failover");
    let after = until(&b, FEED, None, Duration::from_secs(5), |r| {
        render(r) != render(&stored)
    })
    .await;
    assert_ne!(render(&after), render(&stored), "the purge reached B");
    let alice = member("alice");
    let revoked = a
        .layer
        .revoke(&Revoke::subject("alice", std::time::SystemTime::now()))
        .await
        .unwrap();
    assert!(revoked.fleet_wide);
    let refused = until(&b, ME, Some(&alice), Duration::from_secs(5), |r| {
        r.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // And answers are shared again: what A stores, B reads. (Each try is a new
    // document: right after the failover, an instance may find the promoted replica
    // behind what it heard and drop its memory, and a write may still meet the old
    // primary; neither ever serves a removed answer, but both make one try unshared.)
    let mut shared_again = false;
    for i in 0..50 {
        let doc = format!("{{ posts {{ id }} renderId try{i}: renderId }}");
        let fresh = ask(&a, &doc, None).await;
        let seen = ask(&b, &doc, None).await;
        if tier_of(&seen) == "redis" && render(&seen) == render(&fresh) {
            shared_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared_again, "answers are shared through the new primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_tiers_slot_while_requests_run_never_serves_a_purged_answer() {
    let cluster = RedisCluster::start().await;
    let (_world, a, b) = fleet_on(tier(&cluster.url()), tier(&cluster.url())).await;
    let stored = ask(&a, FEED, None).await;
    until(&b, FEED, None, Duration::from_secs(5), |r| {
        tier_of(r) == "redis"
    })
    .await;
    // Enough keys that the move takes a while: a few answers and revocations.
    for i in 0..5 {
        ask(&a, &format!("{{ posts {{ id }} k{i}: renderId }}"), None).await;
    }
    let home = cluster.primary_of("{test:}seq").await;
    let to = (home + 1) % 3;

    let moving = cluster.migrate_slot_of("{test:}seq", to, Duration::from_millis(30));
    let traffic = async {
        // Mid-move: a purge; from its answer on, A never serves the purged answer, and
        // neither does B once the purge is shared (at once, or when Redis takes it).
        tokio::time::sleep(Duration::from_millis(60)).await;
        let purged = a.layer.purge(&Purge::entity("Post", "1")).await.unwrap();
        for _ in 0..20 {
            let from_a = ask(&a, FEED, None).await;
            assert_eq!(from_a.status, StatusCode::OK);
            assert_ne!(render(&from_a), render(&stored), "A served what it purged");
            if purged.fleet_wide {
                assert_ne!(render(&ask(&b, FEED, None).await), render(&stored));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::join!(moving, traffic);
    assert_eq!(cluster.primary_of("{test:}seq").await, to, "the slot moved");

    // Once moved, the purge is everywhere, and the fleet works through the new owner.
    let after = until(&b, FEED, None, Duration::from_secs(5), |r| {
        render(r) != render(&stored)
    })
    .await;
    assert_ne!(render(&after), render(&stored), "the purge reached B");
    let mut shared_again = false;
    for i in 0..50 {
        let doc = format!("{{ posts {{ id }} renderId moved{i}: renderId }}");
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
        "answers are shared through the slot's new primary"
    );
    let counts = keys_per_node(&cluster).await;
    assert_eq!(counts[home], 0, "nothing left behind: {counts:?}");
}
