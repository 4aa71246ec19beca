//! Redis as the shared tier (feature `redis`): responses, tags, purges, revocations and
//! fleet-wide coalescing, shared by every instance that names the same Redis and
//! [`key_prefix`](RedisTier::key_prefix).
//!
//! The in-process store stays in front as L1; Redis is L2. An L1 miss asks Redis (one round
//! trip, at most [`fetch_timeout`](RedisTier::fetch_timeout)); an L2 hit fills L1 for at
//! most [`local_ttl`](RedisTier::local_ttl). A miss is written to Redis off the request path.
//!
//! Every purge and revocation is recorded in Redis, in a journal every instance reads back
//! (the syncer: every second, at once when a message on the events channel says so), so
//! the fleet keeps two promises whatever Redis does: once a change is answered as
//! fleet-wide, no instance serves what it removed, nor takes the revoked token, later than
//! [`max_lag`](RedisTier::max_lag). An instance that cannot sync for that long serves
//! nothing cached and answers tokens `503`. Redis losing data (a restart from a snapshot,
//! a flush, a failover) is noticed and repaired (see `sync`). A circuit breaker turns the
//! tier off while Redis errs or is slow, and it resumes by itself.
//!
//! # Key layout
//!
//! Every key and the channel start with the prefix `P` (default `scoped-cache:`, written
//! right before the rest: `scoped-cache:seq`). Keys are addressed alone, except the control
//! keys a change records together in one script (`P seq`, `P log`, `P keycheck`,
//! `P revocations`); `SCAN` runs only to make room for a record in a
//! full Redis. On a Redis Cluster (`redis+cluster://`) the prefix is a hash tag
//! (`{scoped-cache:}seq`): every key is in one slot (see `topology`). Redis 7.0 or later; use
//! `maxmemory-policy noeviction`, since an evicted record or index set would let purged
//! answers back (entries are kept under 75% of `maxmemory` by the tier itself).
//!
//! | key | type | holds | expires |
//! | --- | --- | --- | --- |
//! | `P e:<cache key hex>` | string | one response: versioned, length-checked, checksummed (or signed), with its whole key (the name holds 128 bits of it) | when the entry is of no more use (max-age plus stale windows) |
//! | `P t:<tag hash>` | sorted set | members: 16 bytes of the cache keys of the entries holding a type, entity or any-of-type tag; scores: their expiry on Redis's clock | members past it are trimmed on every write; the key a minute after its last member |
//! | `P r:<name hash>` | string | the sequence number of the last purge of an operation name or a root field | after the longest entry life written (`P life`) |
//! | `P s:<claim hash>` | hash | scope purges filed under this claim value (the first a purge names): field = the purge's claim set, value = its sequence number | after the longest entry life written |
//! | `P seq` | string | the sequence: every purge and revocation takes the next number | never |
//! | `P log` | sorted set | the journal: the last 10,000 changes, scored by their number | oldest trimmed on every record |
//! | `P all` | string | the sequence number of the last purge of everything | never |
//! | `P life` | string | the longest entry life written, ms | never |
//! | `P l:<cache key hex>` | string | a miss's lease: one instance executes it | the lease duration |
//! | `P revocations` | sorted set | every revocation, scored by when it can be forgotten | members trimmed (by Redis's clock) on every write |
//! | `P events` | channel | a change's number, to wake the syncers | |
//! | `P keycheck` | string | which signing key the fleet uses (a tag of it, or `unsigned`), written by the first instance to sync | never |
//!
//! A purge by tag, type or entity reads the index sets it names and deletes their entries.
//! A purge by operation, root field, claim scope or of everything writes one record, so it
//! costs the same however many entries match; each entry carries the purge sequence number
//! its execution started at and is dropped on read when a later record covers it (a lookup
//! knows its operation, root fields and claim values, so it reads their records in the
//! same round trip as the entry).

mod admission;
mod breaker;
mod codec;
mod conn;
mod events;
mod held;
mod journal;
mod keys;
mod revocations;
mod seal;
mod store;
mod sync;
mod topology;

use std::time::Duration;

pub(crate) use self::store::Tier;

