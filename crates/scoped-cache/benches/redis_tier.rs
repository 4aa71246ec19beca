//! The Redis tier, measured against a real `redis-server` on loopback that this benchmark
//! starts itself: L2 hit latency and throughput against an L1 hit, purge latency by tag and
//! by scope with 100,000 entries, Redis memory per entry with its index share, and the
//! latency a request pays while Redis is down (breaker closed, then open), how fast a
//! purge and a revocation converge to another instance with pub/sub and without it, and
//! what the syncers' ticks cost Redis with 1 and 10 instances.
//!
//! `cargo bench -p scoped-cache --features redis --bench redis_tier`
//!
//! Prints a table; numbers are for BENCHMARKS and the README, never asserted.

mod common;
#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::time::Duration;

use axum::Router;
use common::measure::{convergence, in_step, summary, timed};
use common::token;
use redis_server::RedisServer;
use scoped_cache::{Purge, RedisTier, ScopedCacheLayer};
use tokio::time::Instant;

fn app(tier: Option<RedisTier>) -> (Router, ScopedCacheLayer) {
    common::layered(tier)
}

fn tier(server: &RedisServer) -> RedisTier {
    RedisTier::new(server.url()).key_prefix("bench:")
}

/// What the syncers cost an idle Redis over `secs` with `instances` instances.
async fn tick_cost(server: &RedisServer, instances: usize, secs: u64) {
    let apps: Vec<Router> = (0..instances).map(|_| app(Some(tier(server))).0).collect();
    for app in &apps {
        in_step(app).await;
    }
    let stats = |info: &str, field: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let mut conn = server.connection().await;
    let read = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("all")
                .query_async(&mut conn)
                .await
                .unwrap();
            (
                stats(&info, "used_cpu_user") + stats(&info, "used_cpu_sys"),
                stats(&info, "total_commands_processed"),
                stats(&info, "total_net_input_bytes") + stats(&info, "total_net_output_bytes"),
            )
        }
    };
    let before = read(&mut conn).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = read(&mut conn).await;
    let per_second = |a: f64, b: f64| (b - a) / secs as f64;
    println!(
        "| {instances} | {:.2} ms | {:.0} | {:.0} |",
        per_second(before.0, after.0) * 1e3,
        per_second(before.1, after.1),
        per_second(before.2, after.2),
    );
    drop(apps);
}

fn feed(n: usize) -> String {
    format!("query Q{n} {{ publicPosts {{ id title }} }}")
}

async fn keys(server: &RedisServer, pattern: &str) -> Vec<String> {
    let mut conn = server.connection().await;
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(batch);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

async fn memory_usage(server: &RedisServer, keys: &[String]) -> u64 {
    let mut conn = server.connection().await;
    let mut total = 0;
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut conn).await.unwrap();
        total += sizes.into_iter().flatten().sum::<u64>();
    }
    total
}

