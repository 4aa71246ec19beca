//! Asymmetric verification against a verified-token cache hit, alone (verify-only route,
//! trivial handler) and on the whole cache HIT path.
//!
//! `cargo bench -p scoped-cache --bench verify`

use std::time::Duration;

mod common;

use axum::Router;
use axum::routing::post;
use common::{call, graphql};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use scoped_cache::{RoutePolicy, Rule, Scope, ScopedCacheLayer, Verifier};
use serde_json::json;

const RSA_PUBLIC: &str = include_str!("../testdata/rsa_public.pem");
const RSA_PRIVATE: &str = include_str!("../testdata/rsa_private.pem");
const EC_PUBLIC: &str = include_str!("../testdata/ec_p256_public.pem");
const EC_PRIVATE: &str = include_str!("../testdata/ec_p256_private.pem");

fn app(verifier: Verifier, token_cache: bool) -> Router {
    let layer = ScopedCacheLayer::builder()
        .verifier(verifier.issuer(["bench"]).audience(["bench"]))
        .token_cache(token_cache)
        .default_rule(Rule::new().max_age(Duration::from_secs(3600)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub"])))
        .route("/graphql", RoutePolicy::cached())
        .route("/plain", RoutePolicy::verify_only())
        .build()
        .unwrap();
    Router::new()
        .route("/graphql", post(graphql))
        .route("/plain", post(|| async { r#"{"data":{"ok":true}}"# }))
        .with_state(common::schema())
        .layer(layer)
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = json!({"sub": "u1", "iss": "bench", "aud": "bench", "exp": get_current_timestamp() + 86_400});
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = [
        (
            "rs256",
            Verifier::from_rsa_pem(Algorithm::RS256, RSA_PUBLIC),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            ),
        ),
        (
            "es256",
            Verifier::from_ec_pem(Algorithm::ES256, EC_PUBLIC),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            ),
        ),
    ];
    let mut group = c.benchmark_group("verify");
    for (name, verifier, token) in cases {
        for (cache_name, cached) in [("verify", false), ("token_cache_hit", true)] {
            let app = app(verifier.clone(), cached);
            rt.block_on(call(
                &app,
                common::request("/graphql", Some(&token), "{ me }"),
            ));
            group.bench_function(format!("{name}/{cache_name}/verify_only_route"), |b| {
                b.to_async(&rt)
                    .iter(|| call(&app, common::request("/plain", Some(&token), "{ me }")))
            });
            group.bench_function(format!("{name}/{cache_name}/graphql_hit"), |b| {
                b.to_async(&rt)
                    .iter(|| call(&app, common::request("/graphql", Some(&token), "{ me }")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