/// Default [`RedisTier::fetch_timeout`], as Apollo Router's.
pub(crate) const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_millis(150);
/// Default [`RedisTier::insert_timeout`], as Apollo Router's.
pub(crate) const DEFAULT_INSERT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default [`RedisTier::local_ttl`].
pub(crate) const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(5);
/// Default [`RedisTier::lease`].
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(3);
/// Default [`RedisTier::cool_down`].
pub(crate) const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(2);
/// Default [`RedisTier::max_lag`].
pub(crate) const DEFAULT_MAX_LAG: Duration = Duration::from_secs(5);
/// Default [`RedisTier::key_prefix`].
pub(crate) const DEFAULT_KEY_PREFIX: &str = "scoped-cache:";

/// Redis as the shared tier, for
/// [`ScopedCacheLayerBuilder::redis`](crate::ScopedCacheLayerBuilder::redis).
///
/// ```
/// use std::time::Duration;
/// use scoped_cache::RedisTier;
///
/// let tier = RedisTier::new("redis://127.0.0.1:6379")
///     .key_prefix("forum:")                       // one per deployment
///     .fetch_timeout(Duration::from_millis(100))   // an L1 miss waits at most this
///     .local_ttl(Duration::from_secs(5));          // L1 copies of Redis entries
/// # let _ = tier;
/// ```
///
/// Nothing connects until the layer serves: the application starts and serves when Redis
/// is unreachable, and the tier joins in when Redis answers.
#[derive(Clone)]
#[must_use]
pub struct RedisTier {
    pub(crate) url: String,
    /// PEM: the CA that signs the server's certificate (else the system's roots).
    pub(crate) ca: Option<Vec<u8>>,
    /// PEM: a client certificate and its key, for servers that require one.
    pub(crate) client_certificate: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) prefix: String,
    pub(crate) fetch_timeout: Duration,
    pub(crate) insert_timeout: Duration,
    pub(crate) local_ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) cool_down: Duration,
    pub(crate) max_lag: Duration,
    pub(crate) accept_tokens_when_cut_off: bool,
    pub(crate) signing_key: Option<Vec<u8>>,
}

/// The URL's password is never shown.
impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("url", &redacted(&self.url))
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client_certificate.is_some())
            .field("prefix", &self.prefix)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("insert_timeout", &self.insert_timeout)
            .field("local_ttl", &self.local_ttl)
            .field("lease", &self.lease)
            .field("cool_down", &self.cool_down)
            .field("max_lag", &self.max_lag)
            .field(
                "accept_tokens_when_cut_off",
                &self.accept_tokens_when_cut_off,
            )
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `url` with whatever sits between `://` and the last `@` (a user and password)
/// replaced, and without its query (`redis+unix:///sock?user=..&pass=..`).
fn redacted(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, _)) => (url, "?<redacted>"),
        None => (url, ""),
    };
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<redacted>@{}{query}", &url[..scheme], &url[at + 1..])
        }
        _ => format!("{url}{query}"),
    }
}

