//! What is cached, for how long, and how cached responses are labelled.
//!
//! Never stored: mutations and subscriptions, bypassed operations, batches, responses
//! that are not `200`, carry `Set-Cookie`, say `no-store`/`no-cache`, have GraphQL
//! `errors`, exceed the entry size, are `private` without a claim scope, or were produced
//! by resolvers that read a claim the scope does not cover.

pub(crate) mod inflight;
pub(crate) mod invalidate;
pub(crate) mod key;
pub(crate) mod purge;
pub(crate) mod request;
pub(crate) mod store;
pub(crate) mod validator;

use std::time::Duration;

use http::header::{
    ACCEPT, AGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_TYPE, ETAG, EXPIRES,
    HOST, LAST_MODIFIED, SET_COOKIE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::claims::ReadLog;
use crate::scope::Decision;
use crate::wire::control;

/// `x-cache`: `HIT`, `STALE` (served past its max-age while it is revalidated, or because
/// revalidating failed), `MISS` or `BYPASS`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Response header telling which tier served a cached answer (`HIT` or `STALE`) when the
/// layer has a shared tier ([`RedisTier`](crate::ScopedCacheLayerBuilder::redis), feature
/// `redis`): `memory` (this process) or `redis`. Absent without a shared tier.
pub const X_CACHE_TIER: HeaderName = HeaderName::from_static("x-cache-tier");

/// Response header on a mutation's answer whose invalidation purged something, with a
/// shared tier: `fleet-wide` when Redis recorded every purge it made, `pending` when one
/// holds on this instance only until Redis records it (see
/// [`Purged::fleet_wide`](crate::Purged::fleet_wide)). Absent otherwise.
pub const X_CACHE_INVALIDATION: HeaderName = HeaderName::from_static("x-cache-invalidation");

/// How a response was served, as told by [`X_CACHE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    Hit,
    Stale,
    Miss,
    Bypass,
}

impl CacheStatus {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Stale => "STALE",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        })
    }
}

/// Why a response was not stored (logged at debug level; never includes values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    SetCookie,
    NoStore,
    MalformedCacheControl,
    VariesOnUnkeyedHeader,
    TooLarge,
    GraphqlErrors,
    PrivateWithoutScope,
    ZeroTtl,
    UncoveredClaimRead(String),
    /// A learned scope is not known yet: the execution only teaches it.
    Learning,
    /// The entity-tags report could not be relied on.
    UnreliableTags,
    /// A purge since the execution started matched it.
    PurgedMeanwhile,
    /// The instance fell out of step with the fleet meanwhile: a change it cannot hear
    /// of may cover the answer.
    OutOfStep,
    /// Another cache (an inner layer) served it stale, or with an `Age` that does not
    /// parse.
    Stale,
}

