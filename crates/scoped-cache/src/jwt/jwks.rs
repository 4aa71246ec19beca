//! A JWKS source: keys fetched from a URL (or found by OIDC discovery), shared by every
//! verifier that holds a handle, refreshed in the background, and never fetched more often
//! than allowed, however many unknown `kid`s arrive.

use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::BuildError;
use crate::jwt::keyset::KeySet;
use crate::rejection::AuthErrorKind;
use crate::wire::control;

/// Longest [`fetch_timeout`](JwksSourceBuilder::fetch_timeout): a provider slower than this
/// is down, and waiters wait a few timeouts at most.
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Longest refresh interval or [`max_stale`](JwksSourceBuilder::max_stale): a year, far
/// beyond any key rotation, and small enough that no deadline computed from it overflows.
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Why keys could not be fetched. Messages name the step, never the response body.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFetchError {
    /// The request failed: connection, TLS, or timeout.
    #[error("request failed")]
    Transport(#[source] Arc<reqwest::Error>),
    /// The provider answered with a status other than 200.
    #[error("provider answered {0}")]
    Status(u16),
    /// The response exceeded the size limit.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The response was not the JSON document expected.
    #[error("response is not a valid {0}")]
    Invalid(&'static str),
    /// The discovery document names another issuer than the one configured.
    #[error("discovery document names another issuer")]
    IssuerMismatch,
    /// The discovered `jwks_uri` is not usable (unparseable, or not https for an https issuer).
    #[error("discovered jwks_uri is not acceptable")]
    BadJwksUri,
    /// The JWKS has no key this layer can verify with.
    #[error("no usable signature key in the key set")]
    NoUsableKeys,
    /// The source was dropped while the fetch ran.
    #[error("key source shut down")]
    Closed,
}

/// A shared, self-refreshing set of verification keys from a JWKS URL or an OIDC issuer.
///
/// Cloning is cheap and every clone shares one fetcher and one key cache: give the same
/// source to any number of [`Verifier`](crate::Verifier)s and layers, and the identity
/// provider sees one client. Keys are refreshed in the background every
/// [`refresh_interval`](JwksSourceBuilder::refresh_interval) (sooner when the JWKS's
/// `Cache-Control: max-age` says so), by a task that ends with the last handle. A token
/// with an unknown `kid` triggers at most one refresh per
/// [`min_refresh_interval`](JwksSourceBuilder::min_refresh_interval). If the provider is
/// down, keys already fetched keep verifying for [`max_stale`](JwksSourceBuilder::max_stale);
/// after that (or before any fetch succeeded) requests with tokens get 503. A token whose
/// `kid` is unknown while the provider's latest fetch failed gets 503 too, not 401: its key
/// may have been published during the outage.
///
/// `build()` does no I/O, so start-up never fails because the provider is down.
///
/// ```
/// use std::time::Duration;
/// use scoped_cache::{JwksSource, Verifier};
///
/// let keys = JwksSource::url("https://idp.example.com/.well-known/jwks.json")
///     .refresh_interval(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// let verifier = Verifier::jwks(keys).issuer(["https://idp.example.com/"]).audience(["my-api"]);
/// # let _ = verifier;
/// ```
#[derive(Clone)]
pub struct JwksSource {
    inner: Arc<Inner>,
}

/// Configures a [`JwksSource`]; see [`JwksSource::url`] and [`JwksSource::oidc`].
#[derive(Debug)]
#[must_use]
pub struct JwksSourceBuilder {
    location: Result<Location, BuildError>,
    config: Config,
}

#[derive(Debug, Clone)]
enum Location {
    Jwks(Url),
    Oidc { issuer: String, discovery: Url },
}

#[derive(Debug, Clone)]
struct Config {
    refresh_interval: Duration,
    min_refresh_interval: Duration,
    max_stale: Duration,
    fetch_timeout: Duration,
    max_response_bytes: usize,
    rsa_default_algorithms: Vec<Algorithm>,
    /// Issuers set with [`JwksSourceBuilder::issuer`]; `None` if never called.
    issuers: Option<Vec<String>>,
}

struct Inner {
    location: Location,
    config: Config,
    /// The `iss` values these keys may vouch for; empty when the source is not bound.
    issuers: Vec<String>,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    state: Mutex<State>,
    /// The id of the last attempt that ended, sent while `state` is locked.
    finished: watch::Sender<u64>,
    task: Mutex<Refresher>,
}

/// The background refresher. `Starting` marks a spawn decided under the lock and done
/// outside it, so two callers never both spawn one.
enum Refresher {
    Idle,
    Starting,
    Running(AbortHandle),
}

struct State {
    /// The id of the last attempt started; attempts are numbered from 1.
    started: u64,
    in_flight: bool,
    /// A forced refresh arrived during a fetch that may predate what it announces: run one
    /// more attempt when the current one ends.
    follow_up: bool,
    last_attempt: Option<Instant>,
    last_outcome: Option<(u64, Result<(), KeyFetchError>)>,
    /// When the last attempt ended; the next scheduled one is `next_scheduled` after it.
    last_end: Instant,
    next_scheduled: Duration,
    backoff: Option<ExponentialBackoff>,
    jwks_uri: Option<Url>,
}

/// Why a refresh is asked for; only scheduled ones ignore the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Scheduled,
    Forced,
    OnDemand,
}

impl JwksSource {
    /// A source that fetches the JWKS at `url`.
    pub fn url(url: impl AsRef<str>) -> JwksSourceBuilder {
        let location = parse_url(url.as_ref()).map(Location::Jwks);
        JwksSourceBuilder::new(location)
    }

    /// A source that finds the JWKS through OIDC discovery
    /// (`{issuer}/.well-known/openid-configuration` → `jwks_uri`). The discovery document
    /// must name exactly this issuer, and a verifier using this source requires
    /// `iss` = `issuer`, as OIDC demands.
    pub fn oidc(issuer: impl Into<String>) -> JwksSourceBuilder {
        let issuer = issuer.into();
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let location = parse_url(&discovery).map(|discovery| Location::Oidc { issuer, discovery });
        JwksSourceBuilder::new(location)
    }

    /// The issuer of an OIDC source.
    pub fn issuer(&self) -> Option<&str> {
        match &self.inner.location {
            Location::Oidc { issuer, .. } => Some(issuer),
            Location::Jwks(_) => None,
        }
    }

    /// The `iss` values this source's keys may vouch for: an OIDC source's issuer, or those
    /// given to [`JwksSourceBuilder::issuer`]. Empty when the source is not bound.
    pub(crate) fn bound_issuers(&self) -> &[String] {
        &self.inner.issuers
    }

    /// Fetches keys now, whatever the rate limit, and waits for the outcome. For a webhook
    /// that announces a rotation, or to warm the cache at start-up.
    ///
    /// # Errors
    ///
    /// The [`KeyFetchError`] of this fetch; keys already held stay in use.
    pub async fn refresh_now(&self) -> Result<(), KeyFetchError> {
        self.inner.ensure_started();
        let Some(attempt) = self.inner.start_refresh(Cause::Forced) else {
            return Err(KeyFetchError::Closed);
        };
        // At most the fetch already running plus the one started for this call. Saturating,
        // though `build()` bounds the timeout: a wait must never panic.
        let wait = self.inner.config.fetch_timeout.saturating_mul(5);
        let target = attempt.id;
        if !attempt.wait(wait).await {
            return Err(KeyFetchError::Closed);
        }
        match &self.inner.lock_state().last_outcome {
            Some((id, outcome)) if *id >= target => outcome.clone(),
            _ => Err(KeyFetchError::Closed),
        }
    }

    /// The keys to verify a token with `kid`, fetching them if needed and allowed.
    pub(crate) async fn keys(&self, kid: Option<&str>) -> Result<SourceKeys, AuthErrorKind> {
        self.inner.ensure_started();
        let now = Instant::now();
        let set = self.inner.current();
        if self.inner.usable(&set, now) && kid.is_none_or(|kid| set.has_kid(kid)) {
            return Ok(SourceKeys {
                set,
                kid_unconfirmed: false,
            });
        }
        // An unknown kid may be a rotation; no usable keys may be a provider that is back.
        // Either way ask for one refresh; the rate limit keeps floods off the provider.
        let settled = match self.inner.start_refresh(Cause::OnDemand) {
            Some(attempt) => {
                attempt
                    .wait(self.inner.config.fetch_timeout.saturating_mul(2))
                    .await
            }
            // Rate-limited: the last attempt's outcome is the latest word of the provider.
            None => true,
        };
        let set = self.inner.current();
        if !self.inner.usable(&set, Instant::now()) {
            return Err(AuthErrorKind::KeysUnavailable);
        }
        // A kid is unknown for sure only if the provider was just heard from; during an
        // outage it may name a key published since, and a 401 would make clients drop a
        // good token. The rate limit above still bounds what a forged-kid flood costs.
        let kid_unconfirmed = kid.is_some_and(|kid| !set.has_kid(kid))
            && (!settled || self.inner.last_attempt_failed());
        Ok(SourceKeys {
            set,
            kid_unconfirmed,
        })
    }

    /// Whether the keys held now include `kid`, without fetching.
    pub(crate) fn has_kid_now(&self, kid: &str) -> bool {
        self.inner.current().has_kid(kid)
    }

    /// Whether keys verified from this source may still be trusted (not beyond max-stale).
    pub(crate) fn is_usable(&self) -> bool {
        let set = self.inner.current();
        self.inner.usable(&set, Instant::now())
    }
}

/// The keys a source holds for one token.
pub(crate) struct SourceKeys {
    pub(crate) set: Arc<KeySet>,
    /// The token's `kid` is not among the keys, and the provider could not be asked (its
    /// last attempt failed, or did not end in time): the key may exist all the same.
    pub(crate) kid_unconfirmed: bool,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl JwksSourceBuilder {
    fn new(location: Result<Location, BuildError>) -> Self {
        Self {
            location,
            config: Config {
                refresh_interval: Duration::from_secs(10 * 60),
                min_refresh_interval: Duration::from_secs(30),
                max_stale: Duration::from_secs(24 * 60 * 60),
                fetch_timeout: Duration::from_secs(5),
                max_response_bytes: 256 * 1024,
                rsa_default_algorithms: vec![Algorithm::RS256],
                issuers: None,
            },
        }
    }

    /// Time between background refreshes. Default: 10 minutes; at most a year. A shorter
    /// `Cache-Control: max-age` on the JWKS response shortens it, down to
    /// [`min_refresh_interval`](Self::min_refresh_interval).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.config.refresh_interval = interval;
        self
    }

    /// Least time between two refreshes caused by tokens (unknown `kid`, no usable keys).
    /// Default: 30 seconds; at most a year. Forged `kid` floods cost the provider at most
    /// one fetch per interval.
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.config.min_refresh_interval = interval;
        self
    }

    /// How long keys keep verifying after the last successful fetch while the provider is
    /// unreachable. Default: 24 hours; at least `refresh_interval` and at most a year.
    /// Beyond it, requests with tokens get 503.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.config.max_stale = max_stale;
        self
    }

    /// Timeout of one HTTP request to the provider. Default: 5 seconds; at most 5 minutes.
    /// A request whose token needs a refresh waits up to twice this for it.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }

    /// Issuers (`iss` values) this source's keys may vouch for: a token whose `iss` is not
    /// listed is never checked against them. Default: any issuer the verifier accepts.
    /// Required when a [`Verifier`](crate::Verifier) holds this source beside other key
    /// sources and accepts several issuers. The verifier accepts these issuers too. An OIDC
    /// source is always bound to its own issuer, and may not list another.
    pub fn issuer<I: IntoIterator<Item = S>, S: Into<String>>(mut self, issuers: I) -> Self {
        self.config.issuers = Some(issuers.into_iter().map(Into::into).collect());
        self
    }

    /// Largest JWKS or discovery document read, in bytes. Default: 256 KiB.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.config.max_response_bytes = bytes;
        self
    }

    /// Algorithms for RSA keys whose JWK has no `alg` (Entra ID publishes such keys).
    /// Default: `[RS256]`.
    pub fn rsa_default_algorithms(
        mut self,
        algorithms: impl IntoIterator<Item = Algorithm>,
    ) -> Self {
        self.config.rsa_default_algorithms = algorithms.into_iter().collect();
        self
    }

    /// Checks the configuration and makes the source. Does no I/O; the background refresh
    /// starts now if a tokio runtime is running, else at first use.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidUrl`] for a URL that does not parse or is not http(s);
    /// [`BuildError::Zero`] for a zero interval, timeout or size;
    /// [`BuildError::DurationTooLong`] for a duration beyond its maximum;
    /// [`BuildError::InvalidInterval`] when `min_refresh_interval` exceeds
    /// `refresh_interval` or `max_stale` is shorter than it;
    /// [`BuildError::InvalidIssuerBinding`] for an empty `issuer` list, or one naming
    /// another issuer than an OIDC source's; [`BuildError::HttpClient`] if the HTTP client
    /// cannot be made.
    pub fn build(self) -> Result<JwksSource, BuildError> {
        let location = self.location?;
        let c = &self.config;
        for (name, zero) in [
            ("refresh_interval", c.refresh_interval.is_zero()),
            ("min_refresh_interval", c.min_refresh_interval.is_zero()),
            ("max_stale", c.max_stale.is_zero()),
            ("fetch_timeout", c.fetch_timeout.is_zero()),
            ("max_response_bytes", c.max_response_bytes == 0),
        ] {
            if zero {
                return Err(BuildError::Zero(name));
            }
        }
        for (field, value, max) in [
            ("fetch_timeout", c.fetch_timeout, MAX_FETCH_TIMEOUT),
            ("refresh_interval", c.refresh_interval, MAX_INTERVAL),
            ("min_refresh_interval", c.min_refresh_interval, MAX_INTERVAL),
            ("max_stale", c.max_stale, MAX_INTERVAL),
        ] {
            if value > max {
                return Err(BuildError::DurationTooLong { field, max });
            }
        }
        if c.min_refresh_interval > c.refresh_interval || c.max_stale < c.refresh_interval {
            return Err(BuildError::InvalidInterval);
        }
        let issuers = match (&location, &c.issuers) {
            (_, Some(given)) if given.is_empty() => {
                return Err(BuildError::InvalidIssuerBinding {
                    reason: "`issuer` needs at least one issuer",
                });
            }
            (Location::Oidc { issuer, .. }, Some(given)) if given.iter().any(|g| g != issuer) => {
                return Err(BuildError::InvalidIssuerBinding {
                    reason: "an OIDC source vouches only for its own issuer",
                });
            }
            (Location::Oidc { issuer, .. }, _) => vec![issuer.clone()],
            (Location::Jwks(_), given) => given.clone().unwrap_or_default(),
        };
        if c.rsa_default_algorithms.is_empty() {
            return Err(BuildError::NoAlgorithms);
        }
        let client = reqwest::Client::builder()
            .timeout(c.fetch_timeout)
            .connect_timeout(c.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            // An https location must never be redirected to plain http.
            .https_only(location.is_https())
            .build()
            .map_err(|source| BuildError::HttpClient(Box::new(source)))?;
        let (finished, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            location,
            issuers,
            client,
            keys: RwLock::new(Arc::default()),
            state: Mutex::new(State {
                started: 0,
                in_flight: false,
                follow_up: false,
                last_attempt: None,
                last_outcome: None,
                last_end: Instant::now(),
                next_scheduled: self.config.refresh_interval,
                backoff: None,
                jwks_uri: None,
            }),
            config: self.config,
            finished,
            task: Mutex::new(Refresher::Idle),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            inner.ensure_started();
        }
        Ok(JwksSource { inner })
    }
}

