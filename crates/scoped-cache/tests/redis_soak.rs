//! A randomized soak: three instances, each behind its own fault proxy, over one real
//! `redis-server`, under a random mix of requests, purges, revocations and faults (cuts,
//! stalls, paused writes, a flush) for a bounded time. Every purge and revocation that was
//! answered fleet-wide is recorded, and every answer is checked as it arrives: past
//! `max_lag` after such an answer, no instance may serve (from its cache) an answer the
//! purge covered, nor take a revoked token.
//!
//! A flush happens only while no instance is cut off or stalled, and none is for `max_lag`
//! and a tick after it: a change Redis lost is written back by the instances that hold it,
//! and one held only by instances cut off at that moment comes back with them, which is
//! outside the promise (the README's limits).
//!
//! `SOAK_SECS` (default 20) sets the duration, `SOAK_SEED` the seed (printed on failure),
//! `SOAK_FAULT_PERCENT` (default 1) how many of the steps start a fault.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use scoped_cache::{Purge, Revoke};
use tokio::time::Instant;

use common::fleet::{FEED, Instance, ME, World, ask, in_step, instance, render, tier};
use common::member;
use common::proxy::{Mode, Proxy};
use common::redis_server::RedisServer;

/// xorshift64*: enough randomness for a schedule, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const USERS: usize = 40;

enum Step {
    Request,
    Purge,
    Revoke,
    Fault,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_breaks_a_fleet_wide_promise_under_random_faults() {
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let fault_percent: u64 = std::env::var("SOAK_FAULT_PERCENT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = Rng(seed);
    let lag = Duration::from_secs(2);
    // A request checks its instance's standing when it starts; allow for its own time.
    let bound = lag + Duration::from_millis(500);

    let server = RedisServer::start().await;
    let world = Arc::new(World::default());
    let proxies = [
        Proxy::start(server.port).await,
        Proxy::start(server.port).await,
        Proxy::start(server.port).await,
    ];
    let instances: Vec<Instance> = proxies
        .iter()
        .map(|p| instance(&world, tier(&p.url()).max_lag(lag)))
        .collect();
    for i in &instances {
        in_step(i).await;
    }
    // Minted now: every later subject revocation covers them.
    let users: Vec<String> = (0..USERS).map(|u| member(&format!("user{u}"))).collect();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // (answered at, highest render id produced before the purge began)
    let mut purges: Vec<(Instant, u64)> = Vec::new();
    // (answered at, user)
    let mut revocations: Vec<(Instant, usize)> = Vec::new();
    let mut revoked_users = 0usize;
    let (mut requests, mut cached, mut faults, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let proxies = Arc::new(proxies);
    // Proxy faults in effect, and no new one before `calm_until` (after a flush).
    let faulty = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut calm_until = Instant::now();
    let mut log: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let which = rng.below(3) as usize;
        let target = &instances[which];
        let step = if rng.below(100) < fault_percent {
            Step::Fault
        } else {
            match rng.below(1000) {
                0..=964 => Step::Request,
                965..=994 => Step::Purge,
                _ => Step::Revoke,
            }
        };
        match step {
            Step::Request => {
                requests += 1;
                let user = rng.below(USERS as u64) as usize;
                let (doc, token) = if rng.below(2) == 0 {
                    (format!("{FEED} v{}: renderId", rng.below(3)), None)
                } else {
                    (ME.to_owned(), Some(users[user].as_str()))
                };
                let started = Instant::now();
                let reply = ask(target, &doc, token).await;
                let served = matches!(reply.x_cache(), "HIT" | "STALE");
                if served {
                    cached += 1;
                }
                if reply.status == StatusCode::SERVICE_UNAVAILABLE {
                    refused += 1;
                }
                if token.is_none() && served {
                    let id = render(&reply);
                    for (at, before) in &purges {
                        assert!(
                            !(started >= *at + bound && id <= *before),
                            "seed {seed}: instance {which} served render {id}, purged at {at:?} (before {before}), at {started:?}; faults: {log:?}"
                        );
                    }
                }
                if token.is_some() && reply.status == StatusCode::OK {
                    for (at, revoked) in &revocations {
                        assert!(
                            !(*revoked == user && started >= *at + bound),
                            "seed {seed}: instance {which} took user{user}'s revoked token at {started:?} (revoked at {at:?}); faults: {log:?}"
                        );
                    }
                }
            }
            Step::Purge => {
                let before = world.renders.load(Ordering::SeqCst);
                let purged = target
                    .layer
                    .purge(&Purge::entity("Post", "1"))
                    .await
                    .unwrap();
                if purged.fleet_wide {
                    purges.push((Instant::now(), before));
                }
            }
            Step::Revoke => {
                // Paced over the run: most requests carry tokens still good.
                let due = (USERS as f64
                    * (1.0 - (deadline - Instant::now()).as_secs_f64() / secs as f64))
                    as usize;
                if revoked_users >= due.min(USERS) {
                    continue;
                }
                let user = revoked_users;
                revoked_users += 1;
                let revoked = target
                    .layer
                    .revoke(&Revoke::subject(
                        format!("user{user}"),
                        std::time::SystemTime::now(),
                    ))
                    .await
                    .unwrap();
                if revoked.fleet_wide {
                    revocations.push((Instant::now(), user));
                }
            }
            Step::Fault => {
                faults += 1;
                let length = Duration::from_millis(300 + rng.below(2700));
                let kind = rng.below(10);
                log.push(format!(
                    "{:?} fault {kind} on {which} for {length:?}",
                    Instant::now()
                ));
                match kind {
                    0..=6 if Instant::now() < calm_until => {}
                    0..=3 => {
                        let (proxies, faulty) = (Arc::clone(&proxies), Arc::clone(&faulty));
                        faulty.fetch_add(1, Ordering::SeqCst);
                        proxies[which].set(Mode::Cut);
                        tokio::spawn(async move {
                            tokio::time::sleep(length).await;
                            proxies[which].set(Mode::Open);
                            faulty.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    4..=6 => {
                        let (proxies, faulty) = (Arc::clone(&proxies), Arc::clone(&faulty));
                        faulty.fetch_add(1, Ordering::SeqCst);
                        proxies[which].set(Mode::Stalled);
                        tokio::spawn(async move {
                            tokio::time::sleep(length.min(Duration::from_secs(2))).await;
                            proxies[which].set(Mode::Open);
                            faulty.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    7..=8 => {
                        // Faults may overlap: one that times out behind another is
                        // still a fault (it runs when the first ends).
                        let mut conn = server.connection().await;
                        let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                            .arg("PAUSE")
                            .arg(length.as_millis().min(1000) as u64)
                            .arg("WRITE")
                            .query_async(&mut conn)
                            .await;
                    }
                    _ if faulty.load(Ordering::SeqCst) > 0 => {}
                    _ => {
                        calm_until = Instant::now() + lag + Duration::from_secs(2);
                        let mut conn = server.connection().await;
                        let _: redis::RedisResult<()> =
                            redis::cmd("FLUSHALL").query_async(&mut conn).await;
                    }
                }
            }
        }
    }
    for proxy in proxies.iter() {
        proxy.set(Mode::Open);
    }
    println!(
        "soak seed {seed}: {requests} requests ({cached} from a cache, {refused} refused 503), {} fleet-wide purges, {} fleet-wide revocations, {faults} faults",
        purges.len(),
        revocations.len()
    );
    assert!(
        !purges.is_empty() && cached > 0,
        "seed {seed}: the soak exercised nothing"
    );
}
