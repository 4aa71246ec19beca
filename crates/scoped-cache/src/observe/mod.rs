//! What the layer tells operators about each request: a [`Reason`] for every answer that
//! is not a fresh hit, counted in metrics (through the [`metrics`] facade), recorded on
//! the request's span (through [`tracing`]), carried in the response's extensions, and
//! sent in the `x-cache-reason` header to those allowed to see it ([`Explain`]).
//!
//! The metrics' names and meanings are in [`names`]; every label is bounded by the
//! configuration (statuses, reasons, kinds, configured routes and rules, the operation
//! names rules give), never a claim value, token or query text.

mod meter;
pub mod names;
mod reason;
mod stats;

use http::{HeaderMap, HeaderName, HeaderValue};
use tracing::Span;
use tracing::field::Empty;

use std::sync::atomic::AtomicBool;

use crate::admin_token::AdminToken;
use crate::health::Usage;
use crate::rejection::{AuthError, RefusalKind};
use crate::throttle::Throttle;

pub(crate) use meter::{Labels, Meter, STATUSES, Series};
pub use reason::Reason;
pub(crate) use stats::Answers;

/// Response header: why an answer was not a fresh hit ([`Reason::as_str`], or `hit`),
/// sent only to a request [`Explain`] allows.
pub const X_CACHE_REASON: HeaderName = HeaderName::from_static("x-cache-reason");

/// Request header carrying the admin token, to be told `x-cache-reason` (with
/// [`Explain::ToOperators`]). Unless the layer explains to nobody ([`Explain::Never`],
/// where the header means nothing), it removes the header from every request: the app
/// never sees it.
pub const X_CACHE_EXPLAIN: HeaderName = HeaderName::from_static("x-cache-explain");

/// Who is told why an answer was not a hit, in the [`X_CACHE_REASON`] response header.
/// Metrics and traces always carry the reason; the header is for debugging one request
/// from a shell.
///
/// ```
/// use scoped_cache::Explain;
/// use scoped_cache::admin::AdminToken;
///
/// // `curl -H "x-cache-explain: $ADMIN_TOKEN" ...` gets `x-cache-reason`.
/// let explain = Explain::ToOperators(AdminToken::new("an-admin-secret-of-16+-bytes")?);
/// # let _ = explain;
/// # Ok::<(), scoped_cache::BuildError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Explain {
    /// Nobody (the default).
    #[default]
    Never,
    /// Requests whose [`X_CACHE_EXPLAIN`] header holds this token: the admin routes' token,
    /// or (better where the GraphQL route is public, since the header then travels with
    /// ordinary requests) a secret of its own. A wrong one is logged at `warn`, never
    /// its value.
    ToOperators(AdminToken),
    /// Every request. The reason never holds a value, but it tells a client how its
    /// requests were treated: for development and staging.
    Everyone,
}

/// What one request's observation records, filled in by the pipeline as it learns it
/// (route, operation, rule: indices into bounded label tables); `Observer::finish`
/// counts and explains the answer once, at the end.
#[derive(Debug, Default)]
pub(crate) struct Note {
    pub(crate) series: Series,
    pub(crate) authenticated: bool,
    /// A keyed hash of the bucket, for traces (only computed when the span records).
    pub(crate) bucket: Option<crate::hash::BucketId>,
    /// Seconds the app took, if it ran.
    pub(crate) executed: Option<f64>,
}

/// Records every response's status and reason.
#[derive(Debug)]
pub(crate) struct Observer {
    meter: Meter,
    explain: Explain,
    /// The gauges' refresher was started.
    pub(crate) gauges_started: AtomicBool,
    window: stats::Window,
    /// Wrong `x-cache-explain` credentials, warned about once a minute.
    refusals: Throttle,
}

impl Observer {
    pub(crate) fn new(labels: Labels, explain: Explain) -> Self {
        Self {
            meter: Meter::new(labels),
            explain,
            gauges_started: AtomicBool::new(false),
            window: stats::Window::default(),
            refusals: Throttle::new(),
        }
    }

    /// Takes the stats window's snapshot (with the gauges, every few seconds).
    pub(crate) fn snapshot(&self, now: tokio::time::Instant) {
        self.window.record(&self.meter, now);
    }

    /// The answers of the recent window.
    pub(crate) fn answers(&self, now: tokio::time::Instant) -> Answers {
        self.window.stats(&self.meter, now)
    }

