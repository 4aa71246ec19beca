//! The in-process revocation store: three hash maps behind read-mostly locks.
//!
//! Memory: a revoked `jti` costs its text plus about 40 bytes (a boxed string and a
//! `u64` in a hash table at its load factor); subject and issuer revocations about as
//! much, plus their issuer or `kid`. The number of entries is bounded
//! ([`max`](MemoryRevocations::new)); expired entries are swept when the table has
//! doubled since the last sweep, so sweeping costs O(1) per revocation, amortised. Checks
//! never wait for a sweep to matter: an expired entry can only match a token that has
//! expired too.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use super::{RevocationStore, Revoke, RevokeError, RevokeKind, TokenFacts, UnixClock};
use crate::claims::Claims;

/// A subject's or an issuer's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Before {
    /// Only the tokens of this issuer (subject revocations) or key (issuer revocations).
    narrowed_to: Option<Box<str>>,
    /// Tokens with `iat` before this (Unix seconds) are revoked.
    before: u64,
    forget_at: u64,
}

/// Revoked `jti`s → when to forget each: the texts live end to end in one arena and the
/// table holds their ranges, so a million revocations are two allocations, not a million
/// (a million small live allocations slow every other allocation of the process).
#[derive(Default)]
struct JtiTable {
    /// foldhash, randomly seeded: several times faster than SipHash on a `jti`, and the
    /// keys come from operators, not from clients.
    hasher: DefaultHashBuilder,
    table: HashTable<Slot>,
    arena: String,
    /// Bytes of the arena no slot points at any more (forgotten `jti`s).
    dead: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    start: usize,
    len: u32,
    forget_at: u64,
}

