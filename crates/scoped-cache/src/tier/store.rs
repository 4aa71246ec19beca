//! [`Tier`]: memory (L1) in front of Redis (L2), for responses and revocations.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::RedisTier;
use super::admission::{self, Admission};
use super::codec::{self, Clock};
use super::conn::{Redis, StoreError};
use super::held::SharedRevocations;
use super::journal::{Change, JOURNAL_LEN, MAX_CHANGE_BYTES, MAX_SEQ, RECORD, Record, parse_seq};
use super::keys::{CLAIM_HASH, Keys, claim_hash, member};
use super::seal::Signer;
use crate::cache::key::CacheKey;
use crate::cache::purge::{IndexKey, Purge, PurgeError, Purged, Selector};
use crate::cache::store::{
    CacheStats, CachedResponse, Epoch, Freshness, Hit, Lease, LeaseGuard, MemoryStore, Probe,
    ResponseStore, Source,
};
use crate::revocation::MemoryRevocations;
use crate::task::AbortOnDrop;

/// Shared purges remembered to tell whether one happened to match an entry written
/// meanwhile; an entry older than all of them is not kept in Redis.
const RECENT_SHARED_PURGES: usize = 256;
/// Purges made while Redis was unreachable, replayed when it is back; past this many they
/// collapse into one purge of everything.
const MAX_PENDING_PURGES: usize = 1024;
/// The shortest signing key taken: 256 bits.
const MIN_SIGNING_KEY: usize = 32;
/// Tries to record one change while other instances record theirs: each miss means
/// another instance recorded one, so all but a storm of this many get through.
const RECORD_ATTEMPTS: usize = 16;
/// Writes to Redis in flight at once; a miss beyond that is kept in memory only, so a slow
/// Redis never piles up tasks and the entries they hold.
const MAX_WRITES_IN_FLIGHT: usize = 256;
/// Index sets outlive their last member by this much.
const INDEX_SLACK_MS: u64 = 60_000;
/// Adds `ARGV[1]` to the index set `KEYS[1]`, scored by when its entry expires on
/// Redis's own clock (`ARGV[2]` ms from now), drops the members whose entries expired,
/// and keeps the set `ARGV[3]` ms past its longest member. One clock scores and trims
/// every member, so an instance whose clock runs fast trims nobody else's live entries.
const INDEX: &str = r"#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local life = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + life, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local keep = life + tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 0";
/// Members read from an index set per round trip while purging.
const PURGE_BATCH: usize = 1000;
/// Round trips one index set's purge may take (10 million members).
const MAX_PURGE_ROUNDS: usize = 10_000;

/// `SET KEYS[1] ARGV[1]` unless it already holds a larger number; with `ARGV[2]`, the key
/// then expires in that many ms (or later).
const SET_MAX: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[2] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return 0";
/// Raw values longer than this are not decoded (the body limit plus room for metadata).
const METADATA_ROOM: usize = 1024 * 1024;
/// `HSET KEYS[1] ARGV[1] ARGV[2]` unless the field holds a larger number; then the key
/// expires in `ARGV[3]` ms (or later).
const HSET_MAX: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 0";
/// Deletes a lease only if this instance still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";
/// Turns a lease this instance holds into [`NOTHING_STORED`] for `ARGV[2]` ms: the key's
/// answer is not stored, so the waiting instances execute at once instead of taking the
/// lease one after another.
const GIVE_UP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], 'none', 'PX', ARGV[2]) end
return 0";
/// What a lease holds once its holder executed and stored nothing.
const NOTHING_STORED: &str = "none";

/// Memory in front of Redis: the response store and the revocation store of a layer with
/// a [`RedisTier`], and the subscriber that keeps its memory in step with the fleet.
pub(crate) struct Tier {
    pub(crate) redis: Redis,
    pub(crate) keys: Keys,
    pub(crate) l1: MemoryStore,
    pub(crate) revocations: SharedRevocations,
    pub(crate) admission: Admission,
    /// Signs and checks every value (see [`RedisTier::signing_key`]).
    signer: Option<Signer>,
    max_entry_bytes: usize,
    local_ttl: Duration,
    lease: Duration,
    /// How long after its last sync this instance serves from its cache and takes tokens
    /// (see [`RedisTier::max_lag`]).
    max_lag: Duration,
    accept_tokens_when_cut_off: bool,
    /// The highest purge sequence heard (never ahead of Redis as it was when heard).
    seq: AtomicU64,
    /// When the last sync began, in ms since `base`; `u64::MAX` before the first.
    synced_at: AtomicU64,
    /// [`Redis::outages`] when the last sync began: an outage since then stops reads from
    /// Redis until the next sync.
    synced_outages: AtomicU64,
    /// When an unreadable entry was last warned about (ms since `base`): at most one
    /// warning a minute, however many a rollout or a planted key makes.
    warned_at: AtomicU64,
    base: Instant,
    /// The last changes heard, by sequence number: purges with their selector.
    recent: Mutex<VecDeque<(u64, Option<Selector>)>>,
    pending: Mutex<Vec<Selector>>,
    /// Purges on their way to Redis: reads from Redis wait until they are recorded.
    purging: Arc<AtomicUsize>,
    /// A replay of what waited for Redis is running.
    sharing: AtomicBool,
    writes: Arc<Semaphore>,
    /// Leases this instance holds: cache key → token. A store takes its key's lease over
    /// and releases it once the entry is in Redis.
    leases: Mutex<HashMap<CacheKey, u64>>,
    tokens: AtomicU64,
    /// The syncer and the subscriber (see [`sync`](super::sync)), started once.
    pub(crate) tasks: OnceLock<(AbortOnDrop<()>, AbortOnDrop<()>)>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("redis", &self.redis)
            .field("l1", &self.l1)
            .finish_non_exhaustive()
    }
}