    /// Sets the gauges: each cache's usage, readiness, and the tier's state.
    pub(crate) fn gauges(
        &self,
        caches: &[(&'static str, Usage)],
        readiness: &crate::health::Readiness,
    ) {
        let flag = |yes: bool| if yes { 1.0 } else { 0.0 };
        metrics::gauge!(names::READY).set(flag(readiness.ready));
        if let Some(tier) = &readiness.tier {
            metrics::gauge!(names::IN_STEP).set(flag(tier.in_step));
            metrics::gauge!(names::REACHABLE).set(flag(tier.reachable));
            metrics::gauge!(names::PENDING).set(tier.pending as f64);
        }
        for (cache, usage) in caches {
            metrics::gauge!(names::ENTRIES, "cache" => *cache).set(usage.entries as f64);
            metrics::gauge!(names::BYTES, "cache" => *cache).set(usage.bytes as f64);
            metrics::gauge!(names::BOUND, "cache" => *cache).set(usage.bound as f64);
        }
    }

    /// Whether this request is told its reason; takes the explain header off the request
    /// (the app never reads it, so it need not be in any key).
    pub(crate) fn explains(&self, headers: &mut HeaderMap) -> bool {
        if matches!(self.explain, Explain::Never) {
            // Nobody is told: the header means nothing, and costs no lookup.
            return false;
        }
        let presented = if headers.contains_key(X_CACHE_EXPLAIN) {
            headers.remove(X_CACHE_EXPLAIN)
        } else {
            None
        };
        match &self.explain {
            Explain::Never => false,
            Explain::Everyone => true,
            Explain::ToOperators(token) => match presented {
                None => false,
                Some(value) if token.verify(value.as_bytes()) => true,
                Some(_) => {
                    // As the admin routes do: a wrong credential is an operator's typo or
                    // someone guessing; either way worth a line (never the value), but
                    // not one per request of a client that sends it on every one.
                    if let Some(held_back) = self.refusals.due() {
                        tracing::warn!(
                            refused_since_last_warning = held_back,
                            "x-cache-explain credential refused (one warning a minute)"
                        );
                    }
                    false
                }
            },
        }
    }

    /// The request's span: OpenTelemetry-style names, filled in when the answer is
    /// known. `Span::none()` when no subscriber wants it, without building one.
    pub(crate) fn span() -> Span {
        if !tracing::span_enabled!(tracing::Level::INFO) {
            return Span::none();
        }
        tracing::info_span!(
            "scoped_cache.request",
            http.route = Empty,
            cache.status = Empty,
            scoped_cache.reason = Empty,
            graphql.operation.name = Empty,
            scoped_cache.rule = Empty,
            scoped_cache.bucket = Empty,
            enduser.authenticated = Empty,
            auth.outcome = Empty,
        )
    }

    /// Counts `response`, records it on `span` and, if `explain`, tells its reason.
    pub(crate) fn finish(
        &self,
        note: &Note,
        span: &Span,
        explain: bool,
        response: &mut http::Response<axum::body::Body>,
    ) {
        let reason = response.extensions().get::<Reason>().copied();
        let status = reason.map_or("HIT", Reason::status);
        let status_index = STATUSES.iter().position(|s| *s == status).unwrap_or(0);
        self.meter.response(status_index, note.series, reason);
        if let Some(seconds) = note.executed {
            self.meter.execution(note.series.route, seconds);
        }
        // Only this layer's own refusals: an inner layer's pass through here as answers.
        let auth = match reason {
            Some(Reason::Unauthorized | Reason::AuthUnavailable | Reason::Revoked) => {
                response.extensions().get::<AuthError>().map(|e| e.kind())
            }
            _ => None,
        };
        if let Some(kind) = auth {
            metrics::counter!(names::AUTH_FAILURES, "kind" => kind.as_str()).increment(1);
        }
        if reason == Some(Reason::Refused)
            && let Some(kind) = response.extensions().get::<RefusalKind>()
        {
            metrics::counter!(names::REFUSALS, "kind" => kind.as_str()).increment(1);
        }
        if !span.is_disabled() {
            let labels = self.meter.labels();
            let name = |names: &[std::sync::Arc<str>], i: Option<u16>| {
                i.and_then(|i| names.get(usize::from(i)).cloned())
            };
            if let Some(route) = name(&labels.routes, Some(note.series.route)) {
                span.record("http.route", &*route);
            }
            span.record("cache.status", status);
            if let Some(reason) = reason {
                span.record("scoped_cache.reason", reason.as_str());
            }
            if let Some(operation) = name(&labels.operations, note.series.operation) {
                span.record("graphql.operation.name", &*operation);
            }
            if let Some(rule) = name(&labels.rules, note.series.rule) {
                span.record("scoped_cache.rule", &*rule);
            }
            if let Some(bucket) = note.bucket {
                span.record("scoped_cache.bucket", bucket.as_str());
            }
            span.record("enduser.authenticated", note.authenticated);
            span.record("auth.outcome", auth.map_or("ok", |kind| kind.as_str()));
        }
        if explain {
            let headers = response.headers_mut();
            headers.insert(
                X_CACHE_REASON,
                HeaderValue::from_static(reason.map_or("hit", Reason::as_str)),
            );
            // An explained answer is for the one who asked: no cache in front keeps it.
            crate::wire::control::make_private(headers);
        }
    }
}

/// Labels `response` with why it was not a fresh hit.
pub(crate) fn because(
    mut response: http::Response<axum::body::Body>,
    reason: Reason,
) -> http::Response<axum::body::Body> {
    response.extensions_mut().insert(reason);
    response
}
