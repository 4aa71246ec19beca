//! A real Redis Cluster of the test's own: three primaries and three replicas, each a
//! `redis-server` on a free loopback port, joined by `redis-cli --cluster create`.

use std::process::Command;
use std::time::Duration;

use super::redis_server::RedisServer;

pub(crate) struct RedisCluster {
    /// The first three were made primaries, the others their replicas.
    pub(crate) nodes: Vec<RedisServer>,
}

/// Cluster nodes notice a dead peer within this (a failover takes about twice it).
const NODE_TIMEOUT_MS: &str = "1000";

impl RedisCluster {
    pub(crate) async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    NODE_TIMEOUT_MS,
                    // A replica may take over however long ago it last heard its
                    // primary: the tests kill primaries soon after the cluster is made.
                    "--cluster-replica-validity-factor",
                    "0",
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = tokio::task::spawn_blocking(move || {
            Command::new(std::env::var("REDIS_CLI").unwrap_or("redis-cli".into()))
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .output()
                .expect("redis-cli must be installed (.ci/run installs it with redis-server)")
        })
        .await
        .unwrap();
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { nodes };
        cluster.until_ok().await;
        cluster.until_replicas_synced().await;
        cluster
    }

    /// Waits until every replica has completed its sync with its primary.
    async fn until_replicas_synced(&self) {
        for node in &self.nodes[3..] {
            let mut synced = false;
            for _ in 0..1000 {
                let mut conn = node.connection().await;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if info.contains("master_link_status:up") {
                    synced = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(synced, "a replica never synced with its primary");
        }
    }

    /// Waits until every live node says the cluster is up (all slots served).
    pub(crate) async fn until_ok(&self) {
        for _ in 0..1000 {
            let mut all_ok = true;
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let mut conn = node.connection().await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                all_ok &= info.contains("cluster_state:ok");
            }
            if all_ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the cluster never became ok");
    }

    /// `redis+cluster://` naming the first three nodes (the client finds the rest).
    pub(crate) fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The live node serving `key`'s slot as primary: the one that answers for it (the
    /// others redirect with `MOVED`); waits while none does (a failover under way).
    pub(crate) async fn primary_of(&self, key: &str) -> usize {
        for _ in 0..1000 {
            for (i, node) in self.nodes.iter().enumerate() {
                if !node.is_running() {
                    continue;
                }
                let mut conn = node.connection().await;
                let owns = redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .is_ok();
                if owns {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no live primary serves the slot of {key}");
    }

    /// Moves `key`'s slot to primary `to`, the way `redis-cli --cluster reshard` does (the
    /// slot marked migrating and importing, its keys moved with `MIGRATE`, then given to
    /// `to`), one key per batch with `pause` between batches, so requests run while the
    /// slot is half moved.
    pub(crate) async fn migrate_slot_of(&self, key: &str, to: usize, pause: Duration) {
        let from = self.primary_of(key).await;
        let mut source = self.nodes[from].connection().await;
        let mut target = self.nodes[to].connection().await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut source)
            .await
            .unwrap();
        let id = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query_async::<String>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        let (source_id, target_id) = (id(&mut source).await, id(&mut target).await);
        let set = |conn: &mut redis::aio::MultiplexedConnection, how: &str, node: &str| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(how).arg(node);
            async move { cmd.query_async::<()>(&mut conn).await.unwrap() }
        };
        set(&mut target, "IMPORTING", &source_id).await;
        set(&mut source, "MIGRATING", &target_id).await;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1)
                .query_async(&mut source)
                .await
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut source)
                .await
                .unwrap();
            tokio::time::sleep(pause).await;
        }
        // The new owner first, then the old, then everyone else.
        set(&mut target, "NODE", &target_id).await;
        set(&mut source, "NODE", &target_id).await;
        for (i, node) in self.nodes.iter().enumerate().take(3) {
            if i != from && i != to && node.is_running() {
                set(&mut node.connection().await, "NODE", &target_id).await;
            }
        }
    }
}