/// What one lookup round trip found.
struct Fetched {
    entry: Option<CachedResponse>,
    /// This call took the key's lease.
    won: bool,
    /// The lease says its holder executed and stored nothing.
    nothing_stored: bool,
}

/// A held fleet-wide lease (see [`LeaseGuard`]).
#[derive(Debug)]
pub(crate) struct LeaseHold {
    tier: Arc<Tier>,
    key: CacheKey,
    token: u64,
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        // Still ours (no store took it over): nothing will be written, so let the waiting
        // instances go now rather than when the lease runs out.
        let ours = {
            let mut leases = self
                .tier
                .leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match leases.get(&self.key) {
                Some(token) if *token == self.token => leases.remove(&self.key).is_some(),
                _ => false,
            }
        };
        if ours && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tier = Arc::clone(&self.tier);
            let (key, token) = (self.key, self.token);
            runtime.spawn(async move { tier.give_up(&key, token).await });
        }
    }
}

/// Counts a purge on its way to Redis while it lives.
struct Purging(Arc<AtomicUsize>);

impl Purging {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Purging {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn clock() -> Clock {
    Clock {
        now: Instant::now(),
        unix_ms: crate::clock::now_millis(),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Tier {
    /// Checks the settings (no I/O) and makes the tier.
    pub(crate) fn build(
        config: &RedisTier,
        l1: MemoryStore,
        revocations: MemoryRevocations,
        max_entry_bytes: usize,
    ) -> Result<Self, crate::BuildError> {
        let invalid =
            |field: &'static str, reason: String| crate::BuildError::InvalidRedis { field, reason };
        let tls = config.url.starts_with("rediss:");
        if !tls && (config.ca.is_some() || config.client_certificate.is_some()) {
            return Err(invalid(
                "url",
                "a CA or client certificate needs a `rediss://` URL".into(),
            ));
        }
        if config
            .signing_key
            .as_ref()
            .is_some_and(|key| key.len() < MIN_SIGNING_KEY)
        {
            return Err(invalid(
                "signing_key",
                format!("must be at least {MIN_SIGNING_KEY} bytes"),
            ));
        }
        if config.prefix.is_empty() || config.prefix.len() > 128 {
            return Err(invalid("key_prefix", "must be 1 to 128 bytes".into()));
        }
        for (field, value) in [
            ("fetch_timeout", config.fetch_timeout),
            ("insert_timeout", config.insert_timeout),
            ("local_ttl", config.local_ttl),
            ("lease", config.lease),
            ("cool_down", config.cool_down),
            ("max_lag", config.max_lag),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must not be zero".into()));
            }
        }
        let signer = match &config.signing_key {
            Some(key) => Some(
                Signer::new(key, &config.prefix)
                    .ok_or_else(|| invalid("signing_key", "not usable as an HMAC key".into()))?,
            ),
            None => None,
        };
        // The error's text could quote the URL, password included: keep only its kind.
        Self::new(config, l1, revocations, max_entry_bytes, signer).map_err(|err| {
            let field = if tls && (config.ca.is_some() || config.client_certificate.is_some()) {
                "tls"
            } else {
                "url"
            };
            invalid(field, format!("not usable ({:?})", err.kind()))
        })
    }

    fn new(
        config: &RedisTier,
        l1: MemoryStore,
        revocations: MemoryRevocations,
        max_entry_bytes: usize,
        signer: Option<Signer>,
    ) -> Result<Self, redis::RedisError> {
        let hasher = RandomState::new();
        Ok(Self {
            redis: Redis::new(config)?,
            keys: Keys::new(&config.prefix),
            l1,
            revocations: SharedRevocations::new(revocations),
            admission: Admission::new(),
            signer,
            max_entry_bytes,
            // A copy outliving `max_lag` could outlive a purge record being written when
            // it was read.
            local_ttl: config.local_ttl.min(config.max_lag),
            lease: config.lease,
            max_lag: config.max_lag,
            accept_tokens_when_cut_off: config.accept_tokens_when_cut_off,
            seq: AtomicU64::new(0),
            synced_at: AtomicU64::new(u64::MAX),
            synced_outages: AtomicU64::new(u64::MAX),
            warned_at: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            recent: Mutex::new(VecDeque::new()),
            pending: Mutex::new(Vec::new()),
            purging: Arc::new(AtomicUsize::new(0)),
            sharing: AtomicBool::new(false),
            writes: Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT)),
            leases: Mutex::new(HashMap::new()),
            tokens: AtomicU64::new(hasher.hash_one(0u8)),
            tasks: OnceLock::new(),
        })
    }

