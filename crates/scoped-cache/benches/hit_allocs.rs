//! How many allocations a HIT makes, counted with a counting allocator: the request built
//! the same way as in `hit_path`, then the layer's work and the body read. The bare
//! handler's count is printed beside it: the difference is the layer's.
//!
//! `cargo bench -p scoped-cache --bench hit_allocs`
//!
//! `HIT_ALLOCS_ONLY=scoped` (or `bare`, `anonymous`, `prometheus`) runs one row alone, so
//! `valgrind --tool=callgrind` can compare the instructions of two rows or two builds.

mod common;

use std::alloc::System;

use axum::Router;
use axum::routing::post;
use common::{call, graphql, request};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROUNDS: usize = 10_000;

fn allocations() -> usize {
    GLOBAL.stats().allocations + GLOBAL.stats().reallocations
}

/// Allocations per request of `send`, over `ROUNDS` requests (requests built beforehand);
/// `NaN` when the row is not `wanted`.
fn per_request<F>(rt: &tokio::runtime::Runtime, wanted: bool, mut send: F) -> f64
where
    F: FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = usize>>>,
{
    if !wanted {
        return f64::NAN;
    }
    let before = allocations();
    for _ in 0..ROUNDS {
        rt.block_on(send());
    }
    (allocations() - before) as f64 / ROUNDS as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = common::builder().build().unwrap();
    let app = Router::new()
        .route("/graphql", post(graphql))
        .with_state(common::schema())
        .layer(layer);
    let bare = Router::new().route("/plain", post(|| async { r#"{"data":{"me":"u1"}}"# }));
    let token = common::token("u1");
    let feed = "{ publicPosts { id title } }";
    rt.block_on(call(&app, request("/graphql", None, feed)));
    rt.block_on(call(&app, request("/graphql", Some(&token), "{ me }")));

    // The same layer again, with a real Prometheus recorder installed for its requests:
    // every answer is counted.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let recording = metrics::set_default_local_recorder(&recorder);
    let metered = Router::new()
        .route("/graphql", post(graphql))
        .with_state(common::schema())
        .layer(common::builder().build().unwrap());
    rt.block_on(call(&metered, request("/graphql", Some(&token), "{ me }")));
    drop(recording);

    let only = std::env::var("HIT_ALLOCS_ONLY").ok();
    let wanted = |row: &str| only.as_deref().is_none_or(|only| only == row);
    // Each request is built inside the measured closure, as in `hit_path`; building one
    // costs the same for every row, so the bare row shows it.
    let bare_count = per_request(&rt, wanted("bare"), || {
        let bare = bare.clone();
        Box::pin(async move { call(&bare, request("/plain", None, "{ me }")).await })
    });
    let anonymous = per_request(&rt, wanted("anonymous"), || {
        let app = app.clone();
        Box::pin(async move { call(&app, request("/graphql", None, feed)).await })
    });
    let scoped = per_request(&rt, wanted("scoped"), || {
        let (app, token) = (app.clone(), token.clone());
        Box::pin(async move { call(&app, request("/graphql", Some(&token), "{ me }")).await })
    });
    let prometheus = {
        let _recording = metrics::set_default_local_recorder(&recorder);
        per_request(&rt, wanted("prometheus"), || {
            let (app, token) = (metered.clone(), token.clone());
            Box::pin(async move { call(&app, request("/graphql", Some(&token), "{ me }")).await })
        })
    };
    println!("| path | allocations per request | the layer's share |");
    println!("| --- | --- | --- |");
    println!("| bare handler (request, response, body read) | {bare_count:.1} | 0 |");
    println!(
        "| HIT, anonymous | {anonymous:.1} | {:.1} |",
        anonymous - bare_count
    );
    println!(
        "| HIT, HS256 token, scoped | {scoped:.1} | {:.1} |",
        scoped - bare_count
    );
    println!(
        "| HIT, HS256 token, scoped, Prometheus recorder | {prometheus:.1} | {:.1} |",
        prometheus - bare_count
    );
}
