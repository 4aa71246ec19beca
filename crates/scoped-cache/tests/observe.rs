//! What operators are told: a reason for every answer that is not a fresh hit (in the
//! response's extensions, the metrics, the span, and `x-cache-reason` for those allowed),
//! metrics with bounded labels, and readiness.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use common::*;
use http::Request;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use scoped_cache::admin::AdminToken;
use scoped_cache::{Explain, Reason, Revoke, X_CACHE_EXPLAIN, X_CACHE_REASON};
use serde_json::json;
use tower::ServiceExt;
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, field};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const ADMIN: &str = "an-admin-token-for-the-explain-tests";

/// The reason the layer put into the response's extensions, and the one it told in
/// `x-cache-reason`.
async fn reason_of(app: &axum::Router, req: Request<Body>) -> (Option<Reason>, String) {
    let response = app.clone().oneshot(req).await.unwrap();
    let told = response
        .headers()
        .get(X_CACHE_REASON)
        .map_or("-", |v| v.to_str().unwrap())
        .to_owned();
    (response.extensions().get::<Reason>().copied(), told)
}

fn explained() -> axum::Router {
    app_with(builder().explain(Explain::Everyone).build().unwrap()).0
}

#[tokio::test]
async fn every_answer_that_is_not_a_fresh_hit_says_why() {
    let app = explained();
    let alice = member("alice");
    let cases: Vec<(Request<Body>, Option<Reason>, &str)> = vec![
        (
            query("/graphql", None, "{ publicPosts }"),
            Some(Reason::Absent),
            "absent",
        ),
        (query("/graphql", None, "{ publicPosts }"), None, "hit"),
        (
            query("/graphql", None, "{ boom }"),
            Some(Reason::GraphqlErrors),
            "graphql-errors",
        ),
        (
            query("/graphql", None, "{ neverCached }"),
            Some(Reason::NoStore),
            "no-store",
        ),
        (
            query("/graphql", Some(&alice), "{ leaky }"),
            Some(Reason::ClaimOutsideScope),
            "claim-outside-scope",
        ),
        (
            query("/graphql", Some(&alice), "{ privateUnscoped }"),
            Some(Reason::PrivateWithoutScope),
            "private-without-scope",
        ),
        (
            query("/graphql", None, "mutation { touch }"),
            Some(Reason::NotAQuery),
            "not-a-query",
        ),
        (
            query("/graphql", None, "query Debug { publicPosts }"),
            Some(Reason::BypassedByRule),
            "bypassed-by-rule",
        ),
        (
            query("/graphql/nocache", None, "{ publicPosts }"),
            Some(Reason::VerifyOnlyRoute),
            "verify-only-route",
        ),
        (
            post("/graphql", None, json!([{ "query": "{ publicPosts }" }])),
            Some(Reason::NotUnderstood),
            "not-understood",
        ),
        (
            query("/graphql", Some("not.a.token"), "{ publicPosts }"),
            Some(Reason::Unauthorized),
            "unauthorized",
        ),
        (
            query("/members", None, "{ publicPosts }"),
            Some(Reason::Unauthorized),
            "unauthorized",
        ),
        (
            query("/graphql", None, &format!("{{ {} }}", "a {".repeat(200))),
            Some(Reason::Refused),
            "refused",
        ),
    ];
    for (i, (req, want, told)) in cases.into_iter().enumerate() {
        let (reason, header) = reason_of(&app, req).await;
        assert_eq!((reason, header.as_str()), (want, told), "case {i}");
    }
}

#[tokio::test]
async fn a_revoked_token_is_refused_as_revoked() {
    let layer = builder().explain(Explain::Everyone).build().unwrap();
    let (app, _) = app_with(layer.clone());
    let bob = member("bob");
    layer
        .revoke(&Revoke::subject(
            "bob",
            std::time::SystemTime::now() + Duration::from_secs(2),
        ))
        .await
        .unwrap();
    let (reason, told) = reason_of(&app, query("/graphql", Some(&bob), "{ me { sub } }")).await;
    assert_eq!((reason, told.as_str()), (Some(Reason::Revoked), "revoked"));
}

