//! Measuring the shared tier through layers: one request's latency and tier, percentiles,
//! readiness, and how fast a change on one instance reaches another.

use std::time::Duration;

use axum::Router;
use scoped_cache::{Purge, ScopedCacheLayer};
use tokio::time::Instant;
use tower::ServiceExt;

use super::{request, token};

/// Waits until `app` is in step with Redis (it takes tokens again).
pub(crate) async fn in_step(app: &Router) {
    let probe = token("probe");
    for _ in 0..2000 {
        let response = app
            .clone()
            .oneshot(request("/graphql", Some(&probe), "{ me }"))
            .await
            .unwrap();
        if response.status() != 503 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never in step");
}

pub(crate) async fn status(app: &Router, doc: &str, token: Option<&str>) -> u16 {
    app.clone()
        .oneshot(request("/graphql", token, doc))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// From a fleet-wide answer on A until B drops its memory copy (purges) and refuses the
/// token (revocations); B asks every 100 µs.
pub(crate) async fn convergence(
    name: &str,
    a: (&Router, &ScopedCacheLayer),
    b: &Router,
    rounds: usize,
) {
    let (a, a_layer) = a;
    let mut purges = Vec::new();
    let mut revocations = Vec::new();
    for round in 0..rounds {
        let doc = format!("query Conv{round} {{ publicPosts {{ id }} }}");
        timed(a, &doc, None).await;
        while timed(b, &doc, None).await.1 != "memory" {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let purged = a_layer
            .purge(&Purge::operation(format!("Conv{round}")))
            .await
            .unwrap();
        assert!(purged.fleet_wide);
        while timed(b, &doc, None).await.1 == "memory" {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        purges.push(started.elapsed());

        let user = token(&format!("{name}-{round}"));
        let me = "{ me }";
        assert_eq!(status(b, me, Some(&user)).await, 200);
        // Minted in an earlier second than the revocation's cut-off.
        let started = Instant::now();
        let revoked = a_layer
            .revoke(&scoped_cache::Revoke::subject(
                format!("{name}-{round}"),
                std::time::SystemTime::now(),
            ))
            .await
            .unwrap();
        assert!(revoked.fleet_wide);
        while status(b, me, Some(&user)).await != 401 {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        revocations.push(started.elapsed());
    }
    summary(&format!("purge, {name}"), purges);
    summary(&format!("revocation, {name}"), revocations);
}

/// One request; its latency and `x-cache-tier`.
pub(crate) async fn timed(app: &Router, doc: &str, token: Option<&str>) -> (Duration, String) {
    let started = Instant::now();
    let response = app
        .clone()
        .oneshot(request("/graphql", token, doc))
        .await
        .unwrap();
    let tier = response
        .headers()
        .get("x-cache-tier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    assert_eq!(response.status(), 200);
    let _ = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    (started.elapsed(), tier)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "| {name} | {:.1} µs | {:.1} µs | {} |",
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}
