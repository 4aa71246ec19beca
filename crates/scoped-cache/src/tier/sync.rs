//! The syncer: one task per tier that keeps this instance in step with what Redis
//! recorded, every [`TICK`] and at once when woken (a message on the events channel, an
//! outage, a change of this instance's own).
//!
//! Each sync reads, in one round trip, the purge sequence and the journal from the last
//! change this instance applied, and applies what is new in order. It tells three other
//! states from being in step:
//! - **fresh** (never synced): the revocation set is loaded and the journal is taken
//!   from its end (memory holds nothing older);
//! - **behind** (the journal was trimmed past this instance): memory is flushed and the
//!   revocation set loaded again;
//! - **lost** (the sequence went back, the record this instance applied last is gone or
//!   another, or the server is another one): Redis lost changes. This instance records a
//!   purge of everything written before, writes every revocation it holds back into the
//!   set, and the fleet reloads it (see [`Change::Recovered`]). It stays out of step for
//!   `max_lag`, while every other connected instance notices the loss and writes back
//!   what it holds, then reads the set once more.
//!
//! A sync that completes marks the instance in step (see [`Tier::in_step`]); then it
//! shares what waited for Redis (purges and revocations made while it was away), and
//! updates the admission of entries from Redis's memory figures.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::admission;
use super::conn::StoreError;
use super::journal::{Change, JOURNAL_LEN, Record};
use super::store::Tier;

/// How often an instance reads the journal when nothing wakes it: with pub/sub down, a
/// change reaches every instance within this plus a round trip.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// Records read per round trip.
const PAGE: usize = 1000;

/// What the syncer remembers between syncs (only its task touches it).
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Whether a sync completed.
    synced: bool,
    /// The last change applied here (0: none was ever recorded).
    applied: u64,
    /// The digest of that change's record, to tell it from another under the same number.
    digest: Option<[u8; 16]>,
    /// The server's `run_id` (from `INFO`, where allowed).
    run_id: Option<String>,
    /// `maxmemory-policy` checked (or found unreadable) once.
    policy_checked: bool,
    /// After a recovery: not in step before then, so that every instance still connected
    /// has noticed the loss and written back what it holds; then the revocation set is
    /// read once more.
    settling_until: Option<Instant>,
}

/// Where this instance stands against the journal.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    Fresh,
    InStep,
    Behind,
    Lost(&'static str),
}

/// Runs until the tier is dropped (its owner aborts this task).
pub(crate) async fn run(tier: Weak<Tier>) {
    let Some(wake) = tier.upgrade().map(|t| t.redis.wake()) else {
        return;
    };
    let mut state = SyncState::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let more = {
            let Some(owner) = tier.upgrade() else { return };
            owner.sync(&mut state).await
        };
        if more {
            continue;
        }
        tokio::select! {
            _ = ticks.tick() => {}
            () = wake.notified() => {}
        }
    }
}

