//! A real Sentinel-managed Redis of the test's own: a primary, its replica, and three
//! Sentinels (`redis-server --sentinel`) watching them as the service `forum`, each on a
//! free loopback port, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis_server::{RedisServer, free_port};

/// The service the Sentinels watch.
pub(crate) const SERVICE: &str = "forum";

struct SentinelProcess {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) struct RedisSentinel {
    pub(crate) primary: RedisServer,
    pub(crate) replica: RedisServer,
    sentinels: Vec<SentinelProcess>,
}

async fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await
}

impl RedisSentinel {
    pub(crate) async fn start() -> Self {
        let primary = RedisServer::start().await;
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await;
        for _ in 0..1000 {
            let info: String = query(replica.port, &["INFO", "replication"])
                .await
                .unwrap_or_default();
            if info.contains("master_link_status:up") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "scoped-cache-sentinel-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\n\
                     sentinel failover-timeout {SERVICE} 3000\n",
                    dir.display(),
                    primary.port
                ),
            )
            .unwrap();
            let child =
                Command::new(std::env::var("REDIS_SERVER").unwrap_or("redis-server".into()))
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed (.ci/run installs it)");
            sentinels.push(SentinelProcess { child, port, dir });
        }
        let sentinel = Self {
            primary,
            replica,
            sentinels,
        };
        // Ready when every Sentinel knows the replica and the two other Sentinels (a
        // failover needs them to agree).
        for node in &sentinel.sentinels {
            let mut ready = false;
            for _ in 0..1000 {
                let replicas: Vec<redis::Value> =
                    query(node.port, &["SENTINEL", "REPLICAS", SERVICE])
                        .await
                        .unwrap_or_default();
                let others: Vec<redis::Value> =
                    query(node.port, &["SENTINEL", "SENTINELS", SERVICE])
                        .await
                        .unwrap_or_default();
                if replicas.len() == 1 && others.len() == 2 {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(ready, "the Sentinels never saw each other and the replica");
        }
        sentinel
    }

    /// `redis+sentinel://` naming the three Sentinels and the service.
    pub(crate) fn url(&self) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", nodes.join(","))
    }

    /// The primary's port as the first Sentinel names it now.
    pub(crate) async fn primary_port(&self) -> u16 {
        let (_, port): (String, String) = query(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE],
        )
        .await
        .unwrap();
        port.parse().unwrap()
    }

    /// Has the first `count` Sentinels watch the primary on `port` as the service
    /// instead (what they would name after promoting it), the others unchanged.
    pub(crate) async fn repoint(&self, count: usize, port: u16) {
        for node in &self.sentinels[..count] {
            let _: () = query(node.port, &["SENTINEL", "REMOVE", SERVICE])
                .await
                .unwrap();
            let _: () = query(
                node.port,
                &[
                    "SENTINEL",
                    "MONITOR",
                    SERVICE,
                    "127.0.0.1",
                    &port.to_string(),
                    "2",
                ],
            )
            .await
            .unwrap();
        }
    }
}
