//! Keeping a source's keys: fetching its JWKS (through OIDC discovery if need be), one
//! fetch at a time, refreshed in the background, forced (rate-limited) by an unknown
//! `kid`, and trusted for a bounded time while the provider is down.

use super::*;
use crate::observe::names;

impl Inner {
    pub(super) fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetched, and not beyond max-stale. An empty set is usable: the provider said it has
    /// no keys, and tokens get 401, not 503.
    pub(super) fn usable(&self, set: &KeySet, now: Instant) -> bool {
        set.fetched_at
            .is_some_and(|at| now.saturating_duration_since(at) <= self.config.max_stale)
    }

    pub(super) fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the provider's last word is a failure: the last attempt ended without a
    /// JWKS. An emptied JWKS is the provider's answer, not a failure.
    pub(super) fn last_attempt_failed(&self) -> bool {
        matches!(
            &self.lock_state().last_outcome,
            Some((_, Err(err))) if !matches!(err, KeyFetchError::NoUsableKeys)
        )
    }

    /// Spawns the background refresher, if a runtime is available and it is not running
    /// (it ends with the runtime that ran it; a source that outlives one restarts it).
    pub(super) fn ensure_started(self: &Arc<Self>) {
        let runtime = {
            let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            match &*task {
                Refresher::Starting => return,
                Refresher::Running(handle) if !handle.is_finished() => return,
                Refresher::Running(_) | Refresher::Idle => {}
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            *task = Refresher::Starting;
            runtime
        };
        // Spawned without the lock: a runtime that is shutting down drops the task inside
        // `spawn`, and whatever that drop runs must be free to take our locks.
        let handle = runtime.spawn(refresh_loop(Arc::downgrade(self)));
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) =
            Refresher::Running(handle.abort_handle());
    }

    /// Starts an attempt unless one is running (then joins it, or for a forced refresh
    /// queues one more after it) or the rate limit forbids it.
    pub(super) fn start_refresh(self: &Arc<Self>, cause: Cause) -> Option<Attempt> {
        let (attempt, launch) = {
            let mut state = self.lock_state();
            let finished = self.finished.subscribe();
            if state.in_flight {
                let id = if cause == Cause::Forced {
                    state.follow_up = true;
                    state.started + 1
                } else {
                    state.started
                };
                return Some(Attempt { id, finished });
            }
            let now = Instant::now();
            if cause == Cause::OnDemand
                && state.last_attempt.is_some_and(|last| {
                    now.saturating_duration_since(last) < self.config.min_refresh_interval
                })
            {
                return None;
            }
            let launch = Launch::begin(&mut state);
            (
                Attempt {
                    id: launch.id,
                    finished,
                },
                launch,
            )
        };
        self.spawn_fetch(launch);
        Some(attempt)
    }

