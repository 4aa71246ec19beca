//! A JWKS source: keys fetched from a URL (or found by OIDC discovery), shared by every
//! verifier that holds a handle, refreshed in the background, and never fetched more often
//! than allowed, however many unknown `kid`s arrive.

mod refresh;

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

    /// Asks for keys in the background, under the same rate limit as an unknown `kid`
    /// (at most one fetch per `min_refresh_interval`), without waiting: for a readiness
    /// probe, which must neither hammer the provider nor hang on it.
    pub(crate) fn nudge(&self) {
        self.inner.ensure_started();
        let _ = self.inner.start_refresh(Cause::OnDemand);
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

#[cfg(test)]
mod tests;
