//! The cost of a cache HIT through the whole layer, against a bare axum handler and an
//! uncached GraphQL execution.
//!
//! `cargo bench -p scoped-cache --bench hit_path`

mod common;

use axum::Router;
use axum::routing::post;
use common::{call, graphql, request};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use scoped_cache::{Revoke, RoutePolicy};
use serde_json::json;

const SECRET: &[u8] = b"benchmark-secret-that-is-32-bytes";

fn build_app(rt: &tokio::runtime::Runtime, revoked: usize) -> Router {
    let layer = common::builder()
        .route("/nocache", RoutePolicy::verify_only())
        .route("/plain", RoutePolicy::verify_only())
        .build()
        .unwrap();
    // Revoked tokens the benchmark's token is not among: the check then looks its `jti`
    // up in a table of this size.
    for n in 0..revoked {
        let jti = format!("{n:08x}-0000-4000-8000-{n:012x}");
        let exp = get_current_timestamp() + 86_400;
        rt.block_on(layer.revoke(&Revoke::token_unix(jti, exp)))
            .unwrap();
    }
    Router::new()
        .route("/graphql", post(graphql))
        .route("/nocache", post(graphql))
        .route("/plain", post(|| async { r#"{"data":{"ok":true}}"# }))
        .with_state(common::schema())
        .layer(layer)
}

fn token() -> String {
    let now = get_current_timestamp();
    let claims = json!({
        "sub": "u1", "iss": "bench", "aud": "bench", "iat": now, "exp": now + 86_400,
        "jti": "5b0d1c3e-8f2a-4c6b-9e7d-1a2b3c4d5e6f",
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = build_app(&rt, 0);
    let revoked_app = build_app(&rt, 1_000_000);
    let bare = Router::new().route("/plain", post(|| async { r#"{"data":{"ok":true}}"# }));
    let token = token();
    let feed = "{ publicPosts { id title } }";
    // Warm both entries.
    rt.block_on(call(&app, request("/graphql", None, feed)));
    rt.block_on(call(&app, request("/graphql", Some(&token), "{ me }")));
    rt.block_on(call(
        &revoked_app,
        request("/graphql", Some(&token), "{ me }"),
    ));

    let mut group = c.benchmark_group("request");
    group.bench_function("bare_axum_handler", |b| {
        b.to_async(&rt)
            .iter(|| call(&bare, request("/plain", None, feed)))
    });
    group.bench_function("verify_only_hs256", |b| {
        b.to_async(&rt)
            .iter(|| call(&app, request("/plain", Some(&token), feed)))
    });
    group.bench_function("hit_anonymous", |b| {
        b.to_async(&rt)
            .iter(|| call(&app, request("/graphql", None, feed)))
    });
    group.bench_function("hit_hs256_scoped", |b| {
        b.to_async(&rt)
            .iter(|| call(&app, request("/graphql", Some(&token), "{ me }")))
    });
    group.bench_function("hit_hs256_scoped_1m_revoked", |b| {
        b.to_async(&rt)
            .iter(|| call(&revoked_app, request("/graphql", Some(&token), "{ me }")))
    });
    group.bench_function("uncached_execution", |b| {
        b.to_async(&rt)
            .iter(|| call(&app, request("/nocache", None, feed)))
    });
    // The same hit with a real Prometheus recorder installed: every answer is counted.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    {
        let _recording = metrics::set_default_local_recorder(&recorder);
        let metered = build_app(&rt, 0);
        rt.block_on(call(&metered, request("/graphql", Some(&token), "{ me }")));
        group.bench_function("hit_hs256_scoped_prometheus", |b| {
            b.to_async(&rt)
                .iter(|| call(&metered, request("/graphql", Some(&token), "{ me }")))
        });
    }
    assert!(
        recorder
            .handle()
            .render()
            .contains("scoped_cache_responses_total")
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