impl Tier {
    /// One sync; returns whether more of the journal waits to be read at once.
    pub(crate) async fn sync(&self, state: &mut SyncState) -> bool {
        let outages = self.redis.outages();
        let started = Instant::now();
        let server = admission::server_facts(self, &mut state.policy_checked).await;
        let read = match self.read_journal(state.applied).await {
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(%err, "reading the journal failed; retrying");
                return false;
            }
        };
        let restarted = match (&state.run_id, &server.run_id) {
            (Some(old), Some(new)) => old != new,
            _ => false,
        };
        let standing = if restarted {
            Standing::Lost("the server changed (a restart or a failover)")
        } else {
            self.standing(state, &read)
        };
        let outcome = match standing {
            Standing::InStep => self.apply(state, read.records).await,
            Standing::Fresh | Standing::Behind => {
                if standing == Standing::Behind {
                    tracing::warn!("this instance fell behind the journal; its memory starts over");
                    self.flush_memory().await;
                }
                self.revocations.load(self).await.map(|()| {
                    state.applied = read.seq;
                    state.digest = None;
                    self.observe_seq(read.seq);
                    false
                })
            }
            Standing::Lost(why) => self.recover(state, why).await.map(|()| false),
        };
        let more = match outcome {
            Ok(more) => more,
            Err(err) => {
                tracing::debug!(%err, "applying the journal failed; retrying");
                return false;
            }
        };
        state.synced = true;
        if server.run_id.is_some() {
            state.run_id = server.run_id;
        }
        if let Some(until) = state.settling_until {
            if Instant::now() < until {
                return more;
            }
            if let Err(err) = self.revocations.load(self).await {
                tracing::debug!(%err, "reloading revocations after a recovery failed; retrying");
                return false;
            }
            state.settling_until = None;
            tracing::info!("in step with redis again after its loss");
        }
        self.mark_in_step(started, outages);
        self.share_pending().await;
        more
    }

    fn standing(&self, state: &SyncState, read: &JournalRead) -> Standing {
        if read.seq < self.high().max(state.applied) {
            return Standing::Lost("its purge sequence went back");
        }
        if !state.synced {
            return Standing::Fresh;
        }
        match read.records.first() {
            Some(first) if first.seq == state.applied => match state.digest {
                Some(digest) if digest != first.digest => {
                    Standing::Lost("the last change applied here was replaced")
                }
                _ => Standing::InStep,
            },
            // Nothing was ever recorded when this instance last looked.
            None if state.applied == 0 => Standing::InStep,
            Some(first) if state.applied == 0 && first.seq == 1 => Standing::InStep,
            // Ours is gone: trimmed away by newer changes, or lost with Redis's data.
            _ if read.len >= JOURNAL_LEN => Standing::Behind,
            _ => Standing::Lost("the last change applied here is gone"),
        }
    }

    /// Applies the records after `state.applied`, in order.
    async fn apply(&self, state: &mut SyncState, records: Vec<Record>) -> Result<bool, StoreError> {
        let read = records.len();
        for record in records {
            if record.seq <= state.applied {
                if record.seq == state.applied {
                    state.digest = Some(record.digest);
                }
                continue;
            }
            if record.seq != state.applied + 1 {
                // Never written by the recording script; treated like a trimmed journal.
                tracing::warn!("the journal has a hole; this instance's memory starts over");
                self.flush_memory().await;
                self.revocations.load(self).await?;
                state.synced = false;
                return Ok(true);
            }
            if let Some(change) = record.change {
                self.apply_change(record.seq, change).await?;
            }
            state.applied = record.seq;
            state.digest = Some(record.digest);
            self.observe_seq(record.seq);
        }
        Ok(read > PAGE)
    }

    async fn apply_change(&self, seq: u64, change: Change) -> Result<(), StoreError> {
        match change {
            Change::Purge { selector } => {
                if let Some(selector) = selector.into_selector() {
                    self.apply_purge(seq, selector).await;
                }
            }
            Change::Revoke { revoke } => {
                self.remember(seq, None);
                if let Some(revoke) = revoke.into_revoke() {
                    self.revocations.apply(&revoke);
                }
            }
            Change::Recovered => {
                self.apply_purge(seq, crate::cache::purge::Selector::All)
                    .await;
                self.revocations.load(self).await?;
            }
        }
        Ok(())
    }

    /// Redis lost changes: purge everything written before, write back the revocations
    /// held here, and tell the fleet to reload them.
    async fn recover(&self, state: &mut SyncState, why: &'static str) -> Result<(), StoreError> {
        tracing::warn!(
            reason = why,
            "redis lost recorded changes; entries written before are purged and revocations written back"
        );
        self.flush_memory().await;
        // Ours back into the set, then the set as the fleet wrote it back (another
        // instance may have noticed first).
        self.revocations.write_back(self).await?;
        self.revocations.load(self).await?;
        let (seq, digest) = self.record(&Change::Recovered, None).await?;
        self.record_all(seq).await?;
        self.remember(seq, Some(&crate::cache::purge::Selector::All));
        state.settling_until = Some(Instant::now() + self.max_lag());
        state.applied = seq;
        state.digest = Some(digest);
        self.observe_seq(seq);
        Ok(())
    }

    async fn read_journal(&self, from: u64) -> Result<JournalRead, StoreError> {
        let log = self.keys.named("log");
        let mut pipe = redis::pipe();
        pipe.get(self.keys.named("seq"))
            .zcard(&log)
            .cmd("ZRANGE")
            .arg(&log)
            .arg(from)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(PAGE + 1);
        let (seq, len, members): (Option<u64>, u64, Vec<Vec<u8>>) = self.redis.fetch(&pipe).await?;
        let mut records: Vec<Record> = members.iter().filter_map(|m| Record::decode(m)).collect();
        records.sort_by_key(|r| r.seq);
        Ok(JournalRead {
            seq: seq.unwrap_or(0),
            len,
            records,
        })
    }
}

/// One read of the journal.
#[derive(Debug)]
struct JournalRead {
    /// `P seq`.
    seq: u64,
    /// Records the journal holds.
    len: u64,
    /// From the last one applied here on, in order.
    records: Vec<Record>,
}