/// Revoked `jti`s are private: show the count only.
impl std::fmt::Debug for JtiTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JtiTable")
            .field("len", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl JtiTable {
    fn text(&self, slot: &Slot) -> &str {
        self.arena
            .get(slot.start..slot.start + slot.len as usize)
            .unwrap_or_default()
    }

    fn get(&self, jti: &str) -> Option<u64> {
        let hash = self.hasher.hash_one(jti);
        self.table
            .find(hash, |slot| self.text(slot) == jti)
            .map(|slot| slot.forget_at)
    }

    /// Records `jti` until `forget_at` (or later, if already held); returns whether it is
    /// new.
    fn upsert(&mut self, jti: &str, forget_at: u64) -> bool {
        let hash = self.hasher.hash_one(jti);
        let (arena, hasher) = (&self.arena, &self.hasher);
        if let Some(slot) = self.table.find_mut(hash, |slot| {
            arena
                .get(slot.start..slot.start + slot.len as usize)
                .is_some_and(|text| text == jti)
        }) {
            slot.forget_at = slot.forget_at.max(forget_at);
            return false;
        }
        let slot = Slot {
            start: self.arena.len(),
            // Names are at most `MAX_NAME_BYTES` long.
            len: u32::try_from(jti.len()).unwrap_or(u32::MAX),
            forget_at,
        };
        self.arena.push_str(jti);
        let arena = &self.arena;
        self.table.insert_unique(hash, slot, |slot| {
            hasher.hash_one(
                arena
                    .get(slot.start..slot.start + slot.len as usize)
                    .unwrap_or_default(),
            )
        });
        true
    }

    /// Forgets the `jti`s whose time has passed at `now`, in place (no allocation, no
    /// rehash: the write lock is held briefly); the arena is compacted only once most of
    /// it is dead, so rebuilding is rare and amortised.
    fn sweep(&mut self, now: u64) {
        let mut dead = 0;
        self.table.retain(|slot| {
            let keep = slot.forget_at > now;
            if !keep {
                dead += slot.len as usize;
            }
            keep
        });
        self.dead += dead;
        if self.dead > self.arena.len() / 2 {
            let mut kept = JtiTable {
                hasher: self.hasher.clone(),
                table: HashTable::with_capacity(self.table.len()),
                arena: String::with_capacity(self.arena.len() - self.dead),
                dead: 0,
            };
            for slot in self.table.iter() {
                kept.upsert(self.text(slot), slot.forget_at);
            }
            *self = kept;
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn contains(&self, jti: &str) -> bool {
        self.get(jti).is_some()
    }
}

#[derive(Default)]
struct Tables {
    /// `jti` → when to forget it.
    tokens: JtiTable,
    subjects: HashMap<Box<str>, Vec<Before>>,
    issuers: HashMap<Box<str>, Vec<Before>>,
    /// Entries held (every `Before` counts one).
    len: usize,
    /// Sweep again when `len` reaches this.
    sweep_at: usize,
    /// The earliest `forget_at` held: a full store is not swept again before it.
    earliest: u64,
}

/// Revoked names are private: counts only.
impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("tokens", &self.tokens.len())
            .field("subjects", &self.subjects.len())
            .field("issuers", &self.issuers.len())
            .finish_non_exhaustive()
    }
}

/// Revocations in memory, at most `max` of them.
#[derive(Debug)]
pub(crate) struct MemoryRevocations {
    tables: RwLock<Tables>,
    /// Nothing was ever revoked: the check is one atomic load.
    empty: AtomicBool,
    max: usize,
    /// How long past its `exp` a token may still be presented (the verifiers' leeway).
    leeway: u64,
    /// How long subject and issuer revocations are kept.
    retention: u64,
}

/// A `jti` revocation is kept at most this long past the retention (a year).
const MAX_TOKEN_KEEP: u64 = 366 * 24 * 60 * 60;

/// The first sweep happens at this many entries.
const FIRST_SWEEP: usize = 1024;

impl MemoryRevocations {
    /// When `revoke`, recorded at `now`, can be forgotten (Unix seconds): a shared store
    /// keeps it as long.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn forget_at(&self, revoke: &Revoke, now: u64) -> u64 {
        let retained = now
            .saturating_add(self.retention)
            .saturating_add(self.leeway);
        match &revoke.kind {
            RevokeKind::Token { exp, .. } => exp
                .saturating_add(self.leeway)
                .saturating_add(1)
                .min(retained.saturating_add(MAX_TOKEN_KEEP)),
            _ => retained,
        }
    }

    pub(crate) fn new(max: usize, leeway: u64, retention: u64) -> Self {
        Self {
            tables: RwLock::new(Tables {
                sweep_at: FIRST_SWEEP,
                earliest: u64::MAX,
                ..Tables::default()
            }),
            empty: AtomicBool::new(true),
            max,
            leeway,
            retention,
        }
    }

    /// Every revocation held and not yet forgotten at `now`, with when it can be
    /// forgotten: what a shared tier writes back when Redis lost them. A `jti`'s `exp` is
    /// recovered from when it is forgotten (the leeway and a second before).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn export(&self, now: u64) -> Vec<(Revoke, u64)> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let mut held = Vec::with_capacity(tables.len);
        for slot in tables.tokens.table.iter().filter(|s| s.forget_at > now) {
            let exp = slot.forget_at.saturating_sub(self.leeway + 1);
            held.push((
                Revoke::token_unix(tables.tokens.text(slot), exp),
                slot.forget_at,
            ));
        }
        for (subject, rules) in &tables.subjects {
            for rule in rules.iter().filter(|r| r.forget_at > now) {
                let kind = RevokeKind::Subject {
                    sub: subject.to_string(),
                    iss: rule.narrowed_to.as_deref().map(str::to_owned),
                    before: rule.before,
                };
                held.push((Revoke { kind }, rule.forget_at));
            }
        }
        for (issuer, rules) in &tables.issuers {
            for rule in rules.iter().filter(|r| r.forget_at > now) {
                let kind = RevokeKind::Issuer {
                    iss: issuer.to_string(),
                    kid: rule.narrowed_to.as_deref().map(str::to_owned),
                    before: rule.before,
                };
                held.push((Revoke { kind }, rule.forget_at));
            }
        }
        held
    }

    /// What the store holds against its bound (entries both).
    pub(crate) fn usage(&self) -> crate::health::Usage {
        let len = self.len() as u64;
        crate::health::Usage {
            entries: len,
            bytes: len,
            bound: self.max as u64,
        }
    }

    fn len(&self) -> usize {
        self.tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }
}

impl Tables {
    /// Forgets every entry whose time has passed.
    fn sweep(&mut self, now: u64) {
        let mut len = 0;
        self.tokens.sweep(now);
        len += self.tokens.len();
        for map in [&mut self.subjects, &mut self.issuers] {
            map.retain(|_, rules| {
                rules.retain(|rule| rule.forget_at > now);
                len += rules.len();
                !rules.is_empty()
            });
        }
        self.len = len;
        self.sweep_at = (len * 2).max(FIRST_SWEEP);
        self.earliest = self
            .tokens
            .table
            .iter()
            .map(|slot| slot.forget_at)
            .chain(
                self.subjects
                    .values()
                    .chain(self.issuers.values())
                    .flatten()
                    .map(|rule| rule.forget_at),
            )
            .min()
            .unwrap_or(u64::MAX);
    }