    /// Runs an attempt begun under the state lock in a task of its own, so a request that
    /// gives up waiting does not cancel the fetch. Must be called with the state lock
    /// released: if the task is dropped unfinished (no runtime, or one shutting down, which
    /// drops it inside `spawn`), its guard ends the attempt, taking the lock, so no one
    /// waits for it forever.
    pub(super) fn spawn_fetch(self: &Arc<Self>, launch: Launch) {
        let Launch { id, jwks_uri } = launch;
        let mut guard = FetchGuard {
            inner: Arc::clone(self),
            id,
            done: false,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let outcome = guard.inner.fetch(jwks_uri).await;
                guard.done = true;
                guard.inner.finish(id, outcome);
            });
        }
        // Without a runtime, `guard` drops here and ends the attempt at once.
    }

    pub(super) async fn fetch(
        &self,
        known_jwks_uri: Option<Url>,
    ) -> Result<Fetched, KeyFetchError> {
        let jwks_uri = match (&self.location, known_jwks_uri) {
            (Location::Jwks(url), _) => url.clone(),
            (Location::Oidc { .. }, Some(url)) => url,
            (Location::Oidc { issuer, discovery }, None) => {
                self.discover(issuer, discovery).await?
            }
        };
        let (document, max_age) = self.get_json::<JwksDocument>(&jwks_uri, "JWKS").await?;
        Ok(Fetched {
            keys: document.keys,
            max_age,
            jwks_uri,
        })
    }

    pub(super) async fn discover(
        &self,
        issuer: &str,
        discovery: &Url,
    ) -> Result<Url, KeyFetchError> {
        let (document, _) = self
            .get_json::<DiscoveryDocument>(discovery, "discovery document")
            .await?;
        if document.issuer != issuer {
            return Err(KeyFetchError::IssuerMismatch);
        }
        let jwks_uri = Url::parse(&document.jwks_uri).map_err(|_| KeyFetchError::BadJwksUri)?;
        // Keys for an https issuer come over https; a plain-http issuer is a local test.
        let acceptable = jwks_uri.scheme() == "https"
            || (jwks_uri.scheme() == "http" && discovery.scheme() == "http");
        if !acceptable {
            return Err(KeyFetchError::BadJwksUri);
        }
        Ok(jwks_uri)
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
        what: &'static str,
    ) -> Result<(T, Option<Duration>), KeyFetchError> {
        let limit = self.config.max_response_bytes;
        let mut response = self
            .client
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(KeyFetchError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(KeyFetchError::TooLarge(limit));
        }
        let max_age = control::parse(response.headers()).ok().and_then(|d| {
            if d.no_store || d.no_cache {
                Some(Duration::ZERO)
            } else {
                d.max_age
            }
        });
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(KeyFetchError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        let document = serde_json::from_slice(&body).map_err(|_| KeyFetchError::Invalid(what))?;
        Ok((document, max_age))
    }

    /// Records the outcome of attempt `id`: new keys, the next scheduled refresh, and the
    /// wake-up of everyone waiting for it.
    pub(super) fn finish(self: &Arc<Self>, id: u64, outcome: Result<Fetched, KeyFetchError>) {
        let follow_up = self.record(id, outcome);
        if let Some(launch) = follow_up {
            self.spawn_fetch(launch);
        }
    }

    /// The state-locked part of [`finish`](Self::finish): returns the queued forced
    /// refresh, begun, for the caller to spawn once the lock is released.
    pub(super) fn record(
        &self,
        id: u64,
        outcome: Result<Fetched, KeyFetchError>,
    ) -> Option<Launch> {
        let mut state = self.lock_state();
        let fetched = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!(names::JWKS_FETCHES, "outcome" => fetched).increment(1);
        let (result, max_age) = match outcome {
            Ok(fetched) => {
                let previous = self.current();
                let (set, parsed) = KeySet::from_jwks(
                    &fetched.keys,
                    &previous,
                    &self.config.rsa_default_algorithms,
                    Instant::now(),
                );
                if parsed.skipped > 0 {
                    tracing::debug!(
                        skipped = parsed.skipped,
                        "JWKS entries skipped (not usable signature keys)"
                    );
                }
                // The provider's word is final, even "no keys": a key it withdrew must stop
                // verifying now, not at max-stale.
                let result = if set.is_empty() {
                    tracing::warn!("the JWKS has no usable signature key; tokens will be refused");
                    Err(KeyFetchError::NoUsableKeys)
                } else {
                    Ok(())
                };
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
                state.jwks_uri = Some(fetched.jwks_uri);
                (result, Some(fetched.max_age))
            }
            Err(err) => (Err(err), None),
        };
        self.end(&mut state, id, result, max_age);
        std::mem::take(&mut state.follow_up).then(|| Launch::begin(&mut state))
    }

    /// Ends attempt `id`. `fetched` is the JWKS's max-age when a document was read.
    pub(super) fn end(
        &self,
        state: &mut State,
        id: u64,
        result: Result<(), KeyFetchError>,
        fetched: Option<Option<Duration>>,
    ) {
        state.in_flight = false;
        state.last_end = Instant::now();
        let c = &self.config;
        match (&result, fetched) {
            (_, Some(max_age)) => {
                state.backoff = None;
                state.next_scheduled = max_age
                    .map_or(c.refresh_interval, |age| age.min(c.refresh_interval))
                    .max(c.min_refresh_interval);
            }
            (Err(err), None) => {
                tracing::warn!(error = %err, "fetching signing keys failed; keeping the keys already held");
                // Discovery may have moved the JWKS: find it again next time.
                state.jwks_uri = None;
                let backoff = state.backoff.get_or_insert_with(|| {
                    ExponentialBuilder::new()
                        .with_min_delay(Duration::from_secs(1).min(c.min_refresh_interval))
                        .with_max_delay(c.refresh_interval)
                        .with_jitter()
                        .without_max_times()
                        .build()
                });
                // backon's jitter can double a delay: keep it within the refresh interval.
                state.next_scheduled = backoff
                    .next()
                    .unwrap_or(c.refresh_interval)
                    .min(c.refresh_interval);
            }
            (Ok(()), None) => {}
        }
        state.last_outcome = Some((id, result));
        // Sent under the state lock, so a waiter that joined attempt `id` cannot be woken
        // by an earlier one.
        self.finished.send_replace(id);
    }
}

