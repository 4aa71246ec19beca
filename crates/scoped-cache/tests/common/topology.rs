//! One Redis of each supported topology, for the tests that must hold on all of them:
//! `on_every_topology!(scenario)` makes a test per topology of `async fn scenario(Topo)`.

use super::redis_cluster::RedisCluster;
use super::redis_sentinel::RedisSentinel;
use super::redis_server::RedisServer;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Topo {
    Single,
    Cluster,
    Sentinel,
}

pub(crate) enum TestRedis {
    Single(RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

impl TestRedis {
    pub(crate) async fn start(topo: Topo) -> Self {
        match topo {
            Topo::Single => TestRedis::Single(RedisServer::start().await),
            Topo::Cluster => TestRedis::Cluster(RedisCluster::start().await),
            Topo::Sentinel => TestRedis::Sentinel(RedisSentinel::start().await),
        }
    }

    pub(crate) fn url(&self) -> String {
        match self {
            TestRedis::Single(server) => server.url(),
            TestRedis::Cluster(cluster) => cluster.url(),
            TestRedis::Sentinel(sentinel) => sentinel.url(),
        }
    }

    /// `rest` under the tests' prefix `test:`, as this topology names it
    /// (`{test:}l:*` on a cluster).
    pub(crate) fn key(&self, rest: &str) -> String {
        match self {
            TestRedis::Cluster(_) => format!("{{test:}}{rest}"),
            _ => format!("test:{rest}"),
        }
    }

    /// A connection to the server holding the tier's keys now.
    pub(crate) async fn home(&self) -> redis::aio::MultiplexedConnection {
        match self {
            TestRedis::Single(server) => server.connection().await,
            TestRedis::Cluster(cluster) => {
                let home = cluster.primary_of(&self.key("seq")).await;
                cluster.nodes[home].connection().await
            }
            TestRedis::Sentinel(sentinel) => {
                let port = sentinel.primary_port().await;
                let node = if port == sentinel.replica.port {
                    &sentinel.replica
                } else {
                    &sentinel.primary
                };
                node.connection().await
            }
        }
    }

    /// A connection to every live data node (where subscriptions may be).
    pub(crate) async fn every_node(&self) -> Vec<redis::aio::MultiplexedConnection> {
        let nodes: Vec<&RedisServer> = match self {
            TestRedis::Single(server) => vec![server],
            TestRedis::Cluster(cluster) => cluster.nodes.iter().collect(),
            TestRedis::Sentinel(sentinel) => vec![&sentinel.primary, &sentinel.replica],
        };
        let mut conns = Vec::new();
        for node in nodes.into_iter().filter(|n| n.is_running()) {
            conns.push(node.connection().await);
        }
        conns
    }
}

/// A test per topology for each `async fn scenario(topo: Topo)` named.
#[macro_export]
macro_rules! on_every_topology {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::common::topology::Topo;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn single() {
                super::$scenario(Topo::Single).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$scenario(Topo::Cluster).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sentinel() {
                super::$scenario(Topo::Sentinel).await;
            }
        }
    )*};
}
