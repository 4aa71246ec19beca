//! Redis memory: entries never crowd out purges and revocations.
//!
//! Three parts:
//! - **admission**: entries are written to Redis only while its `used_memory` is below
//!   [`ENTRY_SHARE`] of `maxmemory` (read from `INFO` on every sync), and not at all from
//!   a write Redis refused as out of memory until a later reading says there is room;
//! - **room for records**: a record refused as out of memory first deletes entries of
//!   this deployment (`SCAN` over `P e:*`, `UNLINK`; a cache entry is always safe to
//!   drop), then is tried again;
//! - **the policy check**: once, `CONFIG GET maxmemory-policy`; anything but `noeviction`
//!   is warned about (an evicted index set or purge record would let purged answers
//!   back), and so is a Redis that does not allow the check.

use std::sync::atomic::{AtomicBool, Ordering};

use super::conn::Redis;
use super::conn::StoreError;
use super::keys::Keys;

/// The share of `maxmemory` entries may fill; the rest stays for records.
pub(crate) const ENTRY_SHARE: f64 = 0.75;
/// Keys `SCAN` looks at per round while making room.
const SCAN_COUNT: usize = 1000;
/// Rounds of making room before a record gives up (each deletes what one `SCAN` found).
const ROOM_ROUNDS: usize = 64;

/// Whether entries go to Redis now.
#[derive(Debug)]
pub(crate) struct Admission {
    open: AtomicBool,
    /// Logged once per closing, not per entry.
    logged: AtomicBool,
    /// When it last closed: where `INFO` cannot be read, it opens again this long after,
    /// and the next refused write closes it again.
    closed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Where `INFO` cannot be read: how long entries stay out of Redis after it refused one.
const BLIND_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

impl Admission {
    pub(crate) fn new() -> Self {
        Self {
            open: AtomicBool::new(true),
            logged: AtomicBool::new(false),
            closed_at: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Redis refused a write for its memory.
    pub(crate) fn close(&self) {
        *self
            .closed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokio::time::Instant::now());
        self.open.store(false, Ordering::Release);
        if !self.logged.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "redis memory is nearly full: entries stay in this instance's memory until it has room (purges and revocations still go)"
            );
        }
    }

    fn set(&self, room: bool) {
        if room {
            if !self.open.swap(true, Ordering::AcqRel) && self.logged.swap(false, Ordering::AcqRel)
            {
                tracing::info!("redis has room again: entries are shared again");
            }
        } else {
            self.close();
        }
    }
}

/// What `INFO` says of the server, where it may be read.
#[derive(Debug, Default)]
pub(crate) struct ServerFacts {
    pub(crate) run_id: Option<String>,
}

/// Reads `INFO server memory` (and once the eviction policy), updating the admission.
/// Nothing of it is required: an ACL may refuse `INFO` or `CONFIG`.
pub(crate) async fn server_facts(
    redis: &Redis,
    admission: &Admission,
    policy_checked: &mut bool,
) -> ServerFacts {
    // A key of the tier's first: on a cluster whose slot map is being repaired (a
    // failover), a keyless `INFO` could reach another node, whose `run_id` would look
    // like a restart; with the key, the pipeline reaches the slot's primary or fails.
    let mut pipe = redis::pipe();
    pipe.cmd("EXISTS")
        .arg(redis.home_key())
        .cmd("INFO")
        .arg("server")
        .arg("memory");
    let info = match redis.optional::<(i64, String)>(&pipe).await {
        Ok((_, info)) => info,
        Err(err) => {
            let closed_at = *admission
                .closed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if closed_at.is_some_and(|at| at.elapsed() >= BLIND_RETRY) {
                admission.set(true);
            }
            if !*policy_checked {
                tracing::warn!(%err, "cannot read redis INFO: restarts are noticed by the purge sequence only, and redis memory is not watched");
                *policy_checked = true;
            }
            return ServerFacts::default();
        }
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let used: Option<u64> = field("used_memory").and_then(|v| v.parse().ok());
    let max: Option<u64> = field("maxmemory").and_then(|v| v.parse().ok());
    if let (Some(used), Some(max)) = (used, max)
        && max > 0
    {
        // Exact enough: memory figures well below 2^52 bytes.
        #[allow(clippy::cast_precision_loss)]
        admission.set((used as f64) < (max as f64) * ENTRY_SHARE);
    }
    if !*policy_checked {
        *policy_checked = true;
        check_policy(redis, max).await;
    }
    ServerFacts {
        run_id: field("run_id").map(str::to_owned),
    }
}

async fn check_policy(redis: &Redis, max: Option<u64>) {
    // Pinned to the tier's slot by one of its keys (see `server_facts`).
    let mut pipe = redis::pipe();
    pipe.cmd("EXISTS")
        .arg(redis.home_key())
        .cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy");
    match redis.optional::<(i64, Vec<String>)>(&pipe).await {
        Ok((_, pair)) => match pair.get(1).map(String::as_str) {
            Some("noeviction") if max == Some(0) => tracing::warn!(
                "redis has no maxmemory: entries expire by their TTL, but redis memory has no bound"
            ),
            Some("noeviction") => {}
            Some(policy) => tracing::warn!(
                policy,
                "redis maxmemory-policy should be noeviction: another policy may evict purge records and index sets, and let purged answers back"
            ),
            None => {}
        },
        Err(err) => tracing::warn!(
            %err,
            "cannot check redis maxmemory-policy (CONFIG GET refused); it must be noeviction"
        ),
    }
}

/// Runs a write of a record; one Redis refused for its memory is tried again after
/// this deployment's entries (`keys`) made room.
pub(crate) async fn with_room<T, F, Fut>(
    redis: &Redis,
    admission: &Admission,
    keys: &Keys,
    mut write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut cursor = 0u64;
    let mut rounds = 0;
    loop {
        match write().await {
            Err(err) if err.is_oom() && rounds < ROOM_ROUNDS => {
                admission.close();
                rounds += 1;
                let (next, deleted) = make_room(redis, keys, cursor).await?;
                tracing::debug!(deleted, "made room in redis for a record");
                cursor = next;
                if cursor == 0 && deleted == 0 {
                    // A full scan found nothing of ours to drop: the memory is not
                    // ours to free.
                    return write().await;
                }
            }
            outcome => return outcome,
        }
    }
}

/// Deletes the entries one `SCAN` step from `cursor` finds; returns the next cursor and
/// how many were deleted.
async fn make_room(redis: &Redis, keys: &Keys, cursor: u64) -> Result<(u64, usize), StoreError> {
    // Pinned to the tier's slot by one of its keys (see `server_facts`): a cursor is
    // one node's.
    let mut pipe = redis::pipe();
    pipe.cmd("EXISTS")
        .arg(redis.home_key())
        .cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(keys.entry_pattern())
        .arg("COUNT")
        .arg(SCAN_COUNT);
    let (_, (next, found)): (i64, (u64, Vec<Vec<u8>>)) = redis.bulk(&pipe).await?;
    if !found.is_empty() {
        let mut pipe = redis::pipe();
        pipe.cmd("UNLINK").arg(&found).ignore();
        redis.bulk::<()>(&pipe).await?;
    }
    Ok((next, found.len()))
}