    /// Whether an entry for `revoke` (the same `jti`, or the same subject or issuer with
    /// the same narrowing) is held.
    fn holds(&self, revoke: &Revoke) -> bool {
        let rule = |map: &HashMap<Box<str>, Vec<Before>>, key: &str, narrowed: Option<&str>| {
            map.get(key)
                .is_some_and(|rules| rules.iter().any(|r| r.narrowed_to.as_deref() == narrowed))
        };
        match &revoke.kind {
            RevokeKind::Token { jti, .. } => self.tokens.contains(jti),
            RevokeKind::Subject { sub, iss, .. } => rule(&self.subjects, sub, iss.as_deref()),
            RevokeKind::Issuer { iss, kid, .. } => rule(&self.issuers, iss, kid.as_deref()),
        }
    }

    fn add(map: &mut HashMap<Box<str>, Vec<Before>>, key: &str, rule: Before) -> usize {
        let rules = map.entry(key.into()).or_default();
        // The same narrowing again: keep the later cut-off, and remember it longest.
        if let Some(existing) = rules.iter_mut().find(|r| r.narrowed_to == rule.narrowed_to) {
            existing.before = existing.before.max(rule.before);
            existing.forget_at = existing.forget_at.max(rule.forget_at);
            return 0;
        }
        rules.push(rule);
        1
    }
}

/// How a rule table treats a token's `iat`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Issued {
    /// Subjects: the identity provider is trusted, its `iat` is taken as written.
    AsWritten,
    /// Issuers and keys: whoever holds a compromised key writes any `iat`, so a narrowed
    /// (per-key) rule ignores `iat` altogether, and an issuer-wide rule treats an `iat`
    /// in the future as forged.
    Distrusted,
}

/// Tokens may claim an `iat` this far ahead of our clock (clock skew) before an issuer
/// revocation takes them for forged.
const FUTURE_IAT_SLACK: u64 = 300;

fn matches(
    rules: Option<&Vec<Before>>,
    narrowing: Option<&str>,
    token: &TokenFacts<'_>,
    now: u64,
    issued: Issued,
) -> bool {
    rules.is_some_and(|rules| {
        rules.iter().any(|rule| {
            rule.forget_at > now
                && rule
                    .narrowed_to
                    .as_deref()
                    .is_none_or(|wanted| narrowing == Some(wanted))
                && match (issued, &rule.narrowed_to) {
                    (Issued::AsWritten, _) => token.issued_before(rule.before),
                    (Issued::Distrusted, Some(_)) => true,
                    (Issued::Distrusted, None) => {
                        token.issued_before(rule.before)
                            || token
                                .iat
                                .is_some_and(|iat| iat > now.saturating_add(FUTURE_IAT_SLACK))
                    }
                }
        })
    })
}

impl MemoryRevocations {
    /// Whether a revocation held at `now` matches `token`.
    fn matches(&self, token: &TokenFacts<'_>, now: u64) -> bool {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(jti) = token.jti
            && tables
                .tokens
                .get(jti)
                .is_some_and(|forget_at| forget_at > now)
        {
            return true;
        }
        if !tables.subjects.is_empty()
            && let Some(sub) = token.sub
            && matches(
                tables.subjects.get(sub),
                token.iss,
                token,
                now,
                Issued::AsWritten,
            )
        {
            return true;
        }
        !tables.issuers.is_empty()
            && token.iss.is_some_and(|iss| {
                matches(
                    tables.issuers.get(iss),
                    token.kid,
                    token,
                    now,
                    Issued::Distrusted,
                )
            })
    }
}

impl RevocationStore for MemoryRevocations {
    fn is_revoked(&self, claims: &Claims, clock: &UnixClock) -> bool {
        !self.empty.load(Ordering::Acquire) && self.matches(&TokenFacts::of(claims), clock.now())
    }

