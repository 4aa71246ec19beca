//! Storing an entry: in memory at once and in Redis in the background, never one that a
//! purge since its execution began would have removed.

use super::*;

impl Tier {
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
        // A child of the request's span, though it ends after the answer is sent.
        let span = tracing::info_span!("scoped_cache.redis.store");
        let write = async move {
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
        };
        runtime.spawn(write.instrument(span));
        true
    }

    /// Writes the entry and its index members, then checks that no purge happened since
    /// its execution started that matches it (or might have: then it is deleted again).
    pub(super) async fn write(
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
    pub(super) fn spared(&self, since: u64, seq: u64, entry: &CachedResponse) -> bool {
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
    pub(super) fn purged_since(&self, since: u64, entry: &CachedResponse) -> bool {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().any(|(seq, selector)| {
            *seq > since && selector.as_ref().is_some_and(|s| entry.meta.matches(s))
        })
    }
}
