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

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::admission;
use super::conn::StoreError;
use super::events;
use super::journal::{Change, JOURNAL_LEN, MAX_RECORD_BYTES, READ, Record, parse_seq};
use super::store::Tier;
use crate::task::AbortOnDrop;

/// How often an instance reads the journal when nothing wakes it: with pub/sub down, a
/// change reaches every instance within this plus a round trip.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// The wait after a failed sync, doubled after each failure up to [`TICK`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
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
    /// The fleet signs with another key (or none): logged once.
    keys_differ: bool,
    /// A catch-up that takes several pages: when its first page began, and the outages
    /// seen then. The instance is in step from then only once the last page is applied.
    catching_up: Option<(Instant, u64)>,
}

/// Where this instance stands against the journal.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    Fresh,
    InStep,
    Behind,
    Lost(&'static str),
}

/// What applying a page of the journal found.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    /// Everything up to Redis's sequence.
    All,
    /// More records wait.
    More,
    /// A number missing between two records: Redis lost it (the script never leaves one).
    Gap,
}

/// Runs until the tier is dropped (its owner aborts this task).
pub(crate) async fn run(tier: Weak<Tier>) {
    let Some(wake) = tier.upgrade().map(|t| t.redis.wake()) else {
        return;
    };
    let mut state = SyncState::default();
    let mut retry = FIRST_RETRY;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether this instance was in step at the last look: an operator is told when that
    // changes (never before the first time it was in step: starting up is not an outage).
    let mut was_in_step = false;
    let mut ever_in_step = false;
    loop {
        let step = {
            let Some(owner) = tier.upgrade() else { return };
            let step = owner.sync(&mut state).await;
            // What waited for Redis goes in a task of its own: a long replay never
            // holds the next sync up (the instance would cut itself off).
            owner.share_pending_later();
            let in_step = owner.in_step(tokio::time::Instant::now());
            if was_in_step && !in_step {
                if owner.knows_revocations(tokio::time::Instant::now()) {
                    tracing::warn!(
                        "out of step with the fleet (Redis not heard within max_lag, or it lost changes it had recorded): nothing cached is served; tokens are still taken (accept_tokens_when_cut_off)"
                    );
                } else {
                    tracing::warn!(
                        "out of step with the fleet (Redis not heard within max_lag, or it lost changes it had recorded): nothing cached is served and tokens are refused with 503 until it is back in step"
                    );
                }
            } else if !was_in_step && in_step && ever_in_step {
                tracing::info!(
                    "in step with the fleet again: cached answers and tokens are served"
                );
            }
            ever_in_step |= in_step;
            was_in_step = in_step;
            step
        };
        if step != Step::Failed {
            retry = FIRST_RETRY;
        }
        match step {
            Step::More => continue,
            // A failed sync woke this task itself (an outage wakes it), so it does not
            // wait for wakes: it tries again soon (the first call after a fault often
            // only remakes the connection), then less and less often, at most once a
            // tick: a Redis in trouble gets a read a second from it.
            Step::Failed => {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(TICK);
            }
            Step::Done => {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = wake.notified() => {}
                }
            }
        }
    }
}

/// How a sync ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// More of the journal waits: read it at once.
    More,
    /// Until the next tick or wake.
    Done,
    /// Redis did not answer as it should: try again on the tick.
    Failed,
}

