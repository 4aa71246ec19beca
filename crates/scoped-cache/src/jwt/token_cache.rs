//! Verified tokens: the whole token → its verified claims, so a repeated token skips
//! signature verification.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moka::Expiry;
use serde_json::{Map, Value};

use crate::claims::Claims;
use crate::jwt::keys::ResolvedKey;
use crate::jwt::validation::{ClaimRules, Window};

/// Entries of tokens without `exp` live at most this long.
const NO_EXP_TTL: Duration = Duration::from_secs(5 * 60);

/// One verified token. Every hit is checked again: the key that verified it must still be
/// held (a key removed from its JWKS is dropped, and the entry dies with it), its source
/// must not be beyond max-stale, and the clock must be within the claims' `nbf` and `exp`
/// (with the verifier's leeway). Issuer, audience and required claims were checked by
/// the same rules when it was verified, and neither they nor the claims can change; only
/// the signature check is skipped.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) claims: Claims,
    pub(crate) issuer: usize,
    pub(crate) source: Option<usize>,
    pub(crate) key: Weak<ResolvedKey>,
    /// The leeway of the verifier that verified it: a token past `exp` but within it is
    /// still valid, and is kept (and re-checked on each hit) rather than verified anew.
    pub(crate) leeway: Duration,
    /// When its claims are valid, leeway included.
    pub(crate) window: Window,
    /// What its claims cost in memory, in bytes (see [`claims_weight`]).
    weight: usize,
}

impl Verified {
    /// `claims`, which passed `rules`, verified by `key` of verifier `issuer`.
    pub(crate) fn new(
        claims: Claims,
        issuer: usize,
        source: Option<usize>,
        key: Weak<ResolvedKey>,
        rules: &ClaimRules,
    ) -> Self {
        Self {
            window: rules.window(claims.raw()),
            weight: claims_weight(claims.raw()),
            claims,
            issuer,
            source,
            key,
            leeway: rules.leeway,
        }
    }
}

/// What one heap allocation of `bytes` costs: glibc's malloc rounds a request up to 16
/// bytes with 8 of its own, and never hands out less than 32.
fn allocation(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes.saturating_add(8 + 15) & !15).max(32)
    }
}

/// What parsed claims cost in memory, in bytes: each JSON value's slot (32 bytes), each
/// string's and array's own allocation (by capacity), and each object entry's share of
/// its B-tree node (key and value slots at two thirds' fill, the node's allocation
/// included). A token of a few thousand small group ids costs several times its length
/// parsed, and that is what the byte bound must count. Iterative: claims nest as deep as
/// the JSON parser allowed, and this must not recurse on input.
fn claims_weight(claims: &Map<String, Value>) -> usize {
    const VALUE: usize = std::mem::size_of::<Value>();
    const ENTRY: usize = (std::mem::size_of::<String>() + VALUE) * 3 / 2 + 8;
    let mut weight = VALUE;
    let mut objects = vec![claims];
    let mut arrays: Vec<&Vec<Value>> = Vec::new();
    fn weigh<'a>(
        value: &'a Value,
        objects: &mut Vec<&'a Map<String, Value>>,
        arrays: &mut Vec<&'a Vec<Value>>,
    ) -> usize {
        match value {
            Value::String(text) => allocation(text.capacity()),
            Value::Array(items) => {
                arrays.push(items);
                allocation(items.capacity().saturating_mul(VALUE))
            }
            Value::Object(map) => {
                objects.push(map);
                0
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }
    loop {
        if let Some(map) = objects.pop() {
            for (key, value) in map {
                weight = weight
                    .saturating_add(ENTRY + allocation(key.capacity()))
                    .saturating_add(weigh(value, &mut objects, &mut arrays));
            }
        } else if let Some(items) = arrays.pop() {
            for value in items {
                weight = weight.saturating_add(weigh(value, &mut objects, &mut arrays));
            }
        } else {
            return weight;
        }
    }
}

/// What an entry costs besides its token and claims: the `Verified` record, the claims'
/// handles and read log, and moka's own bookkeeping (its entry, deque and timer nodes).
const ENTRY_OVERHEAD: usize = 512;

/// Keyed by the whole token, never by anything weaker: two tokens share an entry only if
/// they are the same bytes.
#[derive(Clone)]
pub(crate) struct TokenCache {
    entries: moka::sync::Cache<Arc<str>, Arc<Verified>, crate::hash::Trusted>,
    max_bytes: u64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // moka's own `Debug` would print tokens.
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

struct UntilExp;

impl Expiry<Arc<str>, Arc<Verified>> for UntilExp {
    fn expire_after_create(
        &self,
        _token: &Arc<str>,
        verified: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            time_to_expiry(
                &verified.claims,
                verified.leeway,
                crate::clock::now_seconds_f64(),
            )
            .unwrap_or(NO_EXP_TTL),
        )
    }
}

/// Time until the token stops being valid, `exp` + `leeway` (zero if past), by the wall
/// clock `exp` is written in; `None` without a numeric `exp`.
fn time_to_expiry(claims: &Claims, leeway: Duration, now: f64) -> Option<Duration> {
    let exp = claims.raw().get("exp")?.as_f64()?;
    let left = exp + leeway.as_secs_f64() - now;
    // Not a number or beyond `Duration`: not worth keeping.
    Some(Duration::try_from_secs_f64(left.max(0.0)).unwrap_or(Duration::ZERO))
}

impl TokenCache {
    /// What the cache holds against its bound.
    pub(crate) fn usage(&self) -> crate::health::Usage {
        // moka counts lazily: settle first (every few seconds, not per request).
        self.entries.run_pending_tasks();
        crate::health::Usage {
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            bound: self.max_bytes,
        }
    }

    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|token: &Arc<str>, verified: &Arc<Verified>| {
                    let weight = allocation(token.len() + 16) + verified.weight + ENTRY_OVERHEAD;
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .expire_after(UntilExp)
                .build_with_hasher(crate::hash::Trusted::default()),
            max_bytes,
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Verified>> {
        self.entries.get(token)
    }

    pub(crate) fn insert(&self, token: &str, verified: Verified) {
        self.entries.insert(Arc::from(token), Arc::new(verified));
    }

    pub(crate) fn remove(&self, token: &str) {
        self.entries.invalidate(token);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: f64 = 1_000_000.0;

    fn exp(exp: f64) -> Claims {
        Claims::new(json!({ "exp": exp }).as_object().unwrap().clone())
    }

    #[test]
    fn an_entry_lives_until_exp_plus_leeway() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            time_to_expiry(&exp(NOW + 30.0), Duration::ZERO, NOW),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            time_to_expiry(&exp(NOW + 30.0), minute, NOW),
            Some(Duration::from_secs(90))
        );
        // Past `exp` but within the leeway: kept for what is left of it.
        assert_eq!(
            time_to_expiry(&exp(NOW - 10.0), minute, NOW),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            time_to_expiry(&exp(NOW - 61.0), minute, NOW),
            Some(Duration::ZERO)
        );
        assert_eq!(
            time_to_expiry(&exp(f64::MAX), minute, NOW),
            Some(Duration::ZERO)
        );
        let no_exp = Claims::new(serde_json::Map::new());
        assert_eq!(time_to_expiry(&no_exp, minute, NOW), None);
    }
}