impl RedisTier {
    /// A tier on the Redis at `url`: `redis://host:port/db`, `rediss://host:port/db` for
    /// TLS (the server's certificate checked against the system's roots, or
    /// [`ca_certificate`](Self::ca_certificate)), `redis+unix:///path` for a socket; a
    /// Redis Cluster as `redis+cluster://host:port,host:port` (some of its nodes) or
    /// `rediss+cluster://`, every key of the tier then in the one slot its prefix names; a
    /// primary Sentinels watch as `redis+sentinel://host:port,host:port/service`. A
    /// user and password go in the URL (`redis://user:password@host:6379`, for an ACL
    /// user); they never appear in logs or `Debug`. Checked by `build()`.
    ///
    /// ```
    /// use scoped_cache::RedisTier;
    ///
    /// let single = RedisTier::new("redis://127.0.0.1:6379").key_prefix("forum:");
    /// let cluster = RedisTier::new("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    ///     .key_prefix("forum:"); // keys `{forum:}...`
    /// let sentinel = RedisTier::new("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/forum");
    /// # let _ = (single, cluster, sentinel);
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca: None,
            client_certificate: None,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            insert_timeout: DEFAULT_INSERT_TIMEOUT,
            local_ttl: DEFAULT_LOCAL_TTL,
            lease: DEFAULT_LEASE,
            cool_down: DEFAULT_COOL_DOWN,
            max_lag: DEFAULT_MAX_LAG,
            accept_tokens_when_cut_off: false,
            signing_key: None,
        }
    }

    /// The CA certificate (PEM) that signs the server's certificate, for a `rediss://`
    /// URL; without it the system's roots are used. Checked by `build()`.
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// A client certificate and its private key (PEM), for a `rediss://` server that
    /// requires one (`tls-auth-clients yes`). Checked by `build()`.
    pub fn client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_certificate = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// The start of every key and of the channel name: one per deployment sharing a Redis
    /// (instances with the same prefix share everything; different prefixes share nothing).
    /// Default: `scoped-cache:`. At most 128 bytes, not empty.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a lookup, a lease or a purge's reads wait for Redis before going on without
    /// it (a timeout counts as a failure for the circuit breaker). Default: 150 ms.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// How long a write (an entry, a revocation) may take; writes run off the request
    /// path. Default: 500 ms.
    pub fn insert_timeout(mut self, timeout: Duration) -> Self {
        self.insert_timeout = timeout;
        self
    }

    /// The longest an L1 copy of an entry read from Redis lives (never longer than the
    /// entry itself, nor than [`max_lag`](Self::max_lag)): it bounds the memory such
    /// copies hold. Purges reach copies through the journal, whatever this is. Default: 5 s.
    pub fn local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl = ttl;
        self
    }

    /// How long one instance holds a miss's lease (`SET NX PX`) while it executes; the
    /// other instances wait for its entry at most this long, then execute themselves.
    /// Default: 3 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// After Redis fails three calls in a row, how long the tier stays off before one call
    /// probes whether it is back. Default: 2 s.
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// The bound of both promises: a purge or revocation Redis recorded is applied on
    /// every instance within this, whatever Redis or pub/sub does. An instance syncs
    /// with Redis every second (at once when a message arrives); one that has not synced
    /// for longer is **cut off**: it serves nothing from its cache (requests execute,
    /// nothing is stored) and answers requests with a token `503 AUTH_UNAVAILABLE`
    /// (it cannot know what was revoked meanwhile), until a sync succeeds. Default: 5 s.
    pub fn max_lag(mut self, max_lag: Duration) -> Self {
        self.max_lag = max_lag;
        self
    }

    /// A secret (at least 32 bytes) every instance of the deployment shares: each entry,
    /// journal record and revocation written to Redis carries an HMAC-SHA-256 under it,
    /// and only values carrying a valid one are read. Whoever can write to Redis without
    /// the key cannot plant an answer, a purge or a revocation (deleting keys remains
    /// possible: Redis must still be kept from strangers). Every instance of a
    /// `key_prefix` must use the same key: entries written without it (or with another)
    /// are misses, and an instance whose key differs from the fleet's stays out of step
    /// (see [`max_lag`](Self::max_lag)) and logs an error. To turn signing on or change
    /// the key, deploy under a new `key_prefix`. Default: none (a checksum catches
    /// accidents only). Checked by `build()`.
    pub fn signing_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.signing_key = Some(key.into());
        self
    }

    /// Whether a cut-off instance (see [`max_lag`](Self::max_lag)) takes tokens anyway,
    /// checking only the revocations it already holds. This gives up "revoked is refused
    /// on every instance" during a Redis outage, for availability. Default: `false`.
    pub fn accept_tokens_when_cut_off(mut self, accept: bool) -> Self {
        self.accept_tokens_when_cut_off = accept;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_password() {
        let tier = RedisTier::new("rediss://cache-user:s3cr3t-pa55@redis.internal:6380/0");
        let shown = format!("{tier:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("cache-user"), "{shown}");
        assert!(
            shown.contains("rediss://<redacted>@redis.internal:6380/0"),
            "{shown}"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("redis://:pw@h:1"), "redis://<redacted>@h:1");
        assert_eq!(
            redacted("redis+unix:///run/redis.sock?db=0&user=u&pass=pw"),
            "redis+unix:///run/redis.sock?<redacted>"
        );
    }
}