impl Tier {
    /// Starts the syncer and the subscriber, once, if a runtime is here (`build()` may
    /// run outside one; then the first request starts them). They end when the tier is
    /// dropped.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.tasks.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.tasks.get_or_init(|| {
            let subscription = events::Subscription {
                source: self.redis.subscription_source(),
                channel: self.keys.named("events"),
                timeout: self.redis.insert_timeout.max(Duration::from_secs(1)),
                wake: self.redis.wake(),
            };
            (
                AbortOnDrop(runtime.spawn(run(Arc::downgrade(self)))),
                AbortOnDrop(runtime.spawn(events::listen(subscription))),
            )
        });
    }

    /// One sync.
    pub(crate) async fn sync(&self, state: &mut SyncState) -> Step {
        let began = (Instant::now(), self.redis.outages());
        // Before the read: a number heard later (a lookup, a write, a record of this
        // instance's own) is not a sign that Redis went back.
        let high = self.high();
        let server =
            admission::server_facts(&self.redis, &self.admission, &mut state.policy_checked).await;
        let fresh = !state.synced;
        // Behind Sentinels: only a primary a majority of them names is synced with.
        if let Err(err) = self.redis.confirm_primary().await {
            tracing::debug!(%err, "the primary is not confirmed; retrying");
            return Step::Failed;
        }
        let read = match self.read_journal(state.applied, fresh).await {
            Ok(read) => read,
            Err(err) => {
                if matches!(err, StoreError::Unreadable(_)) && self.warn_now() {
                    // Not a fault that passes: an operator must look (one warning a
                    // minute).
                    tracing::warn!(%err, "the journal cannot be read; this instance stays out of step until it can");
                } else {
                    tracing::debug!(%err, "reading the journal failed; retrying");
                }
                return Step::Failed;
            }
        };
        if !self.keys_match(state, read.key_check.as_deref()).await {
            return Step::Failed;
        }
        let restarted = match (&state.run_id, &server.run_id) {
            (Some(old), Some(new)) => old != new,
            _ => false,
        };
        let standing = if restarted {
            Standing::Lost("the server changed (a restart or a failover)")
        } else {
            self.standing(state, &read, high)
        };
        let outcome = match standing {
            Standing::InStep => match self.apply(state, read.records, read.read, read.seq).await {
                Ok(Applied::Gap) => self
                    .recover(state, "a change is missing from the journal")
                    .await
                    .map(|()| Applied::All),
                other => other,
            },
            Standing::Fresh | Standing::Behind => {
                if standing == Standing::Behind {
                    tracing::warn!("this instance fell behind the journal; its memory starts over");
                    self.flush_memory().await;
                    // Had Redis lost the set meanwhile, what this instance holds goes
                    // back (idempotent).
                    if let Err(err) = self.write_back_revocations().await {
                        tracing::debug!(%err, "writing revocations back failed; retrying");
                        return Step::Failed;
                    }
                }
                // The newest changes are remembered: an entry read from Redis while one
                // of their records is still being written is told apart by them.
                for record in &read.records {
                    if let Some(super::journal::Change::Purge { selector }) = &record.change
                        && let Some(selector) = selector.clone().into_selector()
                    {
                        self.remember(record.seq, Some(&selector));
                    }
                }
                self.load_revocations().await.map(|()| {
                    state.applied = read.seq;
                    state.digest = None;
                    self.observe_seq(read.seq);
                    Applied::All
                })
            }
            Standing::Lost(why) => self.recover(state, why).await.map(|()| Applied::All),
        };
        let applied = match outcome {
            Ok(applied) => applied,
            Err(err) => {
                tracing::debug!(%err, "applying the journal failed; retrying");
                return Step::Failed;
            }
        };
        state.synced = true;
        if server.run_id.is_some() {
            state.run_id = server.run_id;
        }
        let (started, outages) = *state.catching_up.get_or_insert(began);
        if applied == Applied::More {
            return Step::More;
        }
        state.catching_up = None;
        if let Some(until) = state.settling_until {
            if Instant::now() < until {
                return Step::Done;
            }
            if let Err(err) = self.load_revocations().await {
                tracing::debug!(%err, "reloading revocations after a recovery failed; retrying");
                return Step::Failed;
            }
            state.settling_until = None;
            tracing::info!("in step with redis again after its loss");
        }
        self.mark_in_step(started, outages);
        Step::Done
    }

    fn standing(&self, state: &SyncState, read: &JournalRead, high: u64) -> Standing {
        if read.seq < high.max(state.applied) {
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
            None if state.applied == 0 && read.seq == 0 => Standing::InStep,
            Some(first) if state.applied == 0 && first.seq == 1 => Standing::InStep,
            // Ours is gone. Trimmed away by newer changes only if the journal is full and
            // its oldest record is past it; else Redis lost it.
            _ if read.len >= JOURNAL_LEN
                && read.oldest.is_some_and(|oldest| oldest > state.applied) =>
            {
                Standing::Behind
            }
            _ => Standing::Lost("the last change applied here is gone"),
        }
    }

    /// Applies the records after `state.applied`, in order, up to `seq`; `read` is how
    /// many members the page held (some may not have been records).
    async fn apply(
        &self,
        state: &mut SyncState,
        records: Vec<Record>,
        read: usize,
        seq: u64,
    ) -> Result<Applied, StoreError> {
        for record in records {
            if record.seq <= state.applied {
                if record.seq == state.applied {
                    // Two records under one number (the script never writes that): one
                    // was planted, or Redis lost the first. Either may hide a change.
                    if state.digest.is_some_and(|digest| digest != record.digest) {
                        return Ok(Applied::Gap);
                    }
                    state.digest = Some(record.digest);
                }
                continue;
            }
            if record.seq != state.applied + 1 {
                return Ok(Applied::Gap);
            }
            if let Some(change) = record.change {
                self.apply_change(record.seq, change).await?;
            }
            state.applied = record.seq;
            state.digest = Some(record.digest);
            self.observe_seq(record.seq);
        }
        Ok(if read > PAGE {
            Applied::More
        } else if state.applied < seq {
            // The sequence was read first: every record up to it was there to read, and
            // the last ones are missing (lost, or not ours).
            Applied::Gap
        } else {
            Applied::All
        })
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
                    // One that does not fit here cannot be enforced here: the instance
                    // stays out of step (tokens 503) rather than take it.
                    self.revocations.apply(&revoke)?;
                }
            }
            Change::Recovered => {
                self.apply_purge(seq, crate::cache::purge::Selector::All)
                    .await;
                self.load_revocations().await?;
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
        self.write_back_revocations().await?;
        self.load_revocations().await?;
        let (seq, digest) = self.record(&Change::Recovered, None).await?;
        self.record_all(seq).await?;
        self.remember(seq, Some(&crate::cache::purge::Selector::All));
        state.settling_until = Some(Instant::now() + self.max_lag());
        state.applied = seq;
        state.digest = Some(digest);
        self.observe_seq(seq);
        Ok(())
    }

    /// `P seq`, the journal's length and oldest number, the fleet's key check, and the
    /// records from `from` on (for a fresh instance: the newest ones, to remember).
    async fn read_journal(&self, from: u64, fresh: bool) -> Result<JournalRead, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(READ)
            .arg(3)
            .arg(self.keys.named("seq"))
            .arg(self.keys.named("log"))
            .arg(self.keys.named("keycheck"))
            .arg(if fresh { "fresh" } else { "from" })
            .arg(if fresh { PAGE } else { PAGE + 1 })
            .arg(from)
            .arg(MAX_RECORD_BYTES);
        let (read,): (Vec<Vec<u8>>,) = self.redis.sync_fetch(&pipe).await?;
        let mut read = read.into_iter();
        let mut next = || read.next().unwrap_or_default();
        let (seq, len, oldest, key_check, read_count) = (next(), next(), next(), next(), next());
        let seq = if seq.is_empty() {
            0
        } else {
            parse_seq(&seq).ok_or(StoreError::Unreadable("the purge sequence"))?
        };
        let mut records: Vec<Record> = read
            .filter_map(|m| Record::decode(&m, self.signer()))
            .collect();
        records.sort_by_key(|r| r.seq);
        Ok(JournalRead {
            seq,
            len: parse_seq(&len).unwrap_or(0),
            // By its score, which orders the journal (its text may say anything).
            oldest: parse_seq(&oldest),
            key_check: (!key_check.is_empty()).then_some(key_check),
            records,
            read: std::str::from_utf8(&read_count)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        })
    }

    /// Whether this instance signs as the fleet does (`P keycheck`: the first instance
    /// to sync after it is gone writes its own). One that does not would skip what it
    /// cannot read, and what it records would be unreadable to the others.
    async fn keys_match(&self, state: &mut SyncState, found: Option<&[u8]>) -> bool {
        let ours = super::seal::key_check(self.signer());
        let theirs = match found {
            Some(theirs) => theirs.to_vec(),
            None => {
                let claimed = self
                    .with_room(|| {
                        let mut pipe = redis::pipe();
                        pipe.cmd("SET")
                            .arg(self.keys.named("keycheck"))
                            .arg(&ours)
                            .arg("NX")
                            .arg("GET");
                        async move { self.redis.write::<(Option<Vec<u8>>,)>(&pipe).await }
                    })
                    .await;
                match claimed {
                    // Ours now.
                    Ok((None,)) => return true,
                    // Another instance was first.
                    Ok((Some(theirs),)) => theirs,
                    Err(err) => {
                        tracing::debug!(%err, "writing the key check failed; retrying");
                        return false;
                    }
                }
            }
        };
        let matches = theirs == ours.as_bytes();
        if !matches && !state.keys_differ {
            // Tags of a constant, not secrets: they tell an operator which key is which.
            tracing::error!(
                here = %ours,
                fleet = %String::from_utf8_lossy(&theirs),
                key = %self.keys.named("keycheck"),
                "this instance's signing key differs from the fleet's (RedisTier::signing_key); it stays out of step (caches nothing, refuses tokens unless accept_tokens_when_cut_off) and records nothing until they match; if the fleet's is the wrong one, stop the instances that use it and delete this key"
            );
        }
        state.keys_differ = !matches;
        matches
    }
}

/// One read of the journal.
#[derive(Debug)]
struct JournalRead {
    /// `P seq`.
    seq: u64,
    /// Records the journal holds.
    len: u64,
    /// The oldest record's number.
    oldest: Option<u64>,
    /// `P keycheck`, if set.
    key_check: Option<Vec<u8>>,
    /// From the last one applied here on, in order.
    records: Vec<Record>,
    /// Members the read returned before any was found not to be a record.
    read: usize,
}
