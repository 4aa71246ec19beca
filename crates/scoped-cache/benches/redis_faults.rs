//! The fleet under Redis faults, measured against a real `redis-server` this benchmark
//! starts itself, with real faults: `DEBUG SLEEP`, `CLIENT PAUSE`, a restart from a
//! snapshot, a full Redis, a user without `+subscribe`, and one instance's link stalled or
//! cut by a TCP proxy.
//!
//! Two instances: A talks to Redis directly, B through a proxy. In each round B holds a
//! feed answer in memory and has taken a user's token; a fault begins; part-way into it A
//! purges the feed and revokes the user; B is asked every millisecond until it no longer
//! serves that answer (it applied the purge, or stood down) and no longer takes the token.
//! Meanwhile B answers a stream of memory misses, whose latency is the fault's added cost.
//!
//! `cargo bench -p scoped-cache --features redis --bench redis_faults`
//! (`FAULT_ROUNDS=n` rounds per fault, 10 by default).
//!
//! Prints tables; numbers are for BENCHMARKS and the README, never asserted.

mod common;
#[path = "../tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::{layered, request, token};
use http_body_util::BodyExt;
use proxy::{Mode, Proxy};
use redis_server::RedisServer;
use scoped_cache::{Purge, RedisTier, Revoke, ScopedCacheLayer};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tower::ServiceExt;

/// How long B may take to stop serving a change before the round is reported as stuck.
const GIVE_UP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// No fault: the baseline, with the same timings as the others.
    Healthy,
    /// B's Redis user lacks `+subscribe`: it learns changes from the journal alone.
    NoSubscribe,
    /// B's link to Redis passes no bytes (connections stay open).
    Stalled,
    /// B's link to Redis closes every connection and refuses new ones.
    Cut,
    /// As `Cut`, for longer than `max_lag` (5 s): B stands down.
    CutPastMaxLag,
    /// `CLIENT PAUSE .. WRITE`: reads answer, writes wait.
    PauseWrites,
    /// `CLIENT PAUSE .. ALL`.
    PauseAll,
    /// `DEBUG SLEEP`: the server itself is busy.
    DebugSleep,
    /// `maxmemory` set to what Redis holds (`noeviction`): writes are refused with OOM.
    Full,
    /// Redis killed, then started again from a snapshot taken as the fault began.
    Restart,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::Healthy => "none (healthy Redis)",
            Self::NoSubscribe => "B may not SUBSCRIBE",
            Self::Stalled => "B's link stalled 1 s",
            Self::Cut => "B's link cut 1 s",
            Self::CutPastMaxLag => "B's link cut 8 s (> max_lag)",
            Self::PauseWrites => "CLIENT PAUSE WRITE 1 s",
            Self::PauseAll => "CLIENT PAUSE ALL 1 s",
            Self::DebugSleep => "DEBUG SLEEP 1 s",
            Self::Full => "Redis full 1 s (OOM on writes)",
            Self::Restart => "restart from a snapshot, down 1 s",
        }
    }

    fn length(self) -> Duration {
        match self {
            Self::CutPastMaxLag => Duration::from_secs(8),
            _ => Duration::from_secs(1),
        }
    }
}

/// The Redis server and the proxy in front of B.
struct World {
    server: Arc<Mutex<RedisServer>>,
    port: u16,
    proxy: Proxy,
}

