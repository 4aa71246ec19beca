//! Revocation: deny lists for tokens whose claims went stale, checked on every request
//! after the token is verified (or found in the verified-token cache) and before any cache
//! lookup.
//!
//! Three kinds, each exact (no false positives) and each forgotten once no token it could
//! match can still be presented:
//!
//! | kind | matches | kept until |
//! | --- | --- | --- |
//! | [`Revoke::token`] | the token with this `jti` | its `exp` plus the verifiers' longest leeway |
//! | [`Revoke::subject`] | every token of `sub` (of one issuer, or any) issued before T | the revocation retention (24 h by default) |
//! | [`Revoke::issuer`] | every token of an issuer issued before T (an `iat` in the future counts as forged); with a `kid`, every token that key verifies, whatever its `iat` | the revocation retention |
//!
//! A token without `iat` counts as issued before any T; a token without `jti` cannot be
//! revoked by `jti`. Tokens are compared in whole seconds: "before T" means `iat < T`.
//!
//! The [`RevocationStore`] trait is the seam a shared store implements; [`MemoryRevocations`]
//! is the in-process one. It forgets everything on restart.

mod memory;

use std::time::{Duration, SystemTime};

pub(crate) use self::memory::MemoryRevocations;
use crate::claims::Claims;
pub(crate) use crate::clock::UnixClock;

/// One revocation, for [`ScopedCacheLayer::revoke`](crate::ScopedCacheLayer::revoke).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use scoped_cache::Revoke;
///
/// let now = SystemTime::now();
/// // One token (its `jti`), until it expires.
/// let logout = Revoke::token("3f2a9c1e", now + Duration::from_secs(3600));
/// // Every token alice holds (a role change, a ban, "log out everywhere").
/// let alice = Revoke::subject("alice", now).of_issuer("https://login.example.com/");
/// // Every token a compromised key signed.
/// let key = Revoke::issuer("https://login.example.com/", now).key_id("2024-rsa");
/// # let _ = (logout, alice, key);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Revoke {
    pub(crate) kind: RevokeKind,
}

/// Serialized as the shared tier stores and publishes it (feature `redis`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum RevokeKind {
    Token {
        jti: String,
        exp: u64,
    },
    Subject {
        sub: String,
        iss: Option<String>,
        before: u64,
    },
    Issuer {
        iss: String,
        kid: Option<String>,
        before: u64,
    },
}

/// Why a revocation was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    /// The store holds as many revocations as it may
    /// ([`max_revocations`](crate::ScopedCacheLayerBuilder::max_revocations)), none of
    /// which can be forgotten yet. Nothing was recorded.
    #[error("the revocation store is full: it holds its maximum of {0} revocations")]
    Full(usize),
    /// A `jti`, `sub`, `iss` or `kid` was empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A `jti`, `sub`, `iss` or `kid` was longer than [`MAX_NAME_BYTES`] (no token that
    /// fits in a request carries one that long).
    #[error("`{0}` is longer than {MAX_NAME_BYTES} bytes")]
    TooLong(&'static str),
}

/// The longest `jti`, `sub`, `iss` or `kid` a revocation may name, in bytes: it bounds
/// what each revocation holds in memory.
pub const MAX_NAME_BYTES: usize = 1024;

impl Revoke {
    /// The token whose `jti` is `jti`, which expires at `exp` (its `exp` claim): remembered
    /// until then, plus the verifiers' longest leeway.
    pub fn token(jti: impl Into<String>, exp: SystemTime) -> Self {
        Self::token_unix(jti, crate::clock::seconds(exp))
    }

    /// Like [`token`](Self::token), with `exp` in Unix seconds as in the claim.
    pub fn token_unix(jti: impl Into<String>, exp: u64) -> Self {
        Self {
            kind: RevokeKind::Token {
                jti: jti.into(),
                exp,
            },
        }
    }

    /// Every token of subject `sub` issued before `issued_before` (`iat` < it, in whole
    /// seconds, `issued_before` rounded up, so `SystemTime::now()` covers this second; a token without `iat` always counts), of any issuer unless
    /// [`of_issuer`](Self::of_issuer) narrows it. The client's next token, issued afterwards,
    /// works, with whatever claims it now carries.
    pub fn subject(sub: impl Into<String>, issued_before: SystemTime) -> Self {
        Self::subject_unix(sub, crate::clock::seconds_ceil(issued_before))
    }

    /// Like [`subject`](Self::subject), with `issued_before` in Unix seconds.
    pub fn subject_unix(sub: impl Into<String>, issued_before: u64) -> Self {
        Self {
            kind: RevokeKind::Subject {
                sub: sub.into(),
                iss: None,
                before: issued_before,
            },
        }
    }