#[tokio::test(start_paused = true)]
async fn stale_answers_say_they_are_stale() {
    let app = app_with(
        builder()
            .explain(Explain::Everyone)
            .default_rule(
                scoped_cache::Rule::new()
                    .max_age(Duration::from_secs(10))
                    .stale_while_revalidate(Duration::from_secs(10)),
            )
            .build()
            .unwrap(),
    )
    .0;
    let q = || query("/graphql", None, "{ echo(a: 1) }");
    assert_eq!(reason_of(&app, q()).await.1, "absent");
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(reason_of(&app, q()).await.1, "stale-while-revalidate");
    // Past every window: gone, as if never stored.
    tokio::time::sleep(Duration::from_millis(10)).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(reason_of(&app, q()).await.1, "absent");
}

#[tokio::test]
async fn only_operators_are_told_why_and_the_app_never_sees_their_header() {
    let layer = builder()
        .explain(Explain::ToOperators(AdminToken::new(ADMIN).unwrap()))
        .build()
        .unwrap();
    let layer_for_purge = layer.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new()
        .route(
            "/graphql",
            axum::routing::post(move |headers: http::HeaderMap| {
                let record = Arc::clone(&record);
                async move {
                    record
                        .lock()
                        .unwrap()
                        .push(headers.contains_key(X_CACHE_EXPLAIN));
                    axum::Json(json!({ "data": { "ok": true } }))
                }
            }),
        )
        .layer(layer);
    let with = |value: &str| {
        let mut req = query("/graphql", None, "{ ok }");
        req.headers_mut()
            .insert(X_CACHE_EXPLAIN, value.parse().unwrap());
        req
    };
    let explained = app.clone().oneshot(with(ADMIN)).await.unwrap();
    assert_eq!(explained.headers()[X_CACHE_REASON], "absent");
    // For the one who asked: no cache in front keeps it.
    let control = explained.headers()[http::header::CACHE_CONTROL]
        .to_str()
        .unwrap();
    assert!(control.contains("private"), "{control}");
    assert_eq!(
        reason_of(&app, with("a-wrong-admin-token-guess")).await.1,
        "-"
    );
    assert_eq!(
        reason_of(&app, query("/graphql", None, "{ ok }")).await.1,
        "-"
    );
    assert_eq!(reason_of(&app, with(ADMIN)).await.1, "hit");
    // A stored miss the client already holds is a 304, and still a miss.
    let etag = app
        .clone()
        .oneshot(query("/graphql", None, "{ ok }"))
        .await
        .unwrap()
        .headers()[http::header::ETAG]
        .clone();
    layer_for_purge
        .purge(&scoped_cache::Purge::all())
        .await
        .unwrap();
    let mut revalidating = with(ADMIN);
    revalidating
        .headers_mut()
        .insert(http::header::IF_NONE_MATCH, etag);
    let (reason, told) = reason_of(&app, revalidating).await;
    assert_eq!((reason, told.as_str()), (Some(Reason::Absent), "absent"));
    // Whatever the header held, the app never saw it.
    assert!(seen.lock().unwrap().iter().all(|saw| !saw));
}