impl Location {
    fn is_https(&self) -> bool {
        let url = match self {
            Location::Jwks(url) => url,
            Location::Oidc { discovery, .. } => discovery,
        };
        url.scheme() == "https"
    }
}

fn parse_url(url: &str) -> Result<Url, BuildError> {
    let invalid = || BuildError::InvalidUrl(url.to_owned());
    let parsed = Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(invalid());
    }
    Ok(parsed)
}

impl Inner {
    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetched, and not beyond max-stale. An empty set is usable: the provider said it has
    /// no keys, and tokens get 401, not 503.
    fn usable(&self, set: &KeySet, now: Instant) -> bool {
        set.fetched_at
            .is_some_and(|at| now.saturating_duration_since(at) <= self.config.max_stale)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the provider's last word is a failure: the last attempt ended without a
    /// JWKS. An emptied JWKS is the provider's answer, not a failure.
    fn last_attempt_failed(&self) -> bool {
        matches!(
            &self.lock_state().last_outcome,
            Some((_, Err(err))) if !matches!(err, KeyFetchError::NoUsableKeys)
        )
    }

    /// Spawns the background refresher, if a runtime is available and it is not running
    /// (it ends with the runtime that ran it; a source that outlives one restarts it).
    fn ensure_started(self: &Arc<Self>) {
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
    fn start_refresh(self: &Arc<Self>, cause: Cause) -> Option<Attempt> {
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
    fn spawn_fetch(self: &Arc<Self>, launch: Launch) {
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

    async fn fetch(&self, known_jwks_uri: Option<Url>) -> Result<Fetched, KeyFetchError> {
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

    async fn discover(&self, issuer: &str, discovery: &Url) -> Result<Url, KeyFetchError> {
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

    async fn get_json<T: DeserializeOwned>(
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
    fn finish(self: &Arc<Self>, id: u64, outcome: Result<Fetched, KeyFetchError>) {
        let follow_up = self.record(id, outcome);
        if let Some(launch) = follow_up {
            self.spawn_fetch(launch);
        }
    }

    /// The state-locked part of [`finish`](Self::finish): returns the queued forced
    /// refresh, begun, for the caller to spawn once the lock is released.
    fn record(&self, id: u64, outcome: Result<Fetched, KeyFetchError>) -> Option<Launch> {
        let mut state = self.lock_state();
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
    fn end(
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
struct Launch {
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
struct FetchGuard {
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
struct Attempt {
    id: u64,
    finished: watch::Receiver<u64>,
}

impl Attempt {
    /// Waits until attempt `id` (or a later one) ended, at most `limit`. False if it did not.
    async fn wait(mut self, limit: Duration) -> bool {
        let id = self.id;
        matches!(
            tokio::time::timeout(limit, self.finished.wait_for(|done| *done >= id)).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // `get_mut` takes no lock: nothing is held while aborting.
        let task = std::mem::replace(
            self.task.get_mut().unwrap_or_else(PoisonError::into_inner),
            Refresher::Idle,
        );
        if let Refresher::Running(task) = task {
            task.abort();
        }
    }
}

fn transport(err: reqwest::Error) -> KeyFetchError {
    KeyFetchError::Transport(Arc::new(err))
}

struct Fetched {
    keys: Vec<serde_json::Value>,
    max_age: Option<Duration>,
    jwks_uri: Url,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

/// Refreshes on schedule until the source is dropped. Holds only a weak reference, so it
/// never keeps the source alive; `Inner::drop` also aborts it at once. Any attempt (forced,
/// on demand or scheduled) reschedules the next one from its own end and max-age.
async fn refresh_loop(source: Weak<Inner>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_must_be_ordered() {
        let build = |min, every, stale| {
            JwksSource::url("https://idp.example/jwks.json")
                .min_refresh_interval(Duration::from_secs(min))
                .refresh_interval(Duration::from_secs(every))
                .max_stale(Duration::from_secs(stale))
                .build()
        };
        assert!(build(10, 60, 3600).is_ok());
        assert!(matches!(
            build(61, 60, 3600),
            Err(BuildError::InvalidInterval)
        ));
        assert!(matches!(
            build(10, 60, 59),
            Err(BuildError::InvalidInterval)
        ));
        assert!(matches!(
            JwksSource::url("ftp://idp.example/jwks.json").build(),
            Err(BuildError::InvalidUrl(_))
        ));
    }

    #[test]
    fn durations_beyond_their_maximum_are_refused() {
        let base = || JwksSource::url("https://idp.example/jwks.json");
        let day = Duration::from_secs(24 * 60 * 60);
        let cases = [
            ("fetch_timeout", base().fetch_timeout(Duration::MAX)),
            (
                "fetch_timeout",
                base().fetch_timeout(Duration::from_secs(5 * 60 + 1)),
            ),
            ("refresh_interval", base().refresh_interval(Duration::MAX)),
            (
                "min_refresh_interval",
                base().min_refresh_interval(Duration::MAX),
            ),
            ("max_stale", base().max_stale(Duration::MAX)),
            ("max_stale", base().max_stale(day * 366)),
        ];
        for (name, builder) in cases {
            match builder.build() {
                Err(BuildError::DurationTooLong { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        // The maximums themselves are accepted.
        let longest = base()
            .fetch_timeout(Duration::from_secs(5 * 60))
            .min_refresh_interval(day * 365)
            .refresh_interval(day * 365)
            .max_stale(day * 365)
            .build();
        assert!(longest.is_ok(), "{longest:?}");
    }

    #[test]
    fn spawning_a_refresh_on_a_shut_down_runtime_does_not_deadlock() {
        // Built outside a runtime: no refresher yet.
        let source = JwksSource::url("http://127.0.0.1:9/jwks.json")
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        // A runtime that has shut down drops a task spawned on it at once, inside `spawn`;
        // the fetch's guard then takes the state lock.
        drop(runtime);
        let (done, outcome) = std::sync::mpsc::channel();
        let inner = Arc::clone(&source.inner);
        std::thread::spawn(move || {
            let _entered = handle.enter();
            inner.ensure_started();
            let attempt = inner.start_refresh(Cause::Forced).map(|attempt| attempt.id);
            let ended = inner.lock_state().last_outcome.clone();
            let _ = done.send((attempt, ended.map(|(id, _)| id)));
        });
        let (attempt, ended) = outcome
            .recv_timeout(Duration::from_secs(10))
            .expect("a spawn under the state lock deadlocked");
        // The attempt was started and, its task dropped, ended at once.
        assert_eq!(attempt, Some(1));
        assert_eq!(ended, Some(1));
    }

    #[test]
    fn a_fetch_cancelled_by_runtime_shutdown_does_not_wedge_the_source() {
        // A provider that accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", silent.local_addr().unwrap());
        let source = JwksSource::url(url)
            .fetch_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async {
            // Start a fetch and leave it in flight.
            let _ = tokio::time::timeout(Duration::from_millis(50), source.refresh_now()).await;
        });
        drop(first);
        // The dropped fetch ended its attempt; a new runtime gets a fresh attempt whose own
        // outcome (a timeout) is reported, not a wait on the dead one.
        let outcome = runtime().block_on(source.refresh_now());
        assert!(
            matches!(outcome, Err(KeyFetchError::Transport(_))),
            "{outcome:?}"
        );
    }
}
