//! The request path's components, one at a time, so a regression in `hit_path` shows at
//! the component that caused it: bucket and key derivation, prepared-request lookup (and
//! preparing a text not seen before), rule matching, HS256 verification against a
//! verified-token cache hit, the revocation check (empty, and with 1,000,000 revoked
//! `jti`s), and a memory-store get (10 and 100,000 entries).
//!
//! The shared tier's L2 fetch is measured by `benches/redis_tier.rs` (feature `redis`; it
//! starts its own `redis-server`), the whole request by `benches/hit_path.rs`.
//!
//! `cargo bench -p scoped-cache --features bench-internals --bench components`
//!
//! The components come from `scoped_cache::bench_internals`, which the internal
//! `bench-internals` feature exposes; it is not an API.

use criterion::{Criterion, criterion_group, criterion_main};
use scoped_cache::bench_internals::{
    BucketDerivation, KeyDerivation, PreparedRequest, RevocationCheck, RuleMatching, StoreGet,
    TokenVerification,
};

/// The request `hit_path` sends for a scoped answer.
const ME: &str = "{ me }";
/// A small document of two root fields, named.
const FEED: &str = "query Feed { publicPosts { id title } me }";
/// The scope of `Query.me` in the bench layer.
const SCOPE: &[&str] = &["sub"];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("component");

    // Each case is set up when it first runs, so a filtered run skips the others' setup
    // (a million revocations, a hundred thousand entries).
    let mut bucket = None;
    group.bench_function("bucket_derive", |b| {
        let bucket = bucket.get_or_insert_with(|| BucketDerivation::new(SCOPE).unwrap());
        b.iter(|| bucket.run())
    });
    let mut key = None;
    group.bench_function("key_derivation", |b| {
        let key = key.get_or_insert_with(|| KeyDerivation::new(SCOPE, ME).unwrap());
        b.iter(|| key.run())
    });

    let mut prepared = None;
    group.bench_function("prepared_lookup_hit", |b| {
        let prepared = prepared.get_or_insert_with(|| PreparedRequest::new(FEED).unwrap());
        b.iter(|| assert!(prepared.lookup()))
    });
    let mut preparing = None;
    group.bench_function("prepare_miss", |b| {
        let preparing = preparing.get_or_insert_with(|| PreparedRequest::new(FEED).unwrap());
        b.iter(|| assert!(preparing.prepare()))
    });
    let mut rules = None;
    group.bench_function("rule_matching", |b| {
        let rules = rules.get_or_insert_with(|| RuleMatching::new(FEED).unwrap());
        b.iter(|| rules.run())
    });

    let mut signature = None;
    group.bench_function("verify_hs256_signature", |b| {
        let signature = signature.get_or_insert_with(|| TokenVerification::new(false).unwrap());
        b.iter(|| assert!(matches!(signature.run(), Some(Ok(_)))))
    });
    let mut cached = None;
    group.bench_function("verify_hs256_cached", |b| {
        let cached = cached.get_or_insert_with(|| TokenVerification::new(true).unwrap());
        b.iter(|| assert!(matches!(cached.run(), Some(Ok(_)))))
    });

    let mut empty = None;
    group.bench_function("revocation_empty", |b| {
        let empty = empty.get_or_insert_with(|| RevocationCheck::new(0).unwrap());
        b.iter(|| assert!(!empty.run()))
    });
    let mut million = None;
    group.bench_function("revocation_1m", |b| {
        let million = million.get_or_insert_with(|| RevocationCheck::new(1_000_000).unwrap());
        b.iter(|| assert!(!million.run()))
    });

    let mut small = None;
    group.bench_function("store_get_10", |b| {
        let small = small.get_or_insert_with(|| StoreGet::new(10).unwrap());
        b.iter(|| assert!(small.run()))
    });
    let mut large = None;
    group.bench_function("store_get_100k", |b| {
        let large = large.get_or_insert_with(|| StoreGet::new(100_000).unwrap());
        b.iter(|| assert!(large.run()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