    /// Runs a write of a record, making room among this deployment's entries if Redis's
    /// memory is full (see [`admission::with_room`]).
    pub(crate) async fn with_room<T, F, Fut>(&self, write: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        admission::with_room(&self.redis, &self.admission, &self.keys, write).await
    }

    pub(crate) fn observe_seq(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// The highest purge sequence heard: Redis answering lower lost changes.
    pub(crate) fn high(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Whether to warn of an unreadable value: the first one a minute.
    pub(crate) fn warn_now(&self) -> bool {
        let now = self.millis_since_base(Instant::now());
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= 60_000;
        due && self
            .warned_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn millis_since_base(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.base))
    }

    /// A sync that began at `started`, with `outages` outages seen then, completed.
    pub(crate) fn mark_in_step(&self, started: Instant, outages: u64) {
        self.synced_at
            .store(self.millis_since_base(started), Ordering::Release);
        self.synced_outages.store(outages, Ordering::Release);
    }

    /// Whether this instance applied, at most [`RedisTier::max_lag`] ago, every change
    /// Redis had recorded: only then does it serve from its cache (memory included) and,
    /// unless told otherwise, take tokens. A cut-off instance cannot know what the fleet
    /// purged or revoked meanwhile.
    pub(crate) fn in_step(&self, now: Instant) -> bool {
        let synced_at = self.synced_at.load(Ordering::Acquire);
        synced_at != u64::MAX
            && self.millis_since_base(now).saturating_sub(synced_at) <= millis(self.max_lag)
    }

    pub(crate) fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    pub(crate) fn max_lag(&self) -> Duration {
        self.max_lag
    }

    /// Whether revocations are known well enough to take a token now.
    pub(crate) fn knows_revocations(&self, now: Instant) -> bool {
        self.accept_tokens_when_cut_off || self.in_step(now)
    }

    /// Whether a read from Redis may be served now: Redis answers, no outage happened
    /// since the last sync (Redis may have restarted or failed over without what it
    /// recorded), and no purge of this instance is on its way to Redis (its entries may
    /// still be there).
    fn reads_redis(&self) -> bool {
        self.redis.available()
            && self.synced_outages.load(Ordering::Acquire) == self.redis.outages()
            && self.purging.load(Ordering::Acquire) == 0
            && self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    /// Everything in memory goes (this instance may have missed changes).
    pub(crate) async fn flush_memory(&self) {
        if let Err(err) = self.l1.purge(&Purge::all()).await {
            tracing::debug!(%err, "flushing memory failed");
        }
    }

    /// A change of the journal, applied here.
    pub(crate) async fn apply_purge(&self, seq: u64, selector: Selector) {
        self.remember(seq, Some(&selector));
        if let Err(err) = self.l1.purge(&Purge { selector }).await {
            tracing::debug!(%err, "a purge selected nothing");
        }
    }

    /// Records `change` in the journal (with a revocation: in the revocation set too);
    /// returns its sequence number and its record's digest.
    pub(crate) async fn record(
        &self,
        change: &Change,
        revocation: Option<(&[u8], u64)>,
    ) -> Result<(u64, [u8; 16]), StoreError> {
        let mut payload = change.encode();
        if payload.len() > MAX_CHANGE_BYTES && matches!(change, Change::Purge { .. }) {
            // More is purged, never less, and the journal stays small.
            payload = Change::Purge {
                selector: super::journal::WireSelector::All,
            }
            .encode();
        }
        // Never at or below the highest number seen here: after Redis lost data the
        // sequence goes on above what the fleet knew.
        let floor = self.high();
        // The first guess of Redis's sequence; a wrong one costs a round trip.
        let mut expected = floor;
        let key_check = super::seal::key_check(self.signer());
        for _ in 0..RECORD_ATTEMPTS {
            let seq = expected.max(floor) + 1;
            if seq > MAX_SEQ {
                return Err(StoreError::Unreadable("the purge sequence"));
            }
            let member = Record::member(seq, &payload, self.signer());
            let (recorded, current): (u8, Vec<u8>) = self
                .with_room(|| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("EVAL")
                        .arg(RECORD)
                        .arg(if revocation.is_some() { 4 } else { 3 })
                        .arg(self.keys.named("seq"))
                        .arg(self.keys.named("log"))
                        .arg(self.keys.named("keycheck"));
                    if revocation.is_some() {
                        pipe.arg(self.keys.named("revocations"));
                    }
                    pipe.arg(expected)
                        .arg(seq)
                        .arg(&member)
                        .arg(JOURNAL_LEN)
                        .arg(&key_check);
                    if let Some((member, forget_at_ms)) = revocation {
                        pipe.arg(member).arg(forget_at_ms);
                    }
                    async move {
                        self.redis
                            .write::<((u8, Vec<u8>),)>(&pipe)
                            .await
                            .map(|(r,)| r)
                    }
                })
                .await?;
            match recorded {
                1 => {
                    self.observe_seq(seq);
                    return Ok((seq, super::journal::digest(&member)));
                }
                2 => return Err(StoreError::KeyMismatch),
                _ => {}
            }
            expected = parse_seq(&current).ok_or(StoreError::Unreadable("the purge sequence"))?;
        }
        Err(StoreError::Contended(RECORD_ATTEMPTS))
    }

    /// The record of a purge of everything at `seq`.
    pub(crate) async fn record_all(&self, seq: u64) -> Result<(), StoreError> {
        let all = self.keys.named("all");
        self.with_room(|| {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(SET_MAX)
                .arg(1)
                .arg(&all)
                .arg(seq)
                .ignore();
            async move { self.redis.write::<()>(&pipe).await }
        })
        .await
    }

    /// Shares what waited for Redis (purges, then revocations) in a task of its own, one
    /// at a time, once this instance is in step.
    pub(crate) fn share_pending_later(self: &Arc<Self>) {
        let waiting = !self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
            || self.revocations.has_pending();
        if !waiting || !self.in_step(Instant::now()) || self.sharing.swap(true, Ordering::AcqRel) {
            return;
        }
        let tier = Arc::clone(self);
        tokio::spawn(async move {
            tier.replay().await;
            tier.replay_revocations().await;
            tier.sharing.store(false, Ordering::Release);
        });
    }

    pub(crate) fn epoch(&self) -> Epoch {
        Epoch {
            local: self.l1.epoch().local,
            shared: self.seq.load(Ordering::Acquire),
        }
    }

    pub(crate) fn get_local(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        self.l1.get_local(key, now)
    }

    pub(crate) async fn get<F>(
        self: &Arc<Self>,
        key: &CacheKey,
        now: Instant,
        probe: F,
    ) -> Option<Hit>
    where
        F: FnOnce() -> Probe + Send,
    {
        self.start();
        if !self.in_step(now) {
            return None;
        }
        if let Some(entry) = self.l1.get_local(key, now) {
            return Some(Hit {
                entry,
                source: Source::Memory,
            });
        }
        if !self.reads_redis() {
            return None;
        }
        // In a future of its own, so a memory hit's request does not carry a Redis call's.
        Box::pin(self.get_remote(key, probe)).await
    }

    /// [`get`](Self::get) past memory: the entry from Redis, held in memory for
    /// `local_ttl`.
    async fn get_remote<F>(self: &Arc<Self>, key: &CacheKey, probe: F) -> Option<Hit>
    where
        F: FnOnce() -> Probe + Send,
    {
        // Taken before Redis is asked: a purge this instance hears of meanwhile keeps the
        // copy out of memory.
        let since = self.l1.epoch();
        let entry = self.fetch(key, &probe(), None).await?.entry?;
        let entry = Arc::new(entry);
        self.l1.hold(
            *key,
            Arc::clone(&entry),
            since,
            Instant::now() + self.local_ttl,
        );
        Some(Hit {
            entry,
            source: Source::Redis,
        })
    }

    /// The entry for `key` in Redis, if it is there, intact, usable, and no purge since it
    /// was written covers it; and, with `lease`, whether this call took the key's lease.
    /// `None` when Redis did not answer.
    /// One round trip: the entry, the purge sequence, the purge records the request's
    /// operation, root fields and claim values could be named in, and the lease.
    async fn fetch(&self, key: &CacheKey, probe: &Probe, lease: Option<u64>) -> Option<Fetched> {
        // Before the round trip: a number heard meanwhile is no sign that Redis went back.
        let high = self.high();
        let mut pipe = redis::pipe();
        pipe.get(self.keys.entry(key))
            .get(self.keys.named("seq"))
            .get(self.keys.named("all"));
        match lease {
            Some(token) => pipe
                .cmd("SET")
                .arg(self.keys.lease(key))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(millis(self.lease).max(1))
                .arg("GET"),
            None => pipe.cmd("PING"),
        };
        match &probe.operation {
            Some(name) => pipe.get(self.keys.record(&IndexKey::Operation(Arc::clone(name)))),
            None => pipe.cmd("PING"),
        };
        for field in &probe.fields {
            pipe.get(self.keys.record(&IndexKey::Field(Arc::clone(field))));
        }
        for claim in &probe.claims {
            pipe.hgetall(self.keys.scope(claim));
        }
        let values: Vec<Value> = match self.redis.fetch(&pipe).await {
            Ok(values) => values,
            Err(err) => {
                tracing::debug!(%err, "redis lookup failed; going on without it");
                return None;
            }
        };
        let mut values = values.into_iter();
        let raw: Option<Vec<u8>> = values
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .flatten();
        // An unreadable sequence: as if Redis did not answer. Unreadable records: as if
        // they purged everything (a miss is always safe).
        let Some(seq) = number(values.next()) else {
            if self.warn_now() {
                tracing::warn!(
                    "an unreadable purge sequence in redis; nothing is read from it (one warning a minute)"
                );
            }
            return None;
        };
        let all = number(values.next()).unwrap_or(u64::MAX);
        // `SET NX GET` answers nil when it set the lease, else what the lease holds.
        let (won, nothing_stored) = match (lease, values.next()) {
            (Some(_), Some(reply)) => match redis::from_redis_value::<Option<String>>(reply) {
                Ok(None) => (true, false),
                Ok(Some(held)) => (false, held == NOTHING_STORED),
                Err(_) => (false, false),
            },
            _ => (false, false),
        };
        let found = |entry| {
            Some(Fetched {
                entry,
                won,
                nothing_stored,
            })
        };
        // (A `PING` holds the place of an operation record when the request names none.)
        let operation = match (&probe.operation, values.next()) {
            (Some(_), value) => number(value).unwrap_or(u64::MAX),
            (None, _) => 0,
        };
        let fields: Vec<u64> = values
            .by_ref()
            .take(probe.fields.len())
            .map(|v| number(Some(v)).unwrap_or(u64::MAX))
            .collect();
        if seq < high {
            // Redis lost changes it had recorded: nothing it holds is served until the
            // syncer has purged what was written before.
            self.redis.wake().notify_one();
            return found(None);
        }
        self.observe_seq(seq);
        let Some(raw) = raw else {
            return found(None);
        };
        if raw.len() > self.max_entry_bytes.saturating_add(METADATA_ROOM) {
            if self.warn_now() {
                tracing::warn!(
                    bytes = raw.len(),
                    "an oversized value in redis is treated as a miss (one warning a minute)"
                );
            }
            return found(None);
        }
        let decoded = match codec::decode_sealed(
            key,
            &raw,
            self.max_entry_bytes,
            clock(),
            self.signer(),
        ) {
            Ok(decoded) => decoded,
            Err(err) => {
                // Never the value or the key's request: they may be private.
                if self.warn_now() {
                    tracing::warn!(%err, bytes = raw.len(), "an unreadable entry in redis is treated as a miss (one warning a minute)");
                }
                return found(None);
            }
        };
        let since = decoded.since;
        let meta = &decoded.entry.meta;
        // Records only count for what the entry holds: an entry under this key was made by
        // the same operation and root fields (the key covers the document).
        let purged_by_name = (meta.operation == probe.operation && operation > since)
            || probe
                .fields
                .iter()
                .zip(&fields)
                .any(|(field, seq)| *seq > since && meta.fields.contains(field));
        // An entry newer than the sequence was written against a sequence Redis has since
        // lost (a restart, a flush): no purge record can be trusted to cover it.
        if since < all
            || since > seq
            || purged_by_name
            || self.purged_since(since, &decoded.entry)
            || decoded.entry.usable_until() <= Instant::now()
        {
            return found(None);
        }
        let mut records: Vec<(Vec<u8>, u64)> = Vec::new();
        for value in values {
            match redis::from_redis_value::<Vec<(Vec<u8>, u64)>>(value) {
                Ok(fields) => records.extend(fields),
                // A scope record that cannot be read may hold a purge of this bucket.
                Err(_) => return found(None),
            }
        }
        // Records of claim values the request did not name (a scope learned meanwhile):
        // one more round trip, rare.
        let named: Vec<[u8; CLAIM_HASH]> = probe.claims.iter().map(|c| claim_hash(c)).collect();
        let missing: Vec<&Arc<[u8]>> = meta
            .claims
            .iter()
            .filter(|c| !named.contains(&claim_hash(c)))
            .collect();
        if !missing.is_empty() {
            let mut pipe = redis::pipe();
            for claim in &missing {
                pipe.hgetall(self.keys.scope(claim));
            }
            match self.redis.fetch::<Vec<Vec<(Vec<u8>, u64)>>>(&pipe).await {
                Ok(more) => records.extend(more.into_iter().flatten()),
                Err(_) => return None,
            }
        }
        if !records.is_empty() {
            let held: Vec<[u8; CLAIM_HASH]> = meta.claims.iter().map(|c| claim_hash(c)).collect();
            let purged = records.iter().any(|(field, seq)| {
                *seq > since
                    && !field.is_empty()
                    && field.len() % CLAIM_HASH == 0
                    && field
                        .chunks(CLAIM_HASH)
                        .all(|chunk| held.iter().any(|h| h.as_slice() == chunk))
            });
            if purged {
                return found(None);
            }
        }
        found(Some(decoded.entry))
    }

    fn release_later(self: &Arc<Self>, key: CacheKey, token: u64) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tier = Arc::clone(self);
            runtime.spawn(async move { tier.release(&key, token).await });
        }
    }

