//! Revocations shared through Redis, mirrored in memory so the per-request check stays
//! in-process. Each is recorded in the journal and in the `P revocations` sorted set
//! (scored by when it can be forgotten, trimmed by Redis's clock on every write) by one
//! script; instances apply the journal as they sync, and load the whole set when they
//! start, fall behind, or are told Redis lost changes.

use super::conn::StoreError;
use super::journal::{Change, MAX_RECORD_BYTES, WireRevoke};
use super::seal::Domain;
use super::store::Tier;
use crate::revocation::{RevocationStore, Revoke};

/// A page of the revocation set in score order, from score `ARGV[1]` on, past the
/// `ARGV[2]` members of that score already read: at most `ARGV[3]` members and about
/// `ARGV[5]` bytes. Answers how many members it went through, the last one's score and how
/// many of them had it (the next page's cursor), then the members no longer than
/// `ARGV[4]` (a longer one is not ours: it stays in Redis, counted unreadable). A cursor,
/// not an offset: members trimmed meanwhile (expired ones) never make a page skip live
/// ones.
const LOAD: &str = r"#!lua flags=no-writes
local page = redis.call('ZRANGE', KEYS[1], ARGV[1], '+inf', 'BYSCORE', 'LIMIT', ARGV[2], ARGV[3], 'WITHSCORES')
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {'0', ARGV[1], '0'}
local taken, bytes, last, ties = 0, 0, nil, 0
for i = 1, #page, 2 do
  local member, score = page[i], page[i + 1]
  local size = math.min(#member, limit + 1)
  if taken > 0 and bytes + size > budget then break end
  taken = taken + 1
  bytes = bytes + size
  if score == last then ties = ties + 1 else last, ties = score, 1 end
  if #member <= limit then out[#out + 1] = member end
end
out[1] = tostring(taken)
if last then out[2] = last; out[3] = tostring(ties) end
return out";
/// Bytes of revocations one page brings at most (about 1,000 of the longest).
const PAGE_BYTES: usize = 4 << 20;
/// Revocations read or written back per round trip.
const PAGE: usize = 10_000;

impl Tier {
    /// Shares the revocations made here while Redis was away.
    pub(crate) async fn replay_revocations(&self) {
        let pending = self.revocations.take_pending();
        let waited = pending.len();
        let mut shared = 0usize;
        for revoke in pending {
            shared += usize::from(self.send_revocation(&revoke, false).await);
        }
        if shared > 0 {
            tracing::info!(
                shared,
                still_waiting = waited - shared,
                "revocations that waited for redis are shared with the fleet"
            );
        }
    }

    /// Records `revoke` in Redis and wakes the fleet; if Redis does not record it, it is
    /// queued. Returns whether Redis recorded it.
    pub(crate) async fn share_revocation(&self, revoke: &Revoke) -> bool {
        self.send_revocation(revoke, true).await
    }

    async fn send_revocation(&self, revoke: &Revoke, first: bool) -> bool {
        match self.write_revocation(revoke).await {
            Ok(()) => true,
            Err(err) => {
                if first && !matches!(err, StoreError::Open) {
                    tracing::warn!(%err, "a revocation holds on this instance only until redis answers");
                }
                self.revocations.queue(revoke.clone());
                false
            }
        }
    }

    async fn write_revocation(&self, revoke: &Revoke) -> Result<(), StoreError> {
        let wire = WireRevoke::from(revoke);
        let member = super::seal::seal(
            self.signer(),
            Domain::Revocation,
            serde_json::to_vec(&wire).unwrap_or_default(),
        );
        let forget_at_ms = self
            .revocations
            .memory()
            .forget_at(revoke, crate::clock::now_seconds())
            .saturating_mul(1000);
        let (seq, _) = self
            .record(
                &Change::Revoke { revoke: wire },
                Some((&member, forget_at_ms)),
            )
            .await?;
        self.remember(seq, None);
        self.publish(seq).await;
        Ok(())
    }

    /// Writes every revocation held here back into the set (Redis lost it).
    pub(crate) async fn write_back_revocations(&self) -> Result<(), StoreError> {
        let now = crate::clock::now_seconds();
        let held = self.revocations.memory().export(now);
        let set = self.keys.named("revocations");
        for page in held.chunks(PAGE) {
            self.with_room(|| {
                let mut pipe = redis::pipe();
                for (revoke, forget_at) in page {
                    let member = super::seal::seal(
                        self.signer(),
                        Domain::Revocation,
                        serde_json::to_vec(&WireRevoke::from(revoke)).unwrap_or_default(),
                    );
                    pipe.zadd(&set, member, forget_at.saturating_mul(1000))
                        .ignore();
                }
                async move { self.redis.bulk::<()>(&pipe).await }
            })
            .await?;
        }
        if !held.is_empty() {
            tracing::info!(
                revocations = held.len(),
                "revocations held here were written back to redis"
            );
        }
        Ok(())
    }

    /// Mirrors every revocation Redis holds, a page per round trip.
    pub(crate) async fn load_revocations(&self) -> Result<(), StoreError> {
        let now_ms = crate::clock::now_seconds().saturating_mul(1000);
        let set = self.keys.named("revocations");
        let (mut unreadable, mut refused) = (0usize, 0usize);
        // The cursor: a score, and how many members of that score were read.
        let (mut from, mut skip) = (now_ms.to_string(), 0usize);
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(LOAD)
                .arg(1)
                .arg(&set)
                .arg(&from)
                .arg(skip)
                .arg(PAGE)
                .arg(MAX_RECORD_BYTES)
                .arg(PAGE_BYTES);
            let (read,): (Vec<Vec<u8>>,) = self.redis.bulk(&pipe).await?;
            let mut read = read.into_iter();
            let mut next = || read.next().unwrap_or_default();
            let count = |raw: Vec<u8>| {
                std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            let (taken, last, ties) = (count(next()), next(), count(next()));
            if taken == 0 {
                break;
            }
            let last = String::from_utf8_lossy(&last).into_owned();
            skip = if last == from { skip + ties } else { ties };
            from = last;
            let members: Vec<Vec<u8>> = read.collect();
            unreadable += taken.saturating_sub(members.len());
            for member in members {
                // With a signing key, one not signed with it is not ours: skipped.
                match super::seal::open(self.signer(), Domain::Revocation, &member)
                    .and_then(|text| serde_json::from_slice::<WireRevoke>(text).ok())
                    .and_then(WireRevoke::into_revoke)
                {
                    Some(revoke) => {
                        if self
                            .revocations
                            .memory()
                            .revoke(&revoke, crate::clock::now_seconds())
                            .is_err()
                        {
                            refused += 1;
                        }
                    }
                    None => unreadable += 1,
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(unreadable, "unreadable revocations in redis were skipped");
        }
        if refused > 0 {
            tracing::error!(
                refused,
                "revocations in redis do not fit this instance's max_revocations: it refuses tokens until they do"
            );
            return Err(StoreError::RevocationsFull);
        }
        Ok(())
    }
}
