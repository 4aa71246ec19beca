//! The read path: an entry from memory or Redis, and the fleet's lease on executing a
//! key.

use super::*;

/// What one lookup round trip found.
pub(super) struct Fetched {
    entry: Option<CachedResponse>,
    /// This call took the key's lease.
    won: bool,
    /// The lease says its holder executed and stored nothing.
    nothing_stored: bool,
    /// Redis lost changes it had recorded: nothing it holds is served for now.
    lost: bool,
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

impl Tier {
    pub(crate) fn get_local(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        self.l1.get_local(key, now)
    }

    pub(crate) async fn get<F>(
        self: &Arc<Self>,
        key: &CacheKey,
        now: Instant,
        probe: F,
    ) -> Result<Hit, Missed>
    where
        F: FnOnce() -> Probe + Send,
    {
        self.start();
        if !self.in_step(now) {
            return Err(Missed::OutOfStep);
        }
        if let Some(entry) = self.l1.get_local(key, now) {
            return Ok(Hit {
                entry,
                source: Source::Memory,
            });
        }
        if !self.reads_redis() {
            return Err(Missed::Unreachable);
        }
        // In a future of its own, so a memory hit's request does not carry a Redis call's.
        Box::pin(self.get_remote(key, probe)).await
    }

    /// [`get`](Self::get) past memory: the entry from Redis, held in memory for
    /// `local_ttl`.
    pub(super) async fn get_remote<F>(
        self: &Arc<Self>,
        key: &CacheKey,
        probe: F,
    ) -> Result<Hit, Missed>
    where
        F: FnOnce() -> Probe + Send,
    {
        // Taken before Redis is asked: a purge this instance hears of meanwhile keeps the
        // copy out of memory.
        let since = self.l1.epoch();
        let asked = Instant::now();
        let fetched = self
            .fetch(key, &probe(), None)
            .instrument(tracing::info_span!("scoped_cache.redis.lookup"))
            .await;
        metrics::histogram!(crate::observe::names::LOOKUP_SECONDS)
            .record(asked.elapsed().as_secs_f64());
        let fetched = fetched.ok_or(Missed::Unreachable)?;
        let entry = match fetched.entry {
            Some(entry) => Arc::new(entry),
            None if fetched.lost => return Err(Missed::OutOfStep),
            None => return Err(Missed::Absent),
        };
        self.l1.hold(
            *key,
            Arc::clone(&entry),
            since,
            Instant::now() + self.local_ttl,
        );
        Ok(Hit {
            entry,
            source: Source::Redis,
        })
    }

    /// The entry for `key` in Redis, if it is there, intact, usable, and no purge since it
    /// was written covers it; and, with `lease`, whether this call took the key's lease.
    /// `None` when Redis did not answer.
    /// One round trip: the entry, the purge sequence, the purge records the request's
    /// operation, root fields and claim values could be named in, and the lease.
    pub(super) async fn fetch(
        &self,
        key: &CacheKey,
        probe: &Probe,
        lease: Option<u64>,
    ) -> Option<Fetched> {
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
                lost: false,
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
            return Some(Fetched {
                entry: None,
                won,
                nothing_stored,
                lost: true,
            });
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

    pub(super) fn release_later(self: &Arc<Self>, key: CacheKey, token: u64) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tier = Arc::clone(self);
            runtime.spawn(async move { tier.release(&key, token).await });
        }
    }

    /// After a miss in both tiers: take the key's lease and execute, or wait while
    /// another instance holds it and serve its entry. Each round trip both looks the entry
    /// up and tries the lease, so a holder that finished or died is noticed at once.
    pub(crate) async fn lease<F>(self: &Arc<Self>, key: &CacheKey, probe: F) -> Lease
    where
        F: FnOnce() -> Probe + Send,
    {
        // Why no lease can be had from Redis now, if it cannot.
        let blind = |tier: &Self| {
            if !tier.in_step(Instant::now()) {
                Some(Missed::OutOfStep)
            } else if !tier.reads_redis() {
                Some(Missed::Unreachable)
            } else {
                None
            }
        };
        if let Some(missed) = blind(self) {
            return Lease::Blind(missed);
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
                ..
            }) = self
                .fetch(key, &probe, Some(token))
                .instrument(tracing::info_span!("scoped_cache.redis.lease"))
                .await
            else {
                // The lease may have been set before the answer was lost: let it go.
                self.release_later(*key, token);
                return Lease::Blind(Missed::Unreachable);
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
                    _hold: Box::new(LeaseHold {
                        tier: Arc::clone(self),
                        key: *key,
                        token,
                    }),
                }));
            }
            // Held elsewhere: wait a little, while Redis answers and the lease may stand;
            // not at all if its holder executed and stored nothing.
            if let Some(missed) = blind(self) {
                return Lease::Blind(missed);
            }
            if nothing_stored || Instant::now() + delay >= deadline {
                return Lease::Execute(None);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// The holder executed and stored nothing: tell the waiting instances so.
    pub(super) async fn give_up(&self, key: &CacheKey, token: u64) {
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

    pub(super) async fn release(&self, key: &CacheKey, token: u64) {
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
}