impl World {
    async fn redis<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut conn)
            .await
    }

    /// Starts `fault`; it is in effect when this returns.
    async fn begin(&self, fault: Fault) {
        let held = fault.length().as_millis().to_string();
        match fault {
            Fault::Healthy | Fault::NoSubscribe => {}
            Fault::Stalled => self.proxy.set(Mode::Stalled),
            Fault::Cut | Fault::CutPastMaxLag => self.proxy.set(Mode::Cut),
            Fault::PauseWrites => {
                let _: () = self
                    .redis(&["CLIENT", "PAUSE", &held, "WRITE"])
                    .await
                    .unwrap();
            }
            Fault::PauseAll => {
                let _: () = self
                    .redis(&["CLIENT", "PAUSE", &held, "ALL"])
                    .await
                    .unwrap();
            }
            Fault::DebugSleep => {
                let port = self.port;
                let secs = fault.length().as_secs_f64().to_string();
                // It answers when the sleep ends: from a task of its own.
                tokio::spawn(async move {
                    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("DEBUG")
                        .arg("SLEEP")
                        .arg(secs)
                        .query_async::<()>(&mut conn)
                        .await
                });
                // Time for the command to be read; from then on the server holds.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Fault::Full => {
                let used = used_memory(&self.redis::<String>(&["INFO", "memory"]).await.unwrap());
                let _: () = self
                    .redis(&["CONFIG", "SET", "maxmemory", &used.to_string()])
                    .await
                    .unwrap();
            }
            Fault::Restart => {
                let _: () = self.redis(&["SAVE"]).await.unwrap();
                self.server.lock().await.kill();
            }
        }
    }

    /// Ends `fault` (those Redis ends by itself are no-ops).
    async fn end(&self, fault: Fault) {
        match fault {
            Fault::Stalled | Fault::Cut | Fault::CutPastMaxLag => self.proxy.set(Mode::Open),
            Fault::Full => {
                let _: () = self
                    .redis(&["CONFIG", "SET", "maxmemory", "0"])
                    .await
                    .unwrap();
            }
            Fault::Restart => self.server.lock().await.restart().await,
            _ => {}
        }
    }
}

