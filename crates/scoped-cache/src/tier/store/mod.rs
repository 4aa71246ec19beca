//! [`Tier`]: memory (L1) in front of Redis (L2), for responses and revocations.

mod lookup;
mod purge;
mod write;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use super::RedisTier;
use super::admission::{self, Admission};
use super::codec::{self, Clock};
use super::conn::{Redis, StoreError};
use super::held::SharedRevocations;
use super::journal::{Change, JOURNAL_LEN, MAX_CHANGE_BYTES, MAX_SEQ, RECORD, Record, parse_seq};
use super::keys::{CLAIM_HASH, Keys, claim_hash, member};
use super::seal::Signer;
use super::topology::Topology;
use crate::cache::key::CacheKey;
use crate::cache::purge::{IndexKey, Purge, PurgeError, Purged, Selector};
use crate::cache::store::{
    CacheStats, CachedResponse, Epoch, Freshness, Hit, Lease, LeaseGuard, MemoryStore, Missed,
    Probe, ResponseStore, Source,
};
use crate::health::TierHealth;
use crate::revocation::MemoryRevocations;
use crate::task::AbortOnDrop;
use crate::throttle::Throttle;

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
/// Takes the members `ARGV` out of the index set `KEYS[1]` and deletes their entries
/// `KEYS[2..]`, all or nothing: on a cluster whose slot is half moved, Redis refuses the
/// whole script (`TRYAGAIN`, `ASK`) rather than leave an entry no set names any more.
const PURGE_BATCH_SCRIPT: &str = r"
redis.call('ZREM', KEYS[1], unpack(ARGV))
local removed = 0
for i = 2, #KEYS do removed = removed + redis.call('DEL', KEYS[i]) end
return removed";
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
    /// Unreadable entries are warned about at most once a minute, however many a
    /// rollout or a planted key makes.
    warned: Throttle,
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
        let topology = Topology::of(&config.url).map_err(|err| invalid("url", err.to_string()))?;
        let tls = topology.tls();
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
        if matches!(topology, Topology::Cluster(_)) && config.prefix.contains(['{', '}']) {
            return Err(invalid(
                "key_prefix",
                "on a cluster it becomes the keys' hash tag: no braces".into(),
            ));
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
        Self::new(config, &topology, l1, revocations, max_entry_bytes, signer).map_err(|err| {
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
        topology: &Topology,
        l1: MemoryStore,
        revocations: MemoryRevocations,
        max_entry_bytes: usize,
        signer: Option<Signer>,
    ) -> Result<Self, redis::RedisError> {
        let hasher = RandomState::new();
        let keys = Keys::new(&topology.key_prefix(&config.prefix));
        Ok(Self {
            redis: Redis::new(config, topology, &keys.named("seq"))?,
            keys,
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
            warned: Throttle::new(),
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
        self.warned.due().is_some()
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

    /// What an operator asks of the tier: in step with the fleet at `now`, Redis answering
    /// (its breaker closed), and how many purges and revocations wait for Redis here.
    pub(crate) fn health(&self, now: Instant) -> TierHealth {
        let purges = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        TierHealth {
            in_step: self.in_step(now),
            reachable: self.redis.available(),
            pending: (purges + self.revocations.pending_len()) as u64,
        }
    }

    /// Whether revocations are known well enough to take a token now.
    pub(crate) fn knows_revocations(&self, now: Instant) -> bool {
        self.accept_tokens_when_cut_off || self.in_step(now)
    }

    /// Whether a read from Redis may be served now: Redis answers, no outage happened
    /// since the last sync (Redis may have restarted or failed over without what it
    /// recorded), and no purge of this instance is on its way to Redis (its entries may
    /// still be there).
    pub(crate) fn reads_redis(&self) -> bool {
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

    pub(crate) fn epoch(&self) -> Epoch {
        Epoch {
            local: self.l1.epoch().local,
            shared: self.seq.load(Ordering::Acquire),
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