    fn revoke(&self, revoke: &Revoke, now: u64) -> Result<(), RevokeError> {
        revoke.check()?;
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        // Sweep when the table doubled, or when full and something can be forgotten;
        // a full store with nothing expired is not rebuilt on every call.
        if tables.len >= tables.sweep_at || (tables.len >= self.max && now >= tables.earliest) {
            tables.sweep(now);
            if tables.len == 0 {
                self.empty.store(true, Ordering::Release);
            }
        }
        // Updating a revocation already held takes no room, full or not.
        if tables.len >= self.max && !tables.holds(revoke) {
            return Err(RevokeError::Full(self.max));
        }
        // A token is accepted until `exp` plus the leeway: a revocation kept for the longest
        // token lifetime must cover the leeway too.
        let retained = now
            .saturating_add(self.retention)
            .saturating_add(self.leeway);
        // An `exp` years ahead (milliseconds by mistake, or `u64::MAX`) would hold a slot
        // for ever: no revocation is kept more than a year past the longest retention.
        let longest = retained.saturating_add(MAX_TOKEN_KEEP);
        let added = match &revoke.kind {
            RevokeKind::Token { jti, exp } => {
                let forget_at = exp
                    .saturating_add(self.leeway)
                    .saturating_add(1)
                    .min(longest);
                usize::from(tables.tokens.upsert(jti, forget_at))
            }
            RevokeKind::Subject { sub, iss, before } => Tables::add(
                &mut tables.subjects,
                sub,
                Before {
                    narrowed_to: iss.as_deref().map(Into::into),
                    before: *before,
                    forget_at: retained,
                },
            ),
            RevokeKind::Issuer { iss, kid, before } => Tables::add(
                &mut tables.issuers,
                iss,
                Before {
                    narrowed_to: kid.as_deref().map(Into::into),
                    before: *before,
                    forget_at: retained,
                },
            ),
        };
        tables.len += added;
        let forget_at = match &revoke.kind {
            RevokeKind::Token { exp, .. } => exp
                .saturating_add(self.leeway)
                .saturating_add(1)
                .min(longest),
            _ => retained,
        };
        tables.earliest = tables.earliest.min(forget_at);
        self.empty.store(false, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    fn store() -> MemoryRevocations {
        MemoryRevocations::new(10, 30, DAY)
    }

    fn token<'a>(jti: &'a str, sub: &'a str, iss: &'a str, iat: Option<u64>) -> TokenFacts<'a> {
        TokenFacts {
            jti: Some(jti),
            sub: Some(sub),
            iss: Some(iss),
            iat,
            kid: Some("k1"),
        }
    }

    #[test]
    fn a_token_is_revoked_until_it_expires_then_forgotten() {
        let s = store();
        let t = token("j1", "alice", "idp", Some(NOW));
        assert!(!s.matches(&t, NOW));
        s.revoke(&Revoke::token_unix("j1", NOW + 60), NOW).unwrap();
        assert!(s.matches(&t, NOW));
        assert!(!s.matches(&token("j2", "alice", "idp", Some(NOW)), NOW));
        // Until exp plus leeway.
        assert!(s.matches(&t, NOW + 90));
        assert!(!s.matches(&t, NOW + 91));
        // No jti, no revocation by jti.
        let anonymous_jti = TokenFacts { jti: None, ..t };
        assert!(!s.matches(&anonymous_jti, NOW));
    }

    #[test]
    fn a_subject_is_revoked_for_tokens_issued_before() {
        let s = store();
        s.revoke(&Revoke::subject_unix("alice", NOW), NOW).unwrap();
        assert!(s.matches(&token("a", "alice", "idp", Some(NOW - 1)), NOW));
        assert!(!s.matches(&token("b", "alice", "idp", Some(NOW)), NOW));
        // No iat: issued before anything.
        assert!(s.matches(&token("c", "alice", "other", None), NOW));
        assert!(!s.matches(&token("d", "bob", "idp", Some(NOW - 1)), NOW));
        // Kept for the retention plus the leeway (a token lives until `exp` + leeway), then
        // forgotten.
        assert!(s.matches(&token("a", "alice", "idp", Some(NOW - 1)), NOW + DAY + 29));
        assert!(!s.matches(&token("a", "alice", "idp", Some(NOW - 1)), NOW + DAY + 30));
    }

    #[test]
    fn a_subject_revocation_can_name_its_issuer() {
        let s = store();
        s.revoke(&Revoke::subject_unix("42", NOW).of_issuer("idp-a"), NOW)
            .unwrap();
        assert!(s.matches(&token("a", "42", "idp-a", Some(NOW - 1)), NOW));
        assert!(!s.matches(&token("a", "42", "idp-b", Some(NOW - 1)), NOW));
    }