/// Checks that need only the head, so a response that cannot be stored is streamed
/// through without buffering.
pub(crate) fn check_head(
    status: StatusCode,
    headers: &HeaderMap,
    size_hint: Option<u64>,
    max_entry_bytes: usize,
    key_headers: &[HeaderName],
) -> Result<(), NotStored> {
    if status != StatusCode::OK {
        return Err(NotStored::Status);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let directives = control::parse(headers).map_err(|_| NotStored::MalformedCacheControl)?;
    if directives.no_store || directives.no_cache {
        return Err(NotStored::NoStore);
    }
    if !varies_only_on_keyed_headers(headers, key_headers) {
        return Err(NotStored::VariesOnUnkeyedHeader);
    }
    match size_hint {
        Some(size) if size <= max_entry_bytes as u64 => Ok(()),
        _ => Err(NotStored::TooLarge),
    }
}

#[derive(Deserialize)]
struct ErrorsProbe {
    #[serde(default)]
    errors: Option<IgnoredAny>,
}

/// Whether a response body is not a clean GraphQL result (not a JSON object, or it has
/// `errors`).
pub(crate) fn has_errors(body: &[u8]) -> bool {
    !matches!(
        serde_json::from_slice::<ErrorsProbe>(body),
        Ok(ErrorsProbe { errors: None })
    )
}

/// How long a stored response is served: fresh for `ttl`, then stale for the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    pub(crate) ttl: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

/// How long a fully read `200` response may be served from the cache.
pub(crate) fn lifetimes(
    headers: &HeaderMap,
    body: &[u8],
    decision: &Decision,
    reads: &ReadLog,
) -> Result<Lifetimes, NotStored> {
    let ttl = storable_ttl(headers, body, decision, reads)?;
    let directives = control::parse(headers).map_err(|_| NotStored::MalformedCacheControl)?;
    // The rule's window and the response's, the shorter when both are set.
    let window = |rule: Option<Duration>, response: Option<Duration>| {
        match (rule, response) {
            (Some(a), Some(b)) => a.min(b),
            (Some(w), None) | (None, Some(w)) => w,
            (None, None) => Duration::ZERO,
        }
        .min(crate::scope::MAX_MAX_AGE)
    };
    Ok(Lifetimes {
        ttl,
        stale_while_revalidate: window(
            decision.stale_while_revalidate,
            directives.stale_while_revalidate,
        ),
        stale_if_error: window(decision.stale_if_error, directives.stale_if_error),
    })
}

/// The time a fully read `200` response may be served fresh from the cache.
fn storable_ttl(
    headers: &HeaderMap,
    body: &[u8],
    decision: &Decision,
    reads: &ReadLog,
) -> Result<Duration, NotStored> {
    if has_errors(body) {
        return Err(NotStored::GraphqlErrors);
    }
    if let Some(uncovered) = reads.first_uncovered(&decision.scope) {
        return Err(NotStored::UncoveredClaimRead(uncovered.to_string()));
    }
    let directives = control::parse(headers).map_err(|_| NotStored::MalformedCacheControl)?;
    if directives.private && !decision.is_scoped() {
        return Err(NotStored::PrivateWithoutScope);
    }
    let ttl = match directives.max_age {
        Some(max_age) => max_age.min(decision.max_age),
        None => decision.max_age,
    };
    // An answer that comes from another cache (an inner layer's hit) has aged there: it
    // is fresh only for what is left (RFC 9111 §4.2.3), and a stale one not at all.
    if headers.get(X_CACHE).is_some_and(|status| status == "STALE") {
        return Err(NotStored::Stale);
    }
    let ttl = match headers.get(AGE) {
        None => ttl,
        Some(age) => {
            let age = age
                .to_str()
                .ok()
                .and_then(|age| age.trim().parse::<u64>().ok())
                .ok_or(NotStored::Stale)?;
            ttl.saturating_sub(Duration::from_secs(age))
        }
    };
    if ttl.is_zero() {
        return Err(NotStored::ZeroTtl);
    }
    Ok(ttl)
}

/// Whether every header the response varies on is part of the cache key: `Accept`,
/// `Host` and the configured key headers. `Authorization` and `Cookie` are not: the key
/// holds the bucket (claim values), not those headers, so a response that varies on them
/// is not stored. An inner layer that varies on, say, `Accept-Encoding` would otherwise
/// have one encoding served to all.
fn varies_only_on_keyed_headers(headers: &HeaderMap, key_headers: &[HeaderName]) -> bool {
    headers.get_all(VARY).iter().all(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .all(|name| {
                    [ACCEPT, HOST]
                        .iter()
                        .chain(key_headers)
                        .any(|keyed| name.eq_ignore_ascii_case(keyed.as_str()))
                })
        })
    })
}

