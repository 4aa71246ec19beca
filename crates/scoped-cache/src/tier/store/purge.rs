//! Purges: recorded in Redis's journal (or kept until they can be), applied here, and
//! replayed after an outage.

use super::*;

/// Counts a purge on its way to Redis while it lives.
pub(super) struct Purging(Arc<AtomicUsize>);

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

impl Tier {
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
                selector: super::super::journal::WireSelector::All,
            }
            .encode();
        }
        // Never at or below the highest number seen here: after Redis lost data the
        // sequence goes on above what the fleet knew.
        let floor = self.high();
        // The first guess of Redis's sequence; a wrong one costs a round trip.
        let mut expected = floor;
        let key_check = super::super::seal::key_check(self.signer());
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
                    return Ok((seq, super::super::journal::digest(&member)));
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

    pub(super) fn postpone(&self, selector: Selector) {
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
    pub(super) async fn purge_shared(&self, selector: &Selector) -> Result<u64, StoreError> {
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
    pub(super) async fn record_life(&self) -> Result<u64, StoreError> {
        let (life,): (Option<u64>,) = self
            .redis
            .fetch(redis::pipe().get(self.keys.named("life")))
            .await?;
        Ok(life.unwrap_or(0).saturating_add(INDEX_SLACK_MS))
    }

    pub(super) async fn record_scope(
        &self,
        claims: &[Arc<[u8]>],
        seq: u64,
    ) -> Result<(), StoreError> {
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
    pub(super) async fn purge_index(&self, set: &str) -> Result<u64, StoreError> {
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
            // Out of the set and deleted in one script: a member re-added meanwhile (an
            // entry stored after the purge began) stays indexed, and a failure (a slot
            // being moved) leaves both as they were, for the replay.
            let mut pipe = redis::pipe();
            let call = pipe
                .cmd("EVAL")
                .arg(PURGE_BATCH_SCRIPT)
                .arg(batch.len() + 1)
                .arg(set);
            for member in &batch {
                call.arg(self.keys.entry_of_member(member));
            }
            call.arg(&batch);
            let (deleted,): (u64,) = self.redis.bulk(&pipe).await?;
            removed += deleted;
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
}