/// Stores `count` entries through `app`, a few at a time (each miss writes to Redis off
/// the request path; at most 256 writes are in flight), until Redis holds them.
async fn fill(app: &Router, server: &RedisServer, docs: &[(String, Option<String>)]) {
    for chunk in docs.chunks(64) {
        let calls = chunk
            .iter()
            .map(|(doc, token)| timed(app, doc, token.as_deref()));
        futures_util::future::join_all(calls).await;
    }
    // Let the last writes land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = server;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let mut server = RedisServer::start().await;
    let (a, a_layer) = app(Some(tier(&server)));
    // Copies that outlive the L2 loop, so the L1 loop measures memory hits on a slow
    // machine too (a copy lives at most `max_lag`).
    let (b, _) = app(Some(
        tier(&server)
            .local_ttl(Duration::from_secs(120))
            .max_lag(Duration::from_secs(120)),
    ));
    in_step(&a).await;
    in_step(&b).await;

    println!("\n## Lookups through the layer (one request at a time)\n");
    println!("| path | p50 | p99 | requests |\n| --- | --- | --- | --- |");
    const N: usize = 20_000;
    let docs: Vec<(String, Option<String>)> = (0..N).map(|n| (feed(n), None)).collect();
    let mut conn = server.connection().await;
    let before: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    fill(&a, &server, &docs).await;
    let after: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut l2 = Vec::with_capacity(N);
    let mut misses = 0;
    for (doc, _) in &docs {
        let (took, tier) = timed(&b, doc, None).await;
        if tier == "redis" {
            l2.push(took);
        } else {
            misses += 1;
        }
    }
    let mut l1 = Vec::with_capacity(N);
    let mut not_memory = 0;
    for (doc, _) in &docs {
        let (took, tier) = timed(&b, doc, None).await;
        if tier == "memory" {
            l1.push(took);
        } else {
            not_memory += 1;
        }
    }
    if not_memory > 0 {
        println!("({not_memory} of {N} were not memory hits)");
    }
    summary("L1 hit (memory)", l1);
    summary("L2 hit (redis, empty L1)", l2);
    if misses > 0 {
        println!("({misses} of {N} were not in Redis: writes skipped while 256 were in flight)");
    }

    // The cost of signed entries on an L2 hit: a signed pair under another prefix.
    let signed = || {
        RedisTier::new(server.url())
            .key_prefix("signed:")
            .signing_key("a-benchmark-signing-key-of-32-bytes!!")
    };
    let (sa, _) = app(Some(signed()));
    let (sb, _) = app(Some(signed()));
    in_step(&sa).await;
    in_step(&sb).await;
    let few = &docs[..5_000];
    fill(&sa, &server, few).await;
    let mut unsigned_l2 = Vec::new();
    let mut signed_l2 = Vec::new();
    let (fresh, _) = app(Some(tier(&server)));
    in_step(&fresh).await;
    // Alternating, so both see the same machine.
    for (doc, _) in few {
        let (took, tier) = timed(&fresh, doc, None).await;
        if tier == "redis" {
            unsigned_l2.push(took);
        }
        let (took, tier) = timed(&sb, doc, None).await;
        if tier == "redis" {
            signed_l2.push(took);
        }
    }
    summary("L2 hit, checksummed (same docs, alternating)", unsigned_l2);
    summary("L2 hit, signed (HMAC-SHA-256)", signed_l2);
    drop((sa, sb, fresh));

    // Throughput of L2 hits: a fresh instance, 32 requests at a time.
    let (c, _) = app(Some(tier(&server)));
    in_step(&c).await;
    let started = Instant::now();
    for chunk in docs.chunks(32) {
        futures_util::future::join_all(chunk.iter().map(|(doc, _)| timed(&c, doc, None))).await;
    }
    let l2_rate = N as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for chunk in docs.chunks(32) {
        futures_util::future::join_all(chunk.iter().map(|(doc, _)| timed(&c, doc, None))).await;
    }
    let l1_rate = N as f64 / started.elapsed().as_secs_f64();
    println!(
        "\nthroughput, 32 concurrent, in-process: L2 hits {l2_rate:.0} req/s, L1 hits {l1_rate:.0} req/s"
    );

    // Fan-out: from a purge on A until B's memory copy is gone (B asks every 100 µs; the
    // first answer not from B's memory ends the wait).
    let mut fanout = Vec::new();
    for round in 0..50 {
        let doc = format!("query Fan{round} {{ publicPosts {{ id }} }}");
        timed(&a, &doc, None).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        while timed(&b, &doc, None).await.1 != "memory" {}
        let started = Instant::now();
        a_layer
            .purge(&Purge::operation(format!("Fan{round}")))
            .await
            .unwrap();
        while timed(&b, &doc, None).await.1 == "memory" {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        fanout.push(started.elapsed());
    }
    println!();
    println!(
        "| purge on A until B's memory drops it | p50 | p99 | rounds |\n| --- | --- | --- | --- |"
    );
    summary("operation purge, pub/sub", fanout);

    // Convergence of fleet-wide changes: with pub/sub, and for an instance whose user may
    // not subscribe (the journal, read every second).
    println!(
        "\n## Convergence: from A's fleet-wide answer until B applies it\n\n| change | p50 | p99 | rounds |\n| --- | --- | --- | --- |"
    );
    let mut acl = server.connection().await;
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "nosub",
            "on",
            ">nosub-password",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
        ])
        .query_async(&mut acl)
        .await
        .unwrap();
    in_step(&b).await;
    convergence("pub/sub", (&a, &a_layer), &b, 50).await;
    let (silent, _) = app(Some(
        RedisTier::new(format!(
            "redis://nosub:nosub-password@127.0.0.1:{}",
            server.port
        ))
        .key_prefix("bench:"),
    ));
    in_step(&silent).await;
    convergence(
        "no SUBSCRIBE (journal every second)",
        (&a, &a_layer),
        &silent,
        20,
    )
    .await;
    drop(silent);

    println!(
        "\n## The syncers' cost to an idle Redis\n\n| instances | Redis CPU per second | commands per second | bytes per second |\n| --- | --- | --- | --- |"
    );
    tick_cost(&server, 1, 10).await;
    tick_cost(&server, 10, 10).await;

    // Memory per entry and the index's share.
    let used = |info: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let entries = keys(&server, "bench:e:*").await;
    let index = keys(&server, "bench:t:*").await;
    let entry_bytes = memory_usage(&server, &entries).await;
    let index_bytes = memory_usage(&server, &index).await;
    println!("\n## Redis memory\n");
    println!(
        "{} entries; used_memory grew {} bytes = {:.0} bytes per entry; entries' own keys {:.0} bytes each; index sets {} keys, {:.0} bytes per entry ({:.1}% of the entries' memory)",
        entries.len(),
        used(&after) - used(&before),
        (used(&after) - used(&before)) as f64 / entries.len() as f64,
        entry_bytes as f64 / entries.len() as f64,
        index.len(),
        index_bytes as f64 / entries.len() as f64,
        100.0 * index_bytes as f64 / entry_bytes as f64,
    );

    // Purges with 100,000 entries: 100,000 anonymous entries all holding Post:1, and
    // 100,000 per-user buckets.
    println!("\n## Purges with 100,000 entries\n");
    const BIG: usize = 100_000;
    let anon: Vec<(String, Option<String>)> = (N..BIG).map(|n| (feed(n), None)).collect();
    fill(&a, &server, &anon).await;
    let users: Vec<(String, Option<String>)> = (0..BIG)
        .map(|n| ("{ me }".to_owned(), Some(token(&format!("user{n}")))))
        .collect();
    fill(&a, &server, &users).await;
    let stored = keys(&server, "bench:e:*").await.len();
    println!("Redis holds {stored} entries\n");
    println!("| purge | latency | removed (memory + Redis) |\n| --- | --- | --- |");
    // A purge's caller waits at most the insert timeout (the purge goes on in the
    // background): here it waits for all of it.
    let (_, purger) = app(Some(tier(&server).insert_timeout(Duration::from_secs(60))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Connected, scripts loaded.
    purger
        .purge(&Purge::scope([("sub", "nobody")]).unwrap())
        .await
        .unwrap();
    purger.purge(&Purge::operation("Nothing")).await.unwrap();
    for (name, purge) in [
        (
            "scope: one user (sub=user42)",
            Purge::scope([("sub", "user42")]).unwrap(),
        ),
        (
            "scope: every user bucket (iss=bench)",
            Purge::scope([("iss", "bench")]).unwrap(),
        ),
        (
            "entity tag Post:1 (held by every feed entry)",
            Purge::entity("Post", "1"),
        ),
        ("operation Q7 (a record)", Purge::operation("Q7")),
        (
            "type Post (every feed entry, already purged above)",
            Purge::types(["Post"]),
        ),
    ] {
        let started = Instant::now();
        let removed = purger.purge(&purge).await.unwrap().removed;
        println!(
            "| {name} | {:.2} ms | {removed} |",
            started.elapsed().as_secs_f64() * 1e3
        );
    }

    // Outage: requests that miss memory, with Redis refusing connections, then with Redis
    // alive but not answering (DEBUG SLEEP), against a layer without Redis.
    println!("\n## Redis down (memory misses, one at a time)\n");
    println!("| situation | p50 | p99 | requests |\n| --- | --- | --- | --- |");
    let (plain, _) = app(None);
    let mut baseline = Vec::new();
    for n in 0..200 {
        baseline.push(timed(&plain, &feed(1_000_000 + n), None).await.0);
    }
    summary("no Redis tier (baseline)", baseline);
    let (d, _) = app(Some(tier(&server).cool_down(Duration::from_secs(60))));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Redis hangs: the first calls wait for the fetch timeout, then the breaker opens.
    let mut hang = server.connection().await;
    let sleeping = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(3)
            .query_async(&mut hang)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut closed = Vec::new();
    let mut open = Vec::new();
    for n in 0..200 {
        let (took, _) = timed(&d, &feed(2_000_000 + n), None).await;
        if n < 3 {
            closed.push(took)
        } else {
            open.push(took)
        }
    }
    summary("Redis hanging, breaker closed (first 3 requests)", closed);
    summary("Redis hanging, breaker open", open);
    let _ = sleeping.await;
    server.kill();
    let (e, _) = app(Some(tier(&server).cool_down(Duration::from_secs(60))));
    let mut refused = Vec::new();
    for n in 0..200 {
        refused.push(timed(&e, &feed(3_000_000 + n), None).await.0);
    }
    summary(
        "Redis killed (connection refused; breaker opens after 3)",
        refused,
    );
}