/// The headers a stored response keeps: those that describe the representation. Anything
/// else (request ids, `Server-Timing`, trace headers, headers a resolver set) belonged to
/// the one response that was stored and is not replayed on hits. The application's own
/// `ETag` is replaced by the layer's, which is bound to the bucket.
pub(crate) fn representation_headers(headers: &HeaderMap) -> HeaderMap {
    const KEPT: [HeaderName; 7] = [
        CONTENT_TYPE,
        CONTENT_LANGUAGE,
        CONTENT_ENCODING,
        CACHE_CONTROL,
        EXPIRES,
        LAST_MODIFIED,
        VARY,
    ];
    let mut kept = HeaderMap::with_capacity(4);
    for name in &KEPT {
        for value in headers.get_all(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The headers an entry is stored with: its [`representation_headers`], made private
/// when the operation is claim-scoped, as every answer from it will be.
pub(crate) fn stored_headers(headers: &HeaderMap, scoped: bool, vary: &HeaderValue) -> HeaderMap {
    let mut stored = representation_headers(headers);
    if scoped {
        control::make_private(&mut stored);
    }
    // Merged once here, so a hit's label finds it done; a response that adds nothing to
    // the layer's own line keeps none (the label inserts the layer's).
    if stored.contains_key(VARY) {
        merge_vary(&mut stored, vary, false);
        if stored.get(VARY) == Some(vary) {
            stored.remove(VARY);
        }
    }
    stored
}

/// The headers of a cached answer: the entry's stored headers, its ETag, and room for
/// the labels and `Age`, so none of them makes the map grow.
pub(crate) fn served_headers(stored: &HeaderMap, etag: &HeaderValue) -> HeaderMap {
    // `with_capacity` panics past http's maximum size, and an entry can hold thousands of
    // values of one header: an unusual entry starts small and grows instead.
    let mut headers = HeaderMap::try_with_capacity(stored.len() + 6).unwrap_or_default();
    for (name, value) in stored {
        headers.append(name, value.clone());
    }
    headers.insert(ETAG, etag.clone());
    headers
}

/// Labels a response from a verifying route: `x-cache`, `Vary` on every header that can
/// change it, and `Cache-Control: private` for claim-scoped operations and for any
/// uncached answer to an authenticated caller, so a shared cache in front cannot undo
/// the scoping.
pub(crate) fn label(
    headers: &mut HeaderMap,
    status: CacheStatus,
    decision: Option<&Decision>,
    authenticated: bool,
    vary: &HeaderValue,
    outer: bool,
) {
    headers.insert(X_CACHE, status.header());
    let private = match status {
        CacheStatus::Bypass => authenticated,
        CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Miss => {
            decision.is_some_and(Decision::is_scoped)
        }
    };
    if private {
        control::make_private(headers);
    }
    merge_vary(headers, vary, outer);
}

/// The most names a response's own `Vary` lines add to the layer's.
const MAX_EXTRA_VARY: usize = 32;

/// Gives `headers` one `Vary` line: the layer's (`ours`, every request header a key
/// holds), plus each name the response's own lines add; `*` if they say `*` or cannot be
/// read (nothing else is safe to claim then). One line, not two: some caches in front
/// read only the first. A line that already starts with ours (a stored entry's, merged
/// when it was stored) is left as it is, so a hit does no work here.
///
/// For an `outer` layer around this one that verified the same caller, `ours` leaves out
/// `Authorization` and `Cookie`, and so do the merged names: what the answer depends on
/// in them is the claims, which this layer reports to the outer one (whose read check
/// then needs its scope to cover them), and an answer that depends on them otherwise is
/// one this layer would not store, and tells the outer one so. An outer layer of another
/// caller gets the whole `Vary` and is told to store nothing.
pub(crate) fn merge_vary(headers: &mut HeaderMap, ours: &HeaderValue, outer: bool) {
    // One lookup on the hit path: most answers have no `Vary` of their own.
    let lines = match headers.entry(VARY) {
        http::header::Entry::Vacant(vacant) => {
            vacant.insert(ours.clone());
            return;
        }
        http::header::Entry::Occupied(lines) => lines,
    };
    let mut iter = lines.iter();
    if let (Some(only), None) = (iter.next(), iter.next())
        && only
            .as_bytes()
            .strip_prefix(ours.as_bytes())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b","))
    {
        return;
    }
    let mut merged = String::from(ours.to_str().unwrap_or_default());
    let mut extra = 0;
    for line in headers.get_all(VARY) {
        let Ok(text) = line.to_str() else {
            headers.insert(VARY, HeaderValue::from_static("*"));
            return;
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if outer
                && (name.eq_ignore_ascii_case("authorization")
                    || name.eq_ignore_ascii_case("cookie"))
            {
                continue;
            }
            if name == "*" || extra == MAX_EXTRA_VARY {
                headers.insert(VARY, HeaderValue::from_static("*"));
                return;
            }
            if !merged
                .split(',')
                .any(|known| known.trim().eq_ignore_ascii_case(name))
            {
                merged.push_str(", ");
                merged.push_str(name);
                extra += 1;
            }
        }
    }
    let merged = HeaderValue::from_str(&merged).unwrap_or_else(|_| HeaderValue::from_static("*"));
    headers.insert(VARY, merged);
}

pub(crate) fn set_age(headers: &mut HeaderMap, age: Duration) {
    // An age under a minute (most hits of most entries) is a static value: no allocation.
    const SECONDS: [&str; 60] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
        "32", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46",
        "47", "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59",
    ];
    let seconds = age.as_secs();
    let value = usize::try_from(seconds)
        .ok()
        .and_then(|s| SECONDS.get(s))
        .map_or_else(
            || HeaderValue::from(seconds),
            |s| HeaderValue::from_static(s),
        );
    headers.insert(AGE, value);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::claims::Claims;
    use crate::scope::ClaimPath;

    fn varied(lines: &[&str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(VARY, HeaderValue::from_str(line).unwrap());
        }
        merge_vary(
            &mut headers,
            &HeaderValue::from_static("authorization, accept"),
            false,
        );
        headers
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_answer_has_one_vary_line_naming_everything() {
        assert_eq!(varied(&[]), ["authorization, accept"]);
        assert_eq!(varied(&["Accept"]), ["authorization, accept"]);
        assert_eq!(
            varied(&["accept", "Accept-Language, host"]),
            ["authorization, accept, Accept-Language, host"]
        );
        // A line that starts with ours but names another header is not ours.
        assert_eq!(
            varied(&["authorization, accept-language"]),
            ["authorization, accept, accept-language"]
        );
        // Already merged (a stored entry's): left as it is.
        assert_eq!(
            varied(&["authorization, accept, host"]),
            ["authorization, accept, host"]
        );
        assert_eq!(varied(&["accept", "*"]), ["*"]);
        let many: Vec<String> = (0..=MAX_EXTRA_VARY).map(|n| format!("x-{n}")).collect();
        assert_eq!(varied(&[&many.join(", ")]), ["*"]);
    }

    fn decision(scope: &[&str], max_age: u64) -> Decision {
        Decision {
            scope: scope
                .iter()
                .map(|p| ClaimPath::parse(p).unwrap())
                .collect::<Vec<_>>()
                .into(),
            max_age: Duration::from_secs(max_age),
            stale_while_revalidate: None,
            stale_if_error: None,
            bypass: false,
            learned: Vec::new().into(),
            rule: 0,
            operation: 0,
            by_default: true,
        }
    }

    fn headers(cache_control: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(cc) = cache_control {
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_str(cc).unwrap(),
            );
        }
        h
    }

    const OK: &[u8] = br#"{"data":{"me":null}}"#;

    #[test]
    fn age_is_whole_seconds_however_old() {
        for (age, text) in [
            (0, "0"),
            (1_999, "1"),
            (59_999, "59"),
            (60_000, "60"),
            (86_400_000, "86400"),
        ] {
            let mut headers = HeaderMap::new();
            set_age(&mut headers, Duration::from_millis(age));
            assert_eq!(headers[AGE], text, "{age} ms");
        }
    }

    #[test]
    fn response_max_age_caps_the_rule() {
        let ttl = storable_ttl(
            &headers(Some("max-age=10")),
            OK,
            &decision(&[], 60),
            &ReadLog::default(),
        );
        assert_eq!(ttl, Ok(Duration::from_secs(10)));
        let ttl = storable_ttl(
            &headers(Some("max-age=600")),
            OK,
            &decision(&[], 60),
            &ReadLog::default(),
        );
        assert_eq!(ttl, Ok(Duration::from_secs(60)));
        let ttl = storable_ttl(&headers(None), OK, &decision(&[], 60), &ReadLog::default());
        assert_eq!(ttl, Ok(Duration::from_secs(60)));
    }

    #[test]
    fn errors_and_non_json_are_not_stored() {
        let body = br#"{"data":null,"errors":[{"message":"boom"}]}"#;
        assert_eq!(
            storable_ttl(
                &headers(None),
                body,
                &decision(&[], 60),
                &ReadLog::default()
            ),
            Err(NotStored::GraphqlErrors)
        );
        assert_eq!(
            storable_ttl(
                &headers(None),
                b"<html>",
                &decision(&[], 60),
                &ReadLog::default()
            ),
            Err(NotStored::GraphqlErrors)
        );
    }

    #[test]
    fn private_needs_a_scope() {
        let upper = headers(Some("Private"));
        assert_eq!(
            storable_ttl(&upper, OK, &decision(&[], 60), &ReadLog::default()),
            Err(NotStored::PrivateWithoutScope)
        );
        let private = headers(Some("private"));
        assert_eq!(
            storable_ttl(&private, OK, &decision(&[], 60), &ReadLog::default()),
            Err(NotStored::PrivateWithoutScope)
        );
        assert!(storable_ttl(&private, OK, &decision(&["sub"], 60), &ReadLog::default()).is_ok());
    }

    #[test]
    fn a_claim_read_outside_the_scope_blocks_storing() {
        let claims = Claims::new(
            json!({"sub": "u1", "role": "admin"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(claims.claim_str("role"), Some("admin"));
        let err = storable_ttl(
            &headers(None),
            OK,
            &decision(&["sub"], 60),
            claims.read_log(),
        );
        assert_eq!(err, Err(NotStored::UncoveredClaimRead("/role".into())));
        assert!(
            storable_ttl(
                &headers(None),
                OK,
                &decision(&["role"], 60),
                claims.read_log()
            )
            .is_ok()
        );
    }

    #[test]
    fn head_checks_refuse_what_must_never_be_stored() {
        let ok = headers(None);
        assert_eq!(check_head(StatusCode::OK, &ok, Some(10), 100, &[]), Ok(()));
        assert_eq!(
            check_head(StatusCode::BAD_REQUEST, &ok, Some(10), 100, &[]),
            Err(NotStored::Status)
        );
        assert_eq!(
            check_head(StatusCode::OK, &ok, Some(101), 100, &[]),
            Err(NotStored::TooLarge)
        );
        assert_eq!(
            check_head(StatusCode::OK, &ok, None, 100, &[]),
            Err(NotStored::TooLarge)
        );
        assert_eq!(
            check_head(
                StatusCode::OK,
                &headers(Some("no-store")),
                Some(1),
                100,
                &[]
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check_head(
                StatusCode::OK,
                &headers(Some("NO-STORE")),
                Some(1),
                100,
                &[]
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check_head(
                StatusCode::OK,
                &headers(Some("no-store, max-age=x")),
                Some(1),
                100,
                &[]
            ),
            Err(NotStored::MalformedCacheControl)
        );
        let mut vary = HeaderMap::new();
        vary.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        assert_eq!(
            check_head(StatusCode::OK, &vary, Some(1), 100, &[]),
            Err(NotStored::VariesOnUnkeyedHeader)
        );
        vary.insert(VARY, HeaderValue::from_static("accept, Host"));
        assert_eq!(check_head(StatusCode::OK, &vary, Some(1), 100, &[]), Ok(()));
        // Neither header's value is in the key: the bucket is built from claims.
        for unkeyed in ["Authorization", "cookie", "*", "Origin"] {
            vary.insert(VARY, HeaderValue::from_static(unkeyed));
            assert_eq!(
                check_head(StatusCode::OK, &vary, Some(1), 100, &[]),
                Err(NotStored::VariesOnUnkeyedHeader),
                "{unkeyed}"
            );
        }
        let origin = [HeaderName::from_static("origin")];
        assert_eq!(
            check_head(StatusCode::OK, &vary, Some(1), 100, &origin),
            Ok(())
        );
        let mut cookie = HeaderMap::new();
        cookie.insert(SET_COOKIE, HeaderValue::from_static("a=b"));
        assert_eq!(
            check_head(StatusCode::OK, &cookie, Some(1), 100, &[]),
            Err(NotStored::SetCookie)
        );
    }

    #[test]
    fn scoped_responses_are_labelled_private() {
        let mut h = headers(Some("max-age=30"));
        let vary = HeaderValue::from_static("authorization");
        label(
            &mut h,
            CacheStatus::Miss,
            Some(&decision(&["sub"], 60)),
            true,
            &vary,
            false,
        );
        assert_eq!(h[X_CACHE], "MISS");
        assert_eq!(h[http::header::CACHE_CONTROL], "private, max-age=30");
        assert_eq!(h[VARY], "authorization");
    }

    #[test]
    fn bypassed_answers_vary_and_are_private_when_authenticated() {
        let vary = HeaderValue::from_static("authorization");
        let mut authed = headers(None);
        label(&mut authed, CacheStatus::Bypass, None, true, &vary, false);
        assert_eq!(authed[VARY], "authorization");
        assert_eq!(authed[http::header::CACHE_CONTROL], "private");
        let mut anonymous = headers(None);
        label(
            &mut anonymous,
            CacheStatus::Bypass,
            None,
            false,
            &vary,
            false,
        );
        assert_eq!(anonymous[VARY], "authorization");
        assert!(!anonymous.contains_key(http::header::CACHE_CONTROL));
    }

    #[test]
    fn only_representation_headers_are_stored() {
        let mut h = headers(Some("max-age=30"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-request-id", HeaderValue::from_static("42"));
        h.insert("server-timing", HeaderValue::from_static("db;dur=3"));
        let kept = representation_headers(&h);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[CONTENT_TYPE], "application/json");
        assert_eq!(kept[CACHE_CONTROL], "max-age=30");
    }
}
