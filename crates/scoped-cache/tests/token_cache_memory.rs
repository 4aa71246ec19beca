//! The verified-token cache's byte bound holds in resident memory, for tokens whose parsed
//! claims cost far more than their text (a few hundred small group ids, as identity
//! providers issue). Alone in its binary: resident memory is the process's.

mod common;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use scoped_cache::{RoutePolicy, ScopedCacheLayer, Verifier};
use serde_json::json;

use common::{AUDIENCE, ISSUER, SECRET, send, token};

/// The cache's documented default bound.
const BOUND: u64 = 16 * 1024 * 1024;

fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A token of `groups` small group ids, unique by `n`, just under the default 8 KiB
/// token bound.
fn group_token(n: usize, groups: usize) -> String {
    let ids: Vec<String> = (0..groups).map(|g| format!("g{g}")).collect();
    token(json!({ "sub": format!("user-{n}"), "groups": ids }))
}

#[tokio::test]
async fn the_token_cache_bound_holds_in_resident_memory() {
    let layer = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(scoped_cache::Algorithm::HS256, SECRET)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .route("/whoami", RoutePolicy::verify_only())
        .build()
        .unwrap();
    let app: Router = Router::new()
        .route("/whoami", get(|| async { "ok" }))
        .layer(layer);
    let ask = |token: String| {
        let app = app.clone();
        async move {
            let request = http::Request::get("/whoami")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap();
            send(&app, request).await.status
        }
    };
    let groups = 800;
    assert!(group_token(0, groups).len() < 8 * 1024);
    // Everything the flood needs besides the cache, warmed up first.
    for n in 0..8 {
        assert_eq!(ask(group_token(n, groups)).await, StatusCode::OK);
    }
    let before = resident();
    for n in 0..4_000 {
        assert_eq!(ask(group_token(n, groups)).await, StatusCode::OK);
    }
    // moka evicts in batches: a few more requests apply what the flood left pending.
    let settled = group_token(0, groups);
    for _ in 0..256 {
        ask(settled.clone()).await;
    }
    let grown = resident().saturating_sub(before);
    eprintln!("resident memory grew by {} KiB", grown >> 10);
    // Each token's 800 ids cost about 60 KB parsed, against 8 KB of text. Weighed by its
    // length, as the cache once did, a thousand tokens stay: resident memory grew by
    // 77 MiB (measured). Weighed by what it holds: 26 MiB, the bound plus moka's pending
    // batch of 64 entries and the allocator's own slack.
    assert!(
        grown <= 2 * BOUND,
        "resident memory grew by {} MiB against a bound of {} MiB",
        grown >> 20,
        BOUND >> 20
    );
}