    /// Every token of issuer `iss` issued before `issued_before` (a compromised signing
    /// key, or an identity provider's breach), or only those signed by one key with
    /// [`key_id`](Self::key_id).
    pub fn issuer(iss: impl Into<String>, issued_before: SystemTime) -> Self {
        Self::issuer_unix(iss, crate::clock::seconds_ceil(issued_before))
    }

    /// Like [`issuer`](Self::issuer), with `issued_before` in Unix seconds.
    pub fn issuer_unix(iss: impl Into<String>, issued_before: u64) -> Self {
        Self {
            kind: RevokeKind::Issuer {
                iss: iss.into(),
                kid: None,
                before: issued_before,
            },
        }
    }

    /// Narrows a subject revocation to the tokens of one issuer (`sub` is only unique per
    /// issuer). Ignored on other kinds.
    pub fn of_issuer(mut self, iss: impl Into<String>) -> Self {
        if let RevokeKind::Subject { iss: slot, .. } = &mut self.kind {
            *slot = Some(iss.into());
        }
        self
    }

    /// Narrows an issuer revocation to the tokens verified by the key with this `kid` (the
    /// `kid` of the configured or JWKS key that checked the signature), and makes it
    /// ignore `iat`: whoever holds a compromised key can write any `iat`, so every token
    /// that key verifies is refused. Ignored on other kinds.
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        if let RevokeKind::Issuer { kid: slot, .. } = &mut self.kind {
            *slot = Some(kid.into());
        }
        self
    }

    pub(crate) fn check(&self) -> Result<(), RevokeError> {
        let names: [(&'static str, Option<&str>); 2] = match &self.kind {
            RevokeKind::Token { jti, .. } => [("jti", Some(jti)), ("jti", None)],
            RevokeKind::Subject { sub, iss, .. } => [("sub", Some(sub)), ("iss", iss.as_deref())],
            RevokeKind::Issuer { iss, kid, .. } => [("iss", Some(iss)), ("kid", kid.as_deref())],
        };
        for (field, name) in names {
            if name.is_some_and(|name| name.len() > MAX_NAME_BYTES) {
                return Err(RevokeError::TooLong(field));
            }
        }
        let empty = match &self.kind {
            RevokeKind::Token { jti, .. } => jti.is_empty().then_some("jti"),
            RevokeKind::Subject { sub, iss, .. } => {
                if sub.is_empty() {
                    Some("sub")
                } else {
                    iss.as_deref().is_some_and(str::is_empty).then_some("iss")
                }
            }
            RevokeKind::Issuer { iss, kid, .. } => {
                if iss.is_empty() {
                    Some("iss")
                } else {
                    kid.as_deref().is_some_and(str::is_empty).then_some("kid")
                }
            }
        };
        match empty {
            Some(field) => Err(RevokeError::Empty(field)),
            None => Ok(()),
        }
    }
}

/// What a revocation check reads of a verified token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenFacts<'a> {
    pub(crate) jti: Option<&'a str>,
    pub(crate) sub: Option<&'a str>,
    pub(crate) iss: Option<&'a str>,
    pub(crate) iat: Option<u64>,
    pub(crate) kid: Option<&'a str>,
}

impl<'a> TokenFacts<'a> {
    pub(crate) fn of(claims: &'a Claims) -> Self {
        let raw = claims.raw();
        let text = |name: &str| raw.get(name).and_then(serde_json::Value::as_str);
        Self {
            jti: text("jti"),
            sub: text("sub"),
            iss: text("iss"),
            iat: raw.get("iat").and_then(|iat| {
                iat.as_u64()
                    .or_else(|| iat.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            }),
            kid: claims.key_id(),
        }
    }

    /// Whether the token counts as issued before `before`.
    pub(crate) fn issued_before(&self, before: u64) -> bool {
        self.iat.is_none_or(|iat| iat < before)
    }
}

/// A revocation store.
pub(crate) trait RevocationStore: Send + Sync + std::fmt::Debug {
    /// Whether the verified token behind `claims` is revoked now. O(1), no I/O: it runs
    /// on every request, so an empty store must answer without reading the claims or the
    /// clock.
    fn is_revoked(&self, claims: &Claims, clock: &UnixClock) -> bool;

    /// Records `revoke` at `now`.
    fn revoke(&self, revoke: &Revoke, now: u64) -> Result<(), RevokeError>;
}

/// What a revocation did, from [`ScopedCacheLayer::revoke`](crate::ScopedCacheLayer::revoke).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revoked {
    /// Whether the revocation is fleet-wide: without a Redis tier always (every clone of
    /// the layer shares one store); with one, whether Redis recorded it. When `false`, it
    /// holds on this instance and is retried every second until Redis records it; the
    /// other instances may take the token until then.
    pub fleet_wide: bool,
}

/// How long subject and issuer revocations are kept by default: the longest lifetime of
/// the tokens they are meant to stop.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Most revocations held by default (about 100 bytes each for `jti`s of 36 characters).
pub(crate) const DEFAULT_MAX_REVOCATIONS: usize = 2_000_000;
