//! What the layer spends on a request it has never seen, by document size: the guard's
//! checks and the analysis must grow linearly (a hostile caller changes one byte per
//! request, so no cache helps). The handler answers a constant, so only the layer is timed.
//!
//! `cargo bench -p scoped-cache --bench analysis`
//!
//! Compare time per KiB across sizes: flat means linear.

use std::sync::atomic::{AtomicU64, Ordering};

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use jsonwebtoken::Algorithm;
use scoped_cache::{RoutePolicy, ScopedCacheLayer, Verifier};

fn app() -> Router {
    let layer = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(Algorithm::HS256, b"benchmark-secret-that-is-32-bytes").any_audience(),
        )
        .max_request_bytes(16 * 1024 * 1024)
        .route("/graphql", RoutePolicy::cached())
        .route("/nocache", RoutePolicy::verify_only())
        .build()
        .unwrap();
    let constant = || async { ([("content-type", "application/json")], r#"{"data":{}}"#) };
    Router::new()
        .route("/graphql", post(constant))
        .route("/nocache", post(constant))
        .layer(layer)
}

/// A document of `n` units, in one of three shapes a hostile caller would pick.
fn document(shape: &str, n: usize) -> String {
    match shape {
        // Distinct root fields: the quadratic case of old.
        "root_fields" => format!(
            "{{{} }}",
            (0..n).map(|i| format!(" f{i}")).collect::<String>()
        ),
        // One root field under many aliases: stays cacheable, every selection analysed.
        "aliases" => format!(
            "{{{} }}",
            (0..n).map(|i| format!(" a{i}: f")).collect::<String>()
        ),
        // A chain of fragments, each spreading the next twice.
        _ => {
            let mut doc = String::from("{ ...F0 }");
            for i in 0..n {
                doc.push_str(&format!(
                    " fragment F{i} on Query {{ f ...F{} ...F{} }}",
                    i + 1,
                    i + 1
                ));
            }
            doc.push_str(&format!(" fragment F{n} on Query {{ f }}"));
            doc
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = app();
    let unique = AtomicU64::new(0);
    for shape in ["root_fields", "aliases", "fragments"] {
        let mut group = c.benchmark_group(format!("unseen_document/{shape}"));
        group.sample_size(10);
        for n in [1_000, 10_000, 80_000] {
            let body = document(shape, n);
            group.throughput(Throughput::Bytes(body.len() as u64));
            for path in ["/graphql", "/nocache"] {
                group.bench_with_input(BenchmarkId::new(path, n), &body, |b, body| {
                    b.to_async(&rt).iter_batched(
                        || {
                            // A fresh comment each time defeats the prepared-request cache.
                            let n = unique.fetch_add(1, Ordering::Relaxed);
                            let text = format!("{body} # {n}");
                            Request::post(path)
                                .header("content-type", "application/json")
                                .body(Body::from(serde_json::json!({ "query": text }).to_string()))
                                .unwrap()
                        },
                        |req| common::call(&app, req),
                        BatchSize::PerIteration,
                    )
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
