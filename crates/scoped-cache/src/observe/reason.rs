//! Why an answer was not a plain `HIT`: one closed vocabulary for the metrics, the
//! request's span and the operators' `x-cache-reason` header.

use crate::cache::NotStored;
use crate::cache::store::Missed;

/// Why an answer was not a fresh hit from the cache, as the metrics
/// (`scoped_cache_reasons_total{reason}`), the request's span (`scoped_cache.reason`) and
/// the operators' [`X_CACHE_REASON`](crate::X_CACHE_REASON) header name it.
///
/// A reason names a cause, never a value: no claim, token, query text or key is ever in
/// one. Its [`as_str`](Self::as_str) is stable; new reasons may be added.
///
/// ```
/// use scoped_cache::Reason;
///
/// assert_eq!(Reason::GraphqlErrors.as_str(), "graphql-errors");
/// assert_eq!(Reason::GraphqlErrors.status(), "MISS");
/// assert!(Reason::ALL.iter().all(|r| !r.as_str().is_empty()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    // MISS: the cache had nothing to serve.
    /// Nothing that may still be served is stored under this key: the first request,
    /// or the entry expired, was evicted for room, or was purged.
    Absent,
    /// This instance is out of step with the fleet's purges (Redis has not answered its
    /// sync within `max_lag`, or lost changes it had recorded), so it serves nothing
    /// cached until it is back in step.
    OutOfStep,
    /// Memory had nothing, and Redis did not answer this lookup within `fetch_timeout`
    /// or is not asked for now (its breaker is open, or a purge it has not recorded yet
    /// is pending here).
    RedisUnavailable,

    // MISS, and the answer was not stored: why.
    /// A learned scope is not known yet: the execution only teaches it.
    LearningScope,
    /// A resolver read a claim the operation's scope does not cover.
    ClaimOutsideScope,
    /// The answer has GraphQL `errors`.
    GraphqlErrors,
    /// The app answered `no-store` or `no-cache`.
    NoStore,
    /// The app answered `private` to an operation no claim scopes.
    PrivateWithoutScope,
    /// The app's `Cache-Control` does not parse.
    MalformedCacheControl,
    /// The app's `Vary` names a request header the key does not hold.
    VariesOnUnkeyedHeader,
    /// The answer is larger than the entry size limit.
    TooLarge,
    /// The answer's status is not `200`.
    Status,
    /// The answer sets a cookie.
    SetCookie,
    /// The answer may be fresh for no time at all (`max-age=0`, or an inner layer's
    /// entry about to expire).
    ZeroTtl,
    /// The entity-tags report could not be relied on, so mutations could not purge it.
    UnreliableTags,
    /// A purge since the execution started matched it.
    PurgeRaced,
    /// An inner cache served it stale.
    InnerStale,

    // STALE.
    /// Served past its max-age while it is revalidated in the background.
    StaleWhileRevalidate,
    /// Served stale because executing it again failed.
    StaleIfError,

    // BYPASS.
    /// Not a query (a mutation or a subscription).
    NotAQuery,
    /// A rule says bypass.
    BypassedByRule,
    /// No rule matched, and the default rule says bypass.
    NoRuleMatched,
    /// The rules give it a max-age of zero.
    ZeroMaxAge,
    /// The layer could not read the request as one operation it may cache (a batch, a
    /// persisted-query hash it has not seen, a document it does not parse): it passes it
    /// on, never cached.
    NotUnderstood,
    /// The route's policy verifies tokens but caches nothing.
    VerifyOnlyRoute,
    /// The route's policy passes requests through untouched.
    PassthroughRoute,

    // REFUSED: answered by the layer itself.
    /// No valid token where one is needed.
    Unauthorized,
    /// The token could not be judged for now: its keys could not be fetched, or (cut off
    /// from Redis past `max_lag`) the fleet's revocations are unknown. A `503`.
    AuthUnavailable,
    /// The token is revoked.
    Revoked,
    /// The request broke one of the layer's bounds or rules (see
    /// [`RefusalKind`](crate::RefusalKind)).
    Refused,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 30] = [
        Reason::Absent,
        Reason::OutOfStep,
        Reason::RedisUnavailable,
        Reason::LearningScope,
        Reason::ClaimOutsideScope,
        Reason::GraphqlErrors,
        Reason::NoStore,
        Reason::PrivateWithoutScope,
        Reason::MalformedCacheControl,
        Reason::VariesOnUnkeyedHeader,
        Reason::TooLarge,
        Reason::Status,
        Reason::SetCookie,
        Reason::ZeroTtl,
        Reason::UnreliableTags,
        Reason::PurgeRaced,
        Reason::InnerStale,
        Reason::StaleWhileRevalidate,
        Reason::StaleIfError,
        Reason::NotAQuery,
        Reason::BypassedByRule,
        Reason::NoRuleMatched,
        Reason::ZeroMaxAge,
        Reason::NotUnderstood,
        Reason::VerifyOnlyRoute,
        Reason::PassthroughRoute,
        Reason::Unauthorized,
        Reason::AuthUnavailable,
        Reason::Revoked,
        Reason::Refused,
    ];

    /// The reason's name: lowercase words joined by `-` (`claim-outside-scope`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Absent => "absent",
            Reason::OutOfStep => "out-of-step",
            Reason::RedisUnavailable => "redis-unavailable",
            Reason::LearningScope => "learning-scope",
            Reason::ClaimOutsideScope => "claim-outside-scope",
            Reason::GraphqlErrors => "graphql-errors",
            Reason::NoStore => "no-store",
            Reason::PrivateWithoutScope => "private-without-scope",
            Reason::MalformedCacheControl => "malformed-cache-control",
            Reason::VariesOnUnkeyedHeader => "varies-on-unkeyed-header",
            Reason::TooLarge => "too-large",
            Reason::Status => "status",
            Reason::SetCookie => "set-cookie",
            Reason::ZeroTtl => "zero-ttl",
            Reason::UnreliableTags => "unreliable-tags",
            Reason::PurgeRaced => "purge-raced",
            Reason::InnerStale => "inner-stale",
            Reason::StaleWhileRevalidate => "stale-while-revalidate",
            Reason::StaleIfError => "stale-if-error",
            Reason::NotAQuery => "not-a-query",
            Reason::BypassedByRule => "bypassed-by-rule",
            Reason::NoRuleMatched => "no-rule-matched",
            Reason::ZeroMaxAge => "zero-max-age",
            Reason::NotUnderstood => "not-understood",
            Reason::VerifyOnlyRoute => "verify-only-route",
            Reason::PassthroughRoute => "passthrough-route",
            Reason::Unauthorized => "unauthorized",
            Reason::AuthUnavailable => "auth-unavailable",
            Reason::Revoked => "revoked",
            Reason::Refused => "refused",
        }
    }

    /// The cache status an answer with this reason has: `MISS`, `STALE`, `BYPASS`, or
    /// `REFUSED` for the layer's own refusals (which carry no `x-cache`), `PASSTHROUGH` for
    /// routes the layer does not touch.
    pub const fn status(self) -> &'static str {
        match self {
            Reason::StaleWhileRevalidate | Reason::StaleIfError => "STALE",
            Reason::NotAQuery
            | Reason::BypassedByRule
            | Reason::NoRuleMatched
            | Reason::ZeroMaxAge
            | Reason::NotUnderstood
            | Reason::VerifyOnlyRoute => "BYPASS",
            Reason::PassthroughRoute => "PASSTHROUGH",
            Reason::Unauthorized | Reason::AuthUnavailable | Reason::Revoked | Reason::Refused => {
                "REFUSED"
            }
            _ => "MISS",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&NotStored> for Reason {
    fn from(not_stored: &NotStored) -> Self {
        match not_stored {
            NotStored::Status => Reason::Status,
            NotStored::SetCookie => Reason::SetCookie,
            NotStored::NoStore => Reason::NoStore,
            NotStored::MalformedCacheControl => Reason::MalformedCacheControl,
            NotStored::VariesOnUnkeyedHeader => Reason::VariesOnUnkeyedHeader,
            NotStored::TooLarge => Reason::TooLarge,
            NotStored::GraphqlErrors => Reason::GraphqlErrors,
            NotStored::PrivateWithoutScope => Reason::PrivateWithoutScope,
            NotStored::ZeroTtl => Reason::ZeroTtl,
            NotStored::UncoveredClaimRead(_) => Reason::ClaimOutsideScope,
            NotStored::Learning => Reason::LearningScope,
            NotStored::UnreliableTags => Reason::UnreliableTags,
            NotStored::PurgedMeanwhile => Reason::PurgeRaced,
            NotStored::OutOfStep => Reason::OutOfStep,
            NotStored::Stale => Reason::InnerStale,
        }
    }
}

impl From<Missed> for Reason {
    fn from(missed: Missed) -> Self {
        match missed {
            Missed::Absent => Reason::Absent,
            Missed::OutOfStep => Reason::OutOfStep,
            Missed::Unreachable => Reason::RedisUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_reason_has_one_distinct_name_of_lowercase_words() {
        let names: HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for name in names {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{name}"
            );
        }
    }
}
