//! The metrics' names, and what each means (described to the recorder once).
//!
//! Every label's values are bounded by construction: cache statuses, reasons, kinds, and
//! the names the configuration gives (routes, rules, the operations rules name). Never a
//! user id, claim value, token or query text.

use metrics::Unit;

/// Responses by `status` (`HIT`, `MISS`, `STALE`, `BYPASS`, `REFUSED`, `PASSTHROUGH`),
/// `route`, `operation` and `rule`.
pub const RESPONSES: &str = "scoped_cache_responses_total";
/// Answers that were not a fresh hit, by `reason` (see [`Reason`](crate::Reason)) and
/// `route`.
pub const REASONS: &str = "scoped_cache_reasons_total";
/// Requests refused for their credentials, by `kind` (see
/// [`AuthErrorKind::as_str`](crate::AuthErrorKind::as_str)).
pub const AUTH_FAILURES: &str = "scoped_cache_auth_failures_total";
/// Requests the guard refused, by `kind` (see
/// [`RefusalKind::as_str`](crate::RefusalKind::as_str)).
pub const REFUSALS: &str = "scoped_cache_refusals_total";
/// Misses that waited for another request's execution of the same key.
pub const COALESCED: &str = "scoped_cache_coalesced_waits_total";
/// Purges (by mutations, operators, revocations and widened learned scopes), by the
/// `kind` of selector (`tags`, `operation`, `scope`, `fields`, `all`) and `shared`
/// (`true` once the fleet has it, `false` while it holds here only).
pub const PURGES: &str = "scoped_cache_purges_total";
/// Revocations, by `kind` (`jti`, `sub`, `iss`) and `shared`.
pub const REVOCATIONS: &str = "scoped_cache_revocations_total";
/// JWKS fetches, by `outcome` (`ok`, `error`).
pub const JWKS_FETCHES: &str = "scoped_cache_jwks_fetches_total";
/// Redis tier breaker transitions, by `to` (`open`, `closed`).
pub const BREAKER: &str = "scoped_cache_redis_breaker_transitions_total";
/// Entries held, by `cache` (`responses`, `documents`, `tokens`, `revocations`).
pub const ENTRIES: &str = "scoped_cache_entries";
/// Bytes held, by `cache`, as weighed against its bound.
pub const BYTES: &str = "scoped_cache_bytes";
/// Each cache's bound in bytes (or entries, for `revocations`), by `cache`.
pub const BOUND: &str = "scoped_cache_bound";
/// `1` when the layer can serve with its guarantees (see
/// [`ScopedCacheLayer::readiness`](crate::ScopedCacheLayer::readiness)), else `0`.
pub const READY: &str = "scoped_cache_ready";
/// `1` while this instance has heard the fleet within `max_lag`, else `0` (Redis tier only).
pub const IN_STEP: &str = "scoped_cache_redis_in_step";
/// `1` while Redis answers (the breaker is closed), else `0` (Redis tier only).
pub const REACHABLE: &str = "scoped_cache_redis_reachable";
/// Purges and revocations held on this instance only, waiting for Redis to record them.
pub const PENDING: &str = "scoped_cache_redis_pending";
/// Seconds a full verification took (parsing, keys, signature, claims): every token the
/// verified-token cache did not vouch for, malformed ones included.
pub const VERIFICATION_SECONDS: &str = "scoped_cache_verification_seconds";
/// Seconds a lookup in Redis took (memory lookups are not timed: the benchmarks measure
/// them).
pub const LOOKUP_SECONDS: &str = "scoped_cache_redis_lookup_seconds";
/// Seconds the app took to answer a request the cache executed, by `route`.
pub const EXECUTION_SECONDS: &str = "scoped_cache_execution_seconds";

/// Describes every metric to the installed recorder.
pub(crate) fn describe() {
    metrics::describe_counter!(
        RESPONSES,
        Unit::Count,
        "Responses through the layer, by cache status, route, operation and rule"
    );
    metrics::describe_counter!(
        REASONS,
        Unit::Count,
        "Answers that were not a fresh hit, by reason and route"
    );
    metrics::describe_counter!(
        AUTH_FAILURES,
        Unit::Count,
        "Requests refused for their credentials, by kind"
    );
    metrics::describe_counter!(REFUSALS, Unit::Count, "Requests the guard refused, by kind");
    metrics::describe_counter!(
        COALESCED,
        Unit::Count,
        "Misses that waited for another execution of the same key"
    );
    metrics::describe_counter!(
        PURGES,
        Unit::Count,
        "Purges, by kind and whether the fleet has them"
    );
    metrics::describe_counter!(
        REVOCATIONS,
        Unit::Count,
        "Revocations, by kind and whether the fleet has them"
    );
    metrics::describe_counter!(JWKS_FETCHES, Unit::Count, "JWKS fetches, by outcome");
    metrics::describe_counter!(BREAKER, Unit::Count, "Redis tier breaker transitions");
    metrics::describe_gauge!(ENTRIES, Unit::Count, "Entries held, by cache");
    metrics::describe_gauge!(BYTES, Unit::Bytes, "Bytes held against the bound, by cache");
    metrics::describe_gauge!(BOUND, "Each cache's bound (bytes; entries for revocations)");
    metrics::describe_gauge!(READY, "1 while the layer can serve with its guarantees");
    metrics::describe_gauge!(
        IN_STEP,
        "1 while this instance has heard the fleet within max_lag"
    );
    metrics::describe_gauge!(REACHABLE, "1 while Redis answers (the breaker is closed)");
    metrics::describe_gauge!(
        PENDING,
        Unit::Count,
        "Purges and revocations Redis has not recorded yet"
    );
    metrics::describe_histogram!(
        VERIFICATION_SECONDS,
        Unit::Seconds,
        "Full verifications of tokens the verified-token cache did not vouch for"
    );
    metrics::describe_histogram!(LOOKUP_SECONDS, Unit::Seconds, "Lookups in Redis");
    metrics::describe_histogram!(
        EXECUTION_SECONDS,
        Unit::Seconds,
        "Executions of requests the cache could not answer"
    );
}
