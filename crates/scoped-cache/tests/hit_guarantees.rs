//! What the lean HIT path must keep: a hit's headers as private as its miss's (and no panic
//! on an entry with thousands of header values), credentials that are not `b64token`s
//! refused whether or not a token is cached. (A cached token's expiry is checked by the
//! unit tests of `jwt/verify.rs` and `jwt/validation.rs`, against an explicit clock.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use common::*;
use http::{Request, StatusCode};
use scoped_cache::ScopedCacheLayer;
use serde_json::json;

/// A handler answering every request with a clean GraphQL body and `extra` headers.
fn header_app(
    layer: ScopedCacheLayer,
    extra: Arc<Vec<(&'static str, &'static str)>>,
) -> (Router, Arc<AtomicU64>) {
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    let handler = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let extra = Arc::clone(&extra);
        async move {
            let mut builder = Response::builder().header("content-type", "application/json");
            for (name, value) in extra.iter() {
                builder = builder.header(*name, *value);
            }
            builder
                .body(Body::from(json!({"data": {"me": {"run": n}}}).to_string()))
                .unwrap()
        }
    };
    let router = Router::new()
        .route("/graphql", post(handler).get(handler_get()))
        .layer(layer);
    (router, runs)
}

fn handler_get() -> axum::routing::MethodRouter {
    axum::routing::get(|| async {
        Response::builder()
            .header("content-type", "application/json")
            .header("cache-control", "public, max-age=60, s-maxage=300")
            .body(Body::from(json!({"data": {"me": {"run": 0}}}).to_string()))
            .unwrap()
    })
}

/// An application answer with many representation header lines (here `Content-Language`)
/// is stored; the HIT that serves it must not panic. `cache::served_headers` sizes its map
/// with `HeaderMap::with_capacity(stored.len() + 6)`, which panics ("size overflows
/// MAX_SIZE") once the entry holds more than 24,570 header values; `HeaderMap::clone`,
/// which the code before the change used, does not.
#[tokio::test]
async fn a_hit_on_an_entry_with_many_header_values_does_not_panic() {
    let extra: Vec<(&str, &str)> =
        std::iter::repeat_n(("content-language", "en"), 25_000).collect();
    let (app, runs) = header_app(builder().build().unwrap(), Arc::new(extra));
    let first = send(&app, query("/graphql", None, "{ me { sub } }")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    // The HIT: the service future panics inside `served_headers`.
    let outcome = tokio::spawn({
        let app = app.clone();
        async move { send(&app, query("/graphql", None, "{ me { sub } }")).await }
    })
    .await;
    let second = match outcome {
        Ok(reply) => reply,
        Err(err) => panic!("the HIT panicked: {err}"),
    };
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Scoped entries are stored already private: a HIT (and a 304) must carry exactly what a
/// MISS carries, `public` and `s-maxage` removed.
#[tokio::test]
async fn a_scoped_hit_is_private_like_its_miss() {
    let extra = vec![("cache-control", "public, max-age=60, s-maxage=300")];
    let (app, runs) = header_app(builder().build().unwrap(), Arc::new(extra));
    let alice = member("alice");
    let miss = send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    assert_eq!(miss.x_cache(), "MISS");
    let hit = send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(miss.headers["cache-control"], "private, max-age=60");
    assert_eq!(
        hit.headers
            .get_all("cache-control")
            .iter()
            .collect::<Vec<_>>(),
        vec!["private, max-age=60"]
    );
    // Another bucket: a MISS of its own.
    let bob = member("bob");
    let other = send(&app, query("/graphql", Some(&bob), "{ me { sub } }")).await;
    assert_eq!(other.x_cache(), "MISS");

    // GET: a 304 for the same bucket is private too.
    let (app, _) = header_app(builder().build().unwrap(), Arc::new(vec![]));
    let first = send(
        &app,
        get("/graphql", Some(&alice), &[("query", "{ me { sub } }")]),
    )
    .await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.headers["cache-control"], "private, max-age=60");
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    let mut req = get("/graphql", Some(&alice), &[("query", "{ me { sub } }")]);
    req.headers_mut()
        .insert("if-none-match", etag.parse().unwrap());
    let revalidated = send(&app, req).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.x_cache(), "HIT");
    assert_eq!(revalidated.headers["cache-control"], "private, max-age=60");
    // Bob's request with Alice's ETag is not confirmed.
    let mut req = get("/graphql", Some(&bob), &[("query", "{ me { sub } }")]);
    req.headers_mut()
        .insert("if-none-match", etag.parse().unwrap());
    let foreign = send(&app, req).await;
    assert_eq!(foreign.status, StatusCode::OK);
}

/// The b64token check now lives in the verifier, after the token cache: a credential that
/// is not a b64token is still refused, also when a valid token is its prefix and cached.
#[tokio::test]
async fn credentials_that_are_not_b64tokens_are_refused_whether_or_not_cached() {
    let (app, _) = app();
    let alice = member("alice");
    let ok = send(&app, query("/graphql", Some(&alice), "{ renderId }")).await;
    assert_eq!(ok.status, StatusCode::OK);
    for bad in [
        format!("{alice} x"),
        format!("{alice}\""),
        format!("x {alice}"),
        format!("{alice},"),
        format!("{alice}é"),
    ] {
        let req = Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {bad}"))
            .body(Body::from(json!({"query": "{ renderId }"}).to_string()))
            .unwrap();
        let reply = send(&app, req).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    // The valid token, with surrounding spaces, still verifies from the cache.
    let req = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer   {alice}  "))
        .body(Body::from(json!({"query": "{ renderId }"}).to_string()))
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
}