    #[test]
    fn an_issuer_or_one_of_its_keys_is_revoked() {
        let s = store();
        s.revoke(&Revoke::issuer_unix("idp", NOW).key_id("k2"), NOW)
            .unwrap();
        let signed_by_k1 = token("a", "alice", "idp", Some(NOW - 1));
        assert!(!s.matches(&signed_by_k1, NOW));
        let signed_by_k2 = TokenFacts {
            kid: Some("k2"),
            ..signed_by_k1
        };
        assert!(s.matches(&signed_by_k2, NOW));
        // Whoever holds the key writes any `iat`: a key revocation ignores it.
        let forged = TokenFacts {
            iat: Some(NOW + 10_000),
            ..signed_by_k2
        };
        assert!(s.matches(&forged, NOW));
        s.revoke(&Revoke::issuer_unix("idp", NOW), NOW).unwrap();
        assert!(s.matches(&signed_by_k1, NOW));
        // Issuer-wide, an `iat` in the future is taken for forged.
        let future = TokenFacts {
            iat: Some(NOW + 3_600),
            ..signed_by_k1
        };
        assert!(s.matches(&future, NOW));
        assert!(!s.matches(&token("a", "alice", "idp", Some(NOW)), NOW));
        assert!(!s.matches(&token("a", "alice", "other", Some(NOW - 1)), NOW));
    }

    #[test]
    fn the_store_is_bounded_and_sweeps_what_expired() {
        let s = store();
        for n in 0..10 {
            s.revoke(&Revoke::token_unix(format!("j{n}"), NOW + 10), NOW)
                .unwrap();
        }
        assert!(matches!(
            s.revoke(&Revoke::token_unix("full", NOW + 10), NOW),
            Err(RevokeError::Full(10))
        ));
        // Once they expired, they are swept to make room.
        s.revoke(&Revoke::token_unix("later", NOW + 100), NOW + 50)
            .unwrap();
        assert_eq!(s.len(), 1);
        // Revoking the same thing twice holds one entry.
        s.revoke(&Revoke::token_unix("later", NOW + 200), NOW + 50)
            .unwrap();
        s.revoke(&Revoke::subject_unix("alice", NOW), NOW + 50)
            .unwrap();
        s.revoke(&Revoke::subject_unix("alice", NOW + 5), NOW + 50)
            .unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.matches(&token("x", "alice", "idp", Some(NOW + 4)), NOW + 50));
    }

    #[test]
    fn sweeping_forgets_in_place_and_compacts_a_mostly_dead_arena() {
        let s = MemoryRevocations::new(1_000_000, 0, DAY);
        for n in 0..2_000 {
            s.revoke(&Revoke::token_unix(format!("early-{n:04}"), NOW + 10), NOW)
                .unwrap();
        }
        for n in 0..10 {
            s.revoke(&Revoke::token_unix(format!("late-{n}"), NOW + 1_000), NOW)
                .unwrap();
        }
        // The table has doubled since the first sweep: this call sweeps.
        for n in 0..100 {
            s.revoke(
                &Revoke::token_unix(format!("new-{n}"), NOW + 1_000),
                NOW + 100,
            )
            .unwrap();
        }
        let tables = s.tables.read().unwrap();
        assert_eq!(tables.tokens.len(), 110);
        assert_eq!(tables.tokens.get("early-0001"), None);
        assert!(tables.tokens.get("late-3").is_some());
        assert!(tables.tokens.get("new-99").is_some());
        // Most of the arena was dead: it was rebuilt to what is still remembered.
        assert!(
            tables.tokens.arena.len() < 1_000,
            "{}",
            tables.tokens.arena.len()
        );
        assert_eq!(tables.tokens.dead, 0);
    }

    #[test]
    fn what_is_held_can_be_exported_and_held_again_elsewhere() {
        let here = store();
        here.revoke(&Revoke::token_unix("t1", NOW + DAY), NOW)
            .unwrap();
        here.revoke(&Revoke::subject_unix("alice", NOW).of_issuer("idp"), NOW)
            .unwrap();
        here.revoke(&Revoke::issuer_unix("idp", NOW).key_id("k1"), NOW)
            .unwrap();
        let exported = here.export(NOW);
        assert_eq!(exported.len(), 3);
        let there = store();
        for (revoke, forget_at) in &exported {
            assert_eq!(*forget_at, here.forget_at(revoke, NOW), "{revoke:?}");
            there.revoke(revoke, NOW).unwrap();
        }
        let sorted = |mut held: Vec<(Revoke, u64)>| {
            held.sort_by_key(|(revoke, _)| format!("{revoke:?}"));
            held
        };
        assert_eq!(sorted(there.export(NOW)), sorted(exported));
        assert!(
            here.export(NOW + 2 * DAY).is_empty(),
            "forgotten ones are not"
        );
    }

    #[test]
    fn empty_names_are_refused() {
        let s = store();
        assert!(matches!(
            s.revoke(&Revoke::token_unix("", NOW), NOW),
            Err(RevokeError::Empty("jti"))
        ));
        assert!(matches!(
            s.revoke(&Revoke::subject_unix("a", NOW).of_issuer(""), NOW),
            Err(RevokeError::Empty("iss"))
        ));
    }
}
