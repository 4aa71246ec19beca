//! The shared tier on each supported topology, started by this benchmark on loopback: one
//! `redis-server`, a Redis Cluster (three primaries, three replicas) and a primary behind
//! three Sentinels. For each: L2 hit latency (an instance whose memory is empty reads what
//! another stored), and how fast a purge and a revocation reach the other instance.
//!
//! `cargo bench -p scoped-cache --features redis --bench redis_topologies`
//!
//! Prints a table; numbers are for the README and docs/redis.md, never asserted.

mod common;
#[path = "../tests/common/redis_cluster.rs"]
#[allow(dead_code)]
mod redis_cluster;
#[path = "../tests/common/redis_sentinel.rs"]
#[allow(dead_code)]
mod redis_sentinel;
#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;
#[path = "../tests/common/topology.rs"]
#[allow(dead_code, unused_macros)]
mod topology;

use std::time::Duration;

use common::measure::{convergence, in_step, summary, timed};
use scoped_cache::RedisTier;
use topology::{TestRedis, Topo};

/// Entries each L2 loop reads.
const N: usize = 2_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    println!("\n## The Redis tier by topology (in-process, one request at a time)\n");
    println!("| topology: path | p50 | p99 | samples |\n| --- | --- | --- | --- |");
    for topo in [Topo::Single, Topo::Cluster, Topo::Sentinel] {
        let redis = TestRedis::start(topo).await;
        // The tests' prefix: `TestRedis` names its keys.
        let tier = || RedisTier::new(redis.url()).key_prefix("test:");
        let (a, a_layer) = common::layered(Some(tier()));
        let (b, _) = common::layered(Some(tier()));
        in_step(&a).await;
        in_step(&b).await;
        let docs: Vec<String> = (0..N)
            .map(|n| format!("query Q{n} {{ publicPosts {{ id title }} }}"))
            .collect();
        for doc in &docs {
            timed(&a, doc, None).await;
        }
        // Let the background writes land.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut l2 = Vec::with_capacity(N);
        for doc in &docs {
            let (took, tier) = timed(&b, doc, None).await;
            if tier == "redis" {
                l2.push(took);
            }
        }
        let name = format!("{topo:?}").to_lowercase();
        summary(&format!("{name}: L2 hit (empty L1)"), l2);
        convergence(&name, (&a, &a_layer), &b, 50).await;
    }
}