/// An attempt begun (numbered, marked in flight) under the state lock, to be spawned by
/// [`Inner::spawn_fetch`] once the lock is released.
#[must_use]
pub(super) struct Launch {
    id: u64,
    jwks_uri: Option<Url>,
}

impl Launch {
    fn begin(state: &mut State) -> Self {
        state.started += 1;
        state.in_flight = true;
        state.last_attempt = Some(Instant::now());
        Launch {
            id: state.started,
            jwks_uri: state.jwks_uri.clone(),
        }
    }
}

/// Ends its attempt with `Closed` if the fetch task is dropped before finishing.
pub(super) struct FetchGuard {
    inner: Arc<Inner>,
    id: u64,
    done: bool,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.inner.lock_state();
            self.inner
                .end(&mut state, self.id, Err(KeyFetchError::Closed), None);
            // A queued forced refresh cannot run either: end it too.
            if std::mem::take(&mut state.follow_up) {
                state.started += 1;
                let queued = state.started;
                self.inner
                    .end(&mut state, queued, Err(KeyFetchError::Closed), None);
            }
        }
    }
}

/// One attempt someone waits for.
pub(super) struct Attempt {
    pub(super) id: u64,
    finished: watch::Receiver<u64>,
}

impl Attempt {
    /// Waits until attempt `id` (or a later one) ended, at most `limit`. False if it did not.
    pub(super) async fn wait(mut self, limit: Duration) -> bool {
        let id = self.id;
        matches!(
            tokio::time::timeout(limit, self.finished.wait_for(|done| *done >= id)).await,
            Ok(Ok(_))
        )
    }
}

pub(super) fn transport(err: reqwest::Error) -> KeyFetchError {
    KeyFetchError::Transport(Arc::new(err))
}

pub(super) struct Fetched {
    keys: Vec<serde_json::Value>,
    max_age: Option<Duration>,
    jwks_uri: Url,
}

#[derive(Deserialize)]
pub(super) struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
pub(super) struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

/// Refreshes on schedule until the source is dropped. Holds only a weak reference, so it
/// never keeps the source alive; `Inner::drop` also aborts it at once. Any attempt (forced,
/// on demand or scheduled) reschedules the next one from its own end and max-age.
pub(super) async fn refresh_loop(source: Weak<Inner>) {
    let mut finished = match source.upgrade() {
        Some(inner) => inner.finished.subscribe(),
        None => return,
    };
    loop {
        let (attempt, limit) = match source.upgrade() {
            Some(inner) => (
                inner.start_refresh(Cause::Scheduled),
                inner.config.fetch_timeout.saturating_mul(3),
            ),
            None => return,
        };
        if let Some(attempt) = attempt {
            attempt.wait(limit).await;
        }
        loop {
            // `None` if the deadline is beyond what `Instant` holds: wait for other attempts.
            let deadline = match source.upgrade() {
                Some(inner) => {
                    let state = inner.lock_state();
                    state.last_end.checked_add(state.next_scheduled)
                }
                None => return,
            };
            finished.borrow_and_update();
            if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
                break;
            }
            let changed = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, finished.changed()).await,
                None => Ok(finished.changed().await),
            };
            match changed {
                // Another attempt ended: its outcome sets a new deadline.
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
    }
}