    /// Stores in memory now and in Redis off the request path.
    pub(crate) fn insert(
        self: &Arc<Self>,
        key: CacheKey,
        entry: CachedResponse,
        since: Epoch,
    ) -> bool {
        // A cut-off instance stores nothing: a change it cannot hear of may cover it.
        if !self.in_step(Instant::now()) {
            return false;
        }
        let entry = Arc::new(entry);
        let until = entry.usable_until();
        if !self.l1.hold(key, Arc::clone(&entry), since, until) {
            return false;
        }
        if !self.admission.is_open() {
            return true;
        }
        let (Ok(permit), Ok(runtime)) = (
            Arc::clone(&self.writes).try_acquire_owned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            // The lease stays with the request's guard, which releases it.
            tracing::debug!("too many redis writes in flight; this entry stays in memory only");
            return true;
        };
        // The write releases the lease once the entry is readable, so the instances
        // waiting for it find it.
        let lease = self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        let tier = Arc::clone(self);
        runtime.spawn(async move {
            if let Err(err) = tier.write(&key, &entry, since.shared).await {
                if err.is_oom() {
                    tier.admission.close();
                }
                tracing::debug!(%err, "writing an entry to redis failed; it stays in memory only");
                // The entry may have been written before the failure, and missed a purge
                // the check after it would have caught: take it out again.
                let entry_key = tier.keys.entry(&key);
                let _ = tier
                    .redis
                    .write::<()>(redis::pipe().del(entry_key).ignore())
                    .await;
            }
            if let Some(token) = lease {
                tier.release(&key, token).await;
            }
            drop(permit);
        });
        true
    }