/// Every counter in `snapshotter`, by name and sorted labels.
fn counters(snapshotter: &Snapshotter) -> HashMap<(String, Vec<(String, String)>), u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let (kind, key): (MetricKind, _) = CompositeKey::into_parts(key);
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => {
                    let mut labels: Vec<(String, String)> = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    labels.sort();
                    Some(((key.name().to_owned(), labels), n))
                }
                _ => None,
            }
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_count_every_answer_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = builder().build().unwrap();
    let (app, _) = app_with(layer.clone());
    let secret_sub = "alice-secret-subject-value";
    let alice = member(secret_sub);
    let feed = "query SecretOperationName { publicPosts }";
    send(&app, query("/graphql", None, feed)).await;
    send(&app, query("/graphql", None, feed)).await;
    send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    send(&app, query("/graphql", None, "query Debug { publicPosts }")).await;
    send(
        &app,
        query("/graphql", Some("not.a.token"), "{ publicPosts }"),
    )
    .await;
    send(
        &app,
        query("/graphql", None, &format!("{{ {} }}", "a {".repeat(200))),
    )
    .await;
    layer
        .purge(&scoped_cache::Purge::types(["Post"]))
        .await
        .unwrap();
    layer
        .revoke(&Revoke::token_unix("some-jti", 4_000_000_000))
        .await
        .unwrap();

    let counts = counters(&snapshotter);
    let count = |name: &str, pairs: &[(&str, &str)]| {
        counts
            .get(&(name.to_owned(), labels(pairs)))
            .copied()
            .unwrap_or(0)
    };
    let responses = "scoped_cache_responses_total";
    let route = ("route", "/graphql");
    // A name no rule knows is `other`: clients cannot mint labels.
    let other = [("operation", "other"), ("rule", "default"), route];
    assert_eq!(
        count(responses, &[&other[..], &[("status", "MISS")]].concat()),
        1
    );
    assert_eq!(
        count(responses, &[&other[..], &[("status", "HIT")]].concat()),
        1
    );
    let me = [("operation", "anonymous"), ("rule", "Query.me"), route];
    assert_eq!(
        count(responses, &[&me[..], &[("status", "MISS")]].concat()),
        1
    );
    assert_eq!(
        count(responses, &[&me[..], &[("status", "HIT")]].concat()),
        1
    );
    let debug = [("operation", "Debug"), ("rule", "operation Debug"), route];
    assert_eq!(
        count(responses, &[&debug[..], &[("status", "BYPASS")]].concat()),
        1
    );
    let refused = [
        ("operation", "none"),
        ("rule", "none"),
        route,
        ("status", "REFUSED"),
    ];
    assert_eq!(count(responses, &refused), 2);

    let reasons = "scoped_cache_reasons_total";
    assert_eq!(count(reasons, &[("reason", "absent"), route]), 2);
    assert_eq!(count(reasons, &[("reason", "bypassed-by-rule"), route]), 1);
    assert_eq!(
        count("scoped_cache_auth_failures_total", &[("kind", "malformed")]),
        1
    );
    assert_eq!(
        count("scoped_cache_refusals_total", &[("kind", "too_deep")]),
        1
    );
    assert_eq!(
        count(
            "scoped_cache_purges_total",
            &[("kind", "tags"), ("shared", "true")]
        ),
        1
    );
    assert_eq!(
        count(
            "scoped_cache_revocations_total",
            &[("kind", "jti"), ("shared", "true")]
        ),
        1
    );
    for (name, labels) in counts.keys() {
        for (_, value) in labels {
            assert!(
                !value.contains("secret") && !value.contains('{'),
                "{name} carries a client value: {value}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn executions_and_signature_checks_are_timed_and_caches_measured() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = builder().build().unwrap();
    let (app, _) = app_with(layer.clone());
    let alice = member("alice");
    send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    // The gauges are refreshed every five seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let mut histograms = HashMap::new();
    let mut gauges = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let cache = key
            .labels()
            .find(|l| l.key() == "cache")
            .map(|l| l.value().to_owned());
        match value {
            DebugValue::Histogram(samples) => {
                histograms.insert(key.name().to_owned(), samples.len());
            }
            DebugValue::Gauge(value) => {
                gauges.insert((key.name().to_owned(), cache), value.into_inner());
            }
            DebugValue::Counter(_) => {}
        }
    }
    // One execution (the hit did not run), one signature check (the hit's token came
    // from the verified-token cache).
    assert_eq!(histograms.get("scoped_cache_execution_seconds"), Some(&1));
    assert_eq!(
        histograms.get("scoped_cache_verification_seconds"),
        Some(&1)
    );
    let gauge = |name: &str, cache: &str| gauges.get(&(name.to_owned(), Some(cache.to_owned())));
    assert_eq!(gauge("scoped_cache_entries", "responses"), Some(&1.0));
    assert!(gauge("scoped_cache_bytes", "responses").is_some_and(|b| *b > 0.0));
    assert_eq!(gauge("scoped_cache_entries", "tokens"), Some(&1.0));
    assert!(gauge("scoped_cache_bound", "responses").is_some_and(|b| *b > 0.0));
    let usage: HashMap<_, _> = layer.usage().into_iter().collect();
    assert_eq!(usage["responses"].entries, 1);
}

/// The pseudo-field a captured span's parent's name is held under.
const PARENT: &str = "<parent>";

/// Spans by name, with the fields recorded on them (and their parent's name, under
/// [`PARENT`]).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, HashMap<String, String>)>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Held(HashMap<String, String>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        if let Some(span) = ctx.span(id) {
            if let Some(parent) = span.parent() {
                fields.insert(PARENT.to_owned(), parent.name().to_owned());
            }
            span.extensions_mut().insert(Held(fields));
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(held) = span.extensions_mut().get_mut::<Held>()
        {
            values.record(&mut Fields(&mut held.0));
        }
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let fields = span
                .extensions_mut()
                .remove::<Held>()
                .map(|held| held.0)
                .unwrap_or_default();
            self.0
                .lock()
                .unwrap()
                .push((span.name().to_owned(), fields));
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_request_has_a_span_with_its_outcome_and_a_bucket_hash_not_its_claims() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let (app, _) = app();
    // Other tests of this binary run on other threads without a subscriber, and one of
    // them may register a callsite while this one is being set: it then caches "never".
    // Register every callsite once (a miss, a verification, an execution), then have
    // their interest computed again, and start counting.
    let warm_up = member("warm-up");
    send(&app, query("/graphql", Some(&warm_up), "{ me { sub } }")).await;
    tracing::callsite::rebuild_interest_cache();
    spans.0.lock().unwrap().clear();
    let alice = member("alice-claim-value");
    send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    send(&app, query("/graphql", Some(&alice), "{ me { sub } }")).await;
    send(&app, query("/graphql", None, "{ boom }")).await;

    let spans = spans.0.lock().unwrap().clone();
    let requests: Vec<&HashMap<String, String>> = spans
        .iter()
        .filter(|(name, _)| name == "scoped_cache.request")
        .map(|(_, fields)| fields)
        .collect();
    assert_eq!(requests.len(), 3);
    let field = |i: usize, name: &str| requests[i].get(name).map(String::as_str);
    assert_eq!(field(0, "cache.status"), Some("MISS"));
    assert_eq!(field(0, "scoped_cache.reason"), Some("absent"));
    assert_eq!(field(0, "http.route"), Some("/graphql"));
    assert_eq!(field(0, "scoped_cache.rule"), Some("Query.me"));
    assert_eq!(field(0, "graphql.operation.name"), Some("anonymous"));
    assert_eq!(field(0, "enduser.authenticated"), Some("true"));
    assert_eq!(field(1, "cache.status"), Some("HIT"));
    assert_eq!(field(1, "scoped_cache.reason"), None);
    // One bucket, one hash; never the claim itself.
    assert_eq!(
        field(0, "scoped_cache.bucket"),
        field(1, "scoped_cache.bucket")
    );
    assert!(field(0, "scoped_cache.bucket").is_some_and(|b| b.len() == 16));
    assert_eq!(field(2, "scoped_cache.reason"), Some("graphql-errors"));
    assert_eq!(field(2, "enduser.authenticated"), Some("false"));
    for (_, fields) in &spans {
        assert!(fields.values().all(|v| !v.contains("alice-claim-value")));
    }
    // The token's signature was checked once, in a child span; the hit used the cache.
    let verifications = spans
        .iter()
        .filter(|(name, _)| name == "scoped_cache.verify")
        .count();
    assert_eq!(verifications, 1);
    // Both misses ran the schema in a child span; the hit did not run it.
    let children = |child: &str| {
        spans
            .iter()
            .filter(|(name, _)| name == child)
            .map(|(_, fields)| fields.get(PARENT).map(String::as_str))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        children("scoped_cache.execute"),
        [Some("scoped_cache.request"); 2]
    );
    assert_eq!(
        children("scoped_cache.verify"),
        [Some("scoped_cache.request")]
    );
}

#[tokio::test]
async fn a_layer_with_static_keys_and_no_tier_is_ready() {
    let layer = builder().build().unwrap();
    let readiness = layer.readiness().await;
    assert!(readiness.ready && readiness.keys && readiness.tier.is_none());
}

#[tokio::test]
async fn a_layer_whose_keys_cannot_be_fetched_is_not_ready() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let source = scoped_cache::JwksSource::url(url)
        .fetch_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let layer = scoped_cache::ScopedCacheLayer::builder()
        .verifier(
            scoped_cache::Verifier::jwks(source)
                .issuer([ISSUER])
                .audience([AUDIENCE]),
        )
        .route("/graphql", scoped_cache::RoutePolicy::cached())
        .build()
        .unwrap();
    let readiness = layer.readiness().await;
    assert!(!readiness.ready && !readiness.keys);
}