fn used_memory(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

struct Answer {
    took: Duration,
    status: u16,
    tier: String,
    body: bytes::Bytes,
}

async fn ask(app: &Router, doc: &str, token: Option<&str>) -> Answer {
    let started = Instant::now();
    let response = app
        .clone()
        .oneshot(request("/graphql", token, doc))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let tier = response
        .headers()
        .get("x-cache-tier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        took: started.elapsed(),
        status,
        tier,
        body,
    }
}

/// Waits until `app` takes tokens again (an instance out of step answers them `503`).
async fn in_step(app: &Router) {
    let probe = token("probe");
    let deadline = Instant::now() + GIVE_UP;
    while ask(app, "{ me }", Some(&probe)).await.status == 503 {
        assert!(Instant::now() < deadline, "never in step");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asks every millisecond until `done` holds.
async fn until(app: &Router, doc: &str, token: Option<&str>, done: impl Fn(&Answer) -> bool) {
    let deadline = Instant::now() + GIVE_UP;
    while !done(&ask(app, doc, token).await) {
        assert!(Instant::now() < deadline, "B never converged");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[derive(Default)]
struct Samples {
    purge: Vec<Duration>,
    purge_shared: usize,
    revocation: Vec<Duration>,
    revocation_shared: usize,
    /// B's memory misses while the fault lasted.
    misses: Vec<Duration>,
    /// Of which answered other than 200.
    failed: usize,
}

async fn round(
    world: &World,
    fault: Fault,
    n: usize,
    a: (&Router, &ScopedCacheLayer),
    b: &Router,
    samples: &mut Samples,
) {
    let (a, a_layer) = a;
    let doc = format!("query Feed{n} {{ publicPosts {{ id }} renderId }}");
    let sub = format!("user-{n}");
    let user = token(&sub);
    in_step(a).await;
    in_step(b).await;
    ask(a, &doc, None).await;
    let deadline = Instant::now() + GIVE_UP;
    let held = loop {
        let answer = ask(b, &doc, None).await;
        if answer.tier == "memory" {
            break answer.body;
        }
        assert!(Instant::now() < deadline, "B never held the feed");
    };
    assert_eq!(ask(b, "{ me }", Some(&user)).await.status, 200);

    world.begin(fault).await;
    let length = fault.length();
    let began = Instant::now();
    let stream = async {
        let (mut took, mut failed) = (Vec::new(), 0);
        let mut k = 0;
        while began.elapsed() < length {
            let answer = ask(
                b,
                &format!("query Miss{n}x{k} {{ publicPosts {{ id }} }}"),
                None,
            )
            .await;
            took.push(answer.took);
            failed += usize::from(answer.status != 200);
            k += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (took, failed)
    };
    let ends = async {
        tokio::time::sleep_until(began + length).await;
        world.end(fault).await;
    };
    // Changes land at a tenth to nine tenths of the way into the fault.
    let offset = length.mul_f64((n % 9 + 1) as f64 / 10.0);
    let purge = async {
        tokio::time::sleep_until(began + offset).await;
        let started = Instant::now();
        let purged = a_layer.purge(&Purge::operation(format!("Feed{n}"))).await;
        let shared = purged.is_ok_and(|p| p.fleet_wide);
        until(b, &doc, None, |answer| answer.body != held).await;
        (started.elapsed(), shared)
    };
    let revoke = async {
        tokio::time::sleep_until(began + offset).await;
        let started = Instant::now();
        let revoked = a_layer
            .revoke(&Revoke::subject(sub.clone(), std::time::SystemTime::now()))
            .await;
        let shared = revoked.is_ok_and(|r| r.fleet_wide);
        until(b, "{ me }", Some(&user), |answer| answer.status != 200).await;
        (started.elapsed(), shared)
    };
    let ((misses, failed), (), (purge, purge_shared), (revocation, revocation_shared)) =
        tokio::join!(stream, ends, purge, revoke);
    samples.purge.push(purge);
    samples.purge_shared += usize::from(purge_shared);
    samples.revocation.push(revocation);
    samples.revocation_shared += usize::from(revocation_shared);
    samples.misses.extend(misses);
    samples.failed += failed;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
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
    let rounds: usize = std::env::var("FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]).await;
    let port = server.port;
    let world = World {
        server: Arc::new(Mutex::new(server)),
        port,
        proxy: Proxy::start(port).await,
    };
    let _: () = world
        .redis(&[
            "ACL",
            "SETUSER",
            "nosub",
            "on",
            ">nosub-password",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
        ])
        .await
        .unwrap();
    let tier = |url: String| RedisTier::new(url).key_prefix("faults:");
    let (a, a_layer) = layered(Some(tier(format!("redis://127.0.0.1:{port}"))));
    let (b, _) = layered(Some(tier(world.proxy.url())));
    let (silent, _) = layered(Some(tier(format!(
        "redis://nosub:nosub-password@127.0.0.1:{}",
        world.proxy.port
    ))));

    // Entries a flood left behind: what a full Redis holds.
    in_step(&a).await;
    for chunk in (0..2_000).collect::<Vec<_>>().chunks(64) {
        let calls = chunk.iter().map(|n| {
            let doc = format!("query Flood{n} {{ publicPosts {{ id title }} }}");
            let a = &a;
            async move { ask(a, &doc, None).await }
        });
        futures_util::future::join_all(calls).await;
    }

    let mut table = Vec::new();
    let mut n = 0;
    for fault in [
        Fault::Healthy,
        Fault::NoSubscribe,
        Fault::Stalled,
        Fault::Cut,
        Fault::CutPastMaxLag,
        Fault::PauseWrites,
        Fault::PauseAll,
        Fault::DebugSleep,
        Fault::Full,
        // Last: a restart loses the ACL user.
        Fault::Restart,
    ] {
        let b = if fault == Fault::NoSubscribe {
            &silent
        } else {
            &b
        };
        let rounds = if fault == Fault::CutPastMaxLag {
            rounds.div_ceil(2)
        } else {
            rounds
        };
        let mut samples = Samples::default();
        for _ in 0..rounds {
            round(&world, fault, n, (&a, &a_layer), b, &mut samples).await;
            n += 1;
        }
        eprintln!("{} done", fault.name());
        table.push((fault, samples));
    }

    println!(
        "\n## Convergence: from the change on A until B no longer serves it (applied, or B stood down)\n"
    );
    println!(
        "| fault | purge p50 | purge p99 | answered shared | revocation p50 | revocation p99 | answered shared | rounds |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (fault, samples) in &mut table {
        samples.purge.sort();
        samples.revocation.sort();
        let rounds = samples.purge.len();
        println!(
            "| {} | {} | {} | {}/{rounds} | {} | {} | {}/{rounds} | {rounds} |",
            fault.name(),
            ms(percentile(&samples.purge, 0.5)),
            ms(percentile(&samples.purge, 0.99)),
            samples.purge_shared,
            ms(percentile(&samples.revocation, 0.5)),
            ms(percentile(&samples.revocation, 0.99)),
            samples.revocation_shared,
        );
    }
    println!("\n## B's memory misses while the fault lasts (one at a time)\n");
    println!("| fault | p50 | p99 | max | requests | not 200 |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (fault, samples) in &mut table {
        samples.misses.sort();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            fault.name(),
            ms(percentile(&samples.misses, 0.5)),
            ms(percentile(&samples.misses, 0.99)),
            ms(*samples.misses.last().unwrap()),
            samples.misses.len(),
            samples.failed,
        );
    }
}