    /// Writes the entry and its index members, then checks that no purge happened since
    /// its execution started that matches it (or might have: then it is deleted again).
    async fn write(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        since: u64,
    ) -> Result<(), StoreError> {
        let clock = clock();
        let life = millis(entry.usable_until().saturating_duration_since(clock.now));
        if life == 0 {
            return Ok(());
        }
        let bytes = match codec::encode_sealed(key, entry, since, clock, self.signer()) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::debug!(%err, "this entry cannot be written to redis; it stays in memory only");
                return Ok(());
            }
        };
        let entry_key = self.keys.entry(key);
        let high = self.high();
        let mut pipe = redis::pipe();
        // The longest life first: a scope record written from now on outlives this entry.
        pipe.cmd("EVAL")
            .arg(SET_MAX)
            .arg(1)
            .arg(self.keys.named("life"))
            .arg(life)
            .ignore();
        pipe.cmd("SET")
            .arg(&entry_key)
            .arg(bytes)
            .arg("PX")
            .arg(life)
            .ignore();
        for index_key in entry.meta.index_keys() {
            // Scopes, operations and root fields are purged by record, not by index (see
            // the module docs): only tags have sets. Members whose entries expired go on
            // every write: a set never outgrows the entries alive.
            if !matches!(index_key, IndexKey::Tag(_)) {
                continue;
            }
            pipe.cmd("EVAL")
                .arg(INDEX)
                .arg(1)
                .arg(self.keys.index(&index_key))
                .arg(member(key))
                .arg(life)
                .arg(INDEX_SLACK_MS)
                .ignore();
        }
        pipe.get(self.keys.named("seq"));
        let (seq,): (Value,) = self.redis.bulk(&pipe).await?;
        let Some(seq) = number(Some(seq)) else {
            // Not a sequence the layer wrote: nothing about this entry can be checked.
            self.redis
                .write::<()>(redis::pipe().del(&entry_key).ignore())
                .await?;
            return Ok(());
        };
        self.observe_seq(seq);
        let stale = if seq < since.max(high) {
            // Redis lost changes: nothing about this entry can be checked.
            self.redis.wake().notify_one();
            true
        } else {
            seq > since && !self.spared(since, seq, entry)
        };
        if stale {
            self.redis
                .write::<()>(redis::pipe().del(&entry_key).ignore())
                .await?;
        }
        Ok(())
    }

    /// Whether every purge in `(since, seq]` is known here and none matches `entry`.
    fn spared(&self, since: u64, seq: u64, entry: &CachedResponse) -> bool {
        if seq - since > RECENT_SHARED_PURGES as u64 {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        (since + 1..=seq).all(|n| {
            recent
                .iter()
                .find(|(s, _)| *s == n)
                .is_some_and(|(_, selector)| {
                    selector.as_ref().is_none_or(|s| !entry.meta.matches(s))
                })
        })
    }

    /// Whether a purge remembered here, made after `since`, matches `entry` (one this
    /// instance applied while the purge's records were still being written).
    fn purged_since(&self, since: u64, entry: &CachedResponse) -> bool {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().any(|(seq, selector)| {
            *seq > since && selector.as_ref().is_some_and(|s| entry.meta.matches(s))
        })
    }

    /// Remembers the change at `seq`: a purge by its selector, anything else (`None`) as
    /// matching no entry.
    pub(crate) fn remember(&self, seq: u64, selector: Option<&Selector>) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.iter().any(|(known, _)| *known == seq) {
            return;
        }
        recent.push_back((seq, selector.cloned()));
        while recent.len() > RECENT_SHARED_PURGES {
            recent.pop_front();
        }
    }

    /// Purges memory now, and Redis within the insert timeout: `fleet_wide` says whether
    /// Redis recorded it by then. If not, it holds here, reads from Redis wait, and it is
    /// shared when Redis answers (retried every second).
    pub(crate) async fn purge(self: &Arc<Self>, purge: &Purge) -> Result<Purged, PurgeError> {
        self.start();
        let local = self.l1.purge(purge).await?.removed;
        // Its own task: a caller that goes away (a client hanging up on a mutation) does
        // not cut the purge short, and the caller waits at most the insert timeout.
        let tier = Arc::clone(self);
        let selector = purge.selector.clone();
        let purging = Purging::new(&self.purging);
        let shared = tokio::spawn(async move {
            let outcome = match tier.purge_shared(&selector).await {
                Ok(removed) => Some(removed),
                Err(err) => {
                    // An open breaker was logged when it opened: once per outage.
                    if matches!(err, StoreError::Open) {
                        tracing::debug!(%err, "a purge waits for redis");
                    } else {
                        tracing::warn!(%err, "a purge reached this instance only; it goes to redis and the other instances when redis answers");
                    }
                    tier.postpone(selector);
                    None
                }
            };
            drop(purging);
            outcome
        });
        Ok(
            match tokio::time::timeout(self.redis.insert_timeout, shared).await {
                Ok(Ok(Some(removed))) => Purged {
                    removed: local + removed,
                    fleet_wide: true,
                },
                _ => Purged {
                    removed: local,
                    fleet_wide: false,
                },
            },
        )
    }

    fn postpone(&self, selector: Selector) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_PENDING_PURGES || matches!(selector, Selector::All) {
            pending.clear();
            pending.push(Selector::All);
        } else if !pending.iter().any(|p| matches!(p, Selector::All)) {
            pending.push(selector);
        }
    }

    /// Purges made while Redis was away, now that it is back.
    pub(crate) async fn replay(&self) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if pending.is_empty() {
            return;
        }
        // Reads from Redis keep waiting while these are on their way.
        let _purging = Purging::new(&self.purging);
        for (done, selector) in pending.iter().enumerate() {
            if let Err(err) = self.purge_shared(selector).await {
                // Retried every second by the syncer; the outage itself is logged once.
                tracing::debug!(%err, "sharing purges failed; retrying");
                for selector in pending.into_iter().skip(done) {
                    self.postpone(selector);
                }
                return;
            }
        }
        tracing::info!("purges made while redis was away are shared now");
    }

    /// The purge in the journal, then its records in Redis, then a message to wake the
    /// fleet. Returns the entries deleted from Redis (none are counted for scope and
    /// everything: those are dropped when next read).
    async fn purge_shared(&self, selector: &Selector) -> Result<u64, StoreError> {
        // The journal first: an instance that applies it keeps out of its memory any
        // entry the purge covers, even one it reads before the records below are written.
        let (seq, _) = self
            .record(
                &Change::Purge {
                    selector: selector.into(),
                },
                None,
            )
            .await?;
        self.remember(seq, Some(selector));
        let removed = match selector {
            Selector::All => {
                self.record_all(seq).await?;
                0
            }
            Selector::Scope(claims) => {
                self.record_scope(claims, seq).await?;
                0
            }
            // Operations and root fields: one record each, checked on read.
            Selector::Operation(_) | Selector::Fields(_) => {
                let keep = self.record_life().await?;
                for index_key in selector.candidates().unwrap_or_default() {
                    let record = self.keys.record(&index_key);
                    self.with_room(|| {
                        let mut pipe = redis::pipe();
                        pipe.cmd("EVAL")
                            .arg(SET_MAX)
                            .arg(1)
                            .arg(&record)
                            .arg(seq)
                            .arg(keep)
                            .ignore();
                        async move { self.redis.write::<()>(&pipe).await }
                    })
                    .await?;
                }
                0
            }
            Selector::Tags(_) => {
                let mut removed = 0;
                for index_key in selector.candidates().unwrap_or_default() {
                    removed += self.purge_index(&self.keys.index(&index_key)).await?;
                }
                removed
            }
        };
        self.publish(seq).await;
        // Memory again: a lookup between the first local purge and now may have copied a
        // Redis entry this purge removed.
        if let Err(err) = self
            .l1
            .purge(&Purge {
                selector: selector.clone(),
            })
            .await
        {
            tracing::debug!(%err, "purging memory again failed");
        }
        Ok(removed)
    }

    /// How long a purge record must be kept: longer than any entry it could cover.
    async fn record_life(&self) -> Result<u64, StoreError> {
        let (life,): (Option<u64>,) = self
            .redis
            .fetch(redis::pipe().get(self.keys.named("life")))
            .await?;
        Ok(life.unwrap_or(0).saturating_add(INDEX_SLACK_MS))
    }

    async fn record_scope(&self, claims: &[Arc<[u8]>], seq: u64) -> Result<(), StoreError> {
        let Some(first) = claims.first() else {
            return Ok(());
        };
        // Filed under the first claim named (every entry holding all the claims holds it):
        // `[("sub", ..), ("iss", ..)]` goes under the subject, not under the issuer that
        // every bucket shares and every lookup reads.
        let first_claim = self.keys.scope(first);
        let mut hashes: Vec<[u8; CLAIM_HASH]> = claims.iter().map(|c| claim_hash(c)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let field: Vec<u8> = hashes.concat();
        let keep = self.record_life().await?;
        self.with_room(|| {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(HSET_MAX)
                .arg(1)
                .arg(&first_claim)
                .arg(&field)
                .arg(seq)
                .arg(keep)
                .ignore();
            async move { self.redis.write::<()>(&pipe).await }
        })
        .await
    }

    /// Deletes the entries an index set lists, a batch per round trip, taking each batch
    /// out of the set (so the next batch starts at the front again).
    async fn purge_index(&self, set: &str) -> Result<u64, StoreError> {
        let mut removed = 0;
        // Entries added while this runs are newer than the purge: deleting them too costs
        // a store, and the bound keeps a write storm from keeping the purge going.
        for _ in 0..MAX_PURGE_ROUNDS {
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGE")
                .arg(set)
                .arg("-inf")
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(PURGE_BATCH);
            let (batch,): (Vec<Vec<u8>>,) = self.redis.bulk(&pipe).await?;
            if batch.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            // Out of the set first: a member re-added between the two (an entry stored
            // after the purge began) stays indexed.
            pipe.cmd("ZREM").arg(set).arg(&batch).ignore();
            for member in &batch {
                pipe.del(self.keys.entry_of_member(member));
            }
            let deleted: Vec<u64> = self.redis.bulk(&pipe).await?;
            removed += deleted.iter().sum::<u64>();
        }
        Ok(removed)
    }

    /// Wakes the fleet's syncers: the change at `seq` is in the journal. Best effort: an
    /// instance that misses the message reads the journal on its next tick.
    pub(crate) async fn publish(&self, seq: u64) {
        let channel = self.keys.named("events");
        if let Err(err) = self
            .redis
            .write::<()>(redis::pipe().publish(channel, seq.to_string()).ignore())
            .await
        {
            tracing::debug!(%err, "publishing a change failed; the fleet reads it on its next tick");
        }
    }

    /// After a miss in both tiers: take the key's lease and execute, or wait while
    /// another instance holds it and serve its entry. Each round trip both looks the entry
    /// up and tries the lease, so a holder that finished or died is noticed at once.
    pub(crate) async fn lease<F>(self: &Arc<Self>, key: &CacheKey, probe: F) -> Lease
    where
        F: FnOnce() -> Probe + Send,
    {
        if !self.reads_redis() || !self.in_step(Instant::now()) {
            return Lease::Execute(None);
        }
        let probe = probe();
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.lease;
        let mut delay = Duration::from_millis(5);
        loop {
            let since = self.l1.epoch();
            // Redis not answering: execute now rather than spend another timeout.
            let Some(Fetched {
                entry,
                won,
                nothing_stored,
            }) = self.fetch(key, &probe, Some(token)).await
            else {
                // The lease may have been set before the answer was lost: let it go.
                self.release_later(*key, token);
                return Lease::Execute(None);
            };
            if let Some(entry) = entry
                && entry.freshness(Instant::now()) == Some(Freshness::Fresh)
            {
                if won {
                    self.release_later(*key, token);
                }
                let entry = Arc::new(entry);
                self.l1.hold(
                    *key,
                    Arc::clone(&entry),
                    since,
                    Instant::now() + self.local_ttl,
                );
                return Lease::Filled(Hit {
                    entry,
                    source: Source::Redis,
                });
            }
            if won {
                self.leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(*key, token);
                return Lease::Execute(Some(LeaseGuard {
                    _hold: LeaseHold {
                        tier: Arc::clone(self),
                        key: *key,
                        token,
                    },
                }));
            }
            // Held elsewhere: wait a little, while Redis answers and the lease may stand;
            // not at all if its holder executed and stored nothing.
            if nothing_stored
                || !self.reads_redis()
                || !self.in_step(Instant::now())
                || Instant::now() + delay >= deadline
            {
                return Lease::Execute(None);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// The holder executed and stored nothing: tell the waiting instances so.
    async fn give_up(&self, key: &CacheKey, token: u64) {
        let lease_key = self.keys.lease(key);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(GIVE_UP)
            .arg(1)
            .arg(&lease_key)
            .arg(token)
            .arg(millis(self.lease).max(1))
            .ignore();
        if let Err(err) = self.redis.write::<()>(&pipe).await {
            tracing::debug!(%err, "giving a lease up failed; it runs out by itself");
        }
    }

    async fn release(&self, key: &CacheKey, token: u64) {
        let script = redis::Script::new(RELEASE);
        let lease_key = self.keys.lease(key);
        let released = self
            .redis
            .run(self.redis.insert_timeout, |mut conn| async move {
                script
                    .key(&lease_key)
                    .arg(token)
                    .invoke_async::<()>(&mut conn)
                    .await
            })
            .await;
        if let Err(err) = released {
            tracing::debug!(%err, "releasing a lease failed; it runs out by itself");
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.l1.stats()
    }
}

/// A number Redis holds: `Some(0)` for none, `None` for a value that is not a number.
/// A sequence number (the purge sequence, a record) read back: `Some(0)` when absent,
/// `None` when not one the layer writes (see [`parse_seq`]).
fn number(value: Option<Value>) -> Option<u64> {
    match value {
        None => Some(0),
        Some(v) => match redis::from_redis_value::<Option<Vec<u8>>>(v).ok()? {
            None => Some(0),
            Some(raw) => parse_seq(&raw),
        },
    }
}
