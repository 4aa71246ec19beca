//! Whether a HIT costs the same with 10 entries and with 1,000,000, and what an entry
//! really costs in memory: resident memory growth per entry against the weight the byte
//! bound counts (`layer.stats().bytes`) and the body.
//!
//! `cargo bench -p scoped-cache --bench store_scale`   (ENTRIES=1000000 by default)

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use common::{call, graphql, request, token};

const HITS: u32 = 200_000;

/// Resident memory of this process, bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Mean time of a HIT for `token`, over `HITS` requests.
fn hit_time(rt: &tokio::runtime::Runtime, app: &Router, token: &str) -> Duration {
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..HITS {
            call(app, request("/graphql", Some(token), "{ me }")).await;
        }
    });
    started.elapsed() / HITS
}

fn main() {
    let entries: usize = std::env::var("ENTRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = common::builder()
        .max_bytes(8 * 1024 * 1024 * 1024)
        // The token cache stays small: the growth measured is the response cache's.
        .token_cache_bytes(1024 * 1024)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/graphql", post(graphql))
        .with_state(common::schema())
        .layer(layer.clone());

    let first = token("user0");
    for n in 0..10 {
        rt.block_on(call(
            &app,
            request("/graphql", Some(&token(&format!("user{n}"))), "{ me }"),
        ));
    }
    let small = hit_time(&rt, &app, &first);
    let body = rt.block_on(call(&app, request("/graphql", Some(&first), "{ me }")));

    let (rss_before, stats_before) = (resident(), layer.stats());
    for n in 10..entries {
        let user = token(&format!("user{n}"));
        rt.block_on(call(&app, request("/graphql", Some(&user), "{ me }")));
    }
    let (rss_after, stats_after) = (resident(), layer.stats());
    let large = hit_time(&rt, &app, &first);

    let added = (stats_after.entries - stats_before.entries) as f64;
    println!("| | 10 entries | {} entries |", stats_after.entries);
    println!("| --- | --- | --- |");
    println!(
        "| HIT, HS256, scoped (mean of {HITS}) | {:.2} µs | {:.2} µs ({:+.1}%) |",
        small.as_secs_f64() * 1e6,
        large.as_secs_f64() * 1e6,
        100.0 * (large.as_secs_f64() / small.as_secs_f64() - 1.0)
    );
    println!();
    println!(
        "per entry: body {body} bytes; resident memory growth {:.0} bytes; the byte bound counts {:.0} bytes ({:+.1}% against resident)",
        (rss_after - rss_before) as f64 / added,
        (stats_after.bytes - stats_before.bytes) as f64 / added,
        100.0
            * ((stats_after.bytes - stats_before.bytes) as f64 / (rss_after - rss_before) as f64
                - 1.0)
    );
}
