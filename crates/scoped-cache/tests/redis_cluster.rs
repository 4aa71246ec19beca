//! The shared tier on a real Redis Cluster (three primaries, three replicas, started by
//! the test): the fleet's promises hold as on one server, every key of the tier lives in
//! one slot (so no command ever crosses slots), and the client follows the cluster as it
//! changes.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use http::StatusCode;
use scoped_cache::{Purge, Revoke};

use common::fleet::{FEED, ME, ask, fleet_on, render, tier, tier_of, until};
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
