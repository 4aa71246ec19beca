//! The connection to Redis: one multiplexed, self-reconnecting `ConnectionManager` (or,
//! on a cluster, the cluster client's connection, every command sent to the primary of
//! the tier's one slot), every call under a timeout and the circuit breaker.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use tokio::sync::Notify;

use super::RedisTier;
use super::breaker::{Breaker, Permit};
use super::topology::Topology;

/// Why a Redis call did not happen or did not answer. Every one is handled by going on
/// without Redis (fail open).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the circuit breaker is open")]
    Open,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis holds something of ours this version cannot read.
    #[error("unreadable {0} in redis")]
    Unreadable(&'static str),
    /// A shared revocation cannot be held here.
    #[error("a shared revocation does not fit this instance's max_revocations")]
    RevocationsFull,
    /// The fleet signs with another key (or none): its instances could not read what this
    /// one records.
    #[error("this instance's signing key differs from the fleet's")]
    KeyMismatch,
    /// A majority of the Sentinels does not name the primary this instance reaches.
    #[error("the Sentinels' majority does not name the primary this instance reaches")]
    NotPrimary,
    /// Other instances recorded a change before this one every time it tried.
    #[error("other instances recorded first {0} times in a row")]
    Contended(usize),
}

impl StoreError {
    /// Redis refused a write because its memory is full (`maxmemory`).
    pub(crate) fn is_oom(&self) -> bool {
        matches!(self, StoreError::Redis(err) if has_code(err, &["OOM"]))
    }
}

/// Whether Redis answered with one of `codes`: an error of its own, or of any command of
/// a pipeline (`RedisError::code` names only the codes the client knows, and only the
/// first command's).
fn has_code(err: &redis::RedisError, codes: &[&str]) -> bool {
    if err.code().is_some_and(|code| codes.contains(&code)) {
        return true;
    }
    err.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, e)| codes.contains(&e.code())))
}

/// A connection to the tier's Redis, whatever its topology.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    /// Every command and pipeline goes to `home`: the primary of the slot all the
    /// tier's keys hash to (keyless ones too: `INFO`, `SCAN`, `TIME` must ask that
    /// server, not any).
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        home: Route,
    },
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster { conn, home } => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*home));
                Box::pin(conn.route_command(cmd.clone(), routing))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster { conn, home } => {
                let routing = SingleNodeRoutingInfo::SpecificNode(*home);
                Box::pin(conn.route_pipeline(pipeline.clone(), offset, count, routing))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            // A cluster has database 0 only.
            Conn::Cluster { .. } => 0,
        }
    }
}

/// What connections are made from.
// One per tier, made once: boxing the cluster's would save nothing worth a pointer.
#[allow(clippy::large_enum_variant)]
enum Clients {
    Single(redis::Client),
    Cluster {
        client: redis::cluster::ClusterClient,
        /// One per seed node, for the subscription (a cluster carries `PUBLISH` to every
        /// node, so any of them will do).
        nodes: Vec<redis::Client>,
        home: Route,
    },
    /// Asked for the current primary whenever a connection is (re)made, and on every
    /// sync.
    Sentinel(Arc<Watch>),
}

/// The Sentinels, and how to reach the primary they name.
pub(crate) struct Watch {
    sentinels: Vec<redis::Client>,
    service: String,
    /// For the primary: its credentials and database (the Sentinels are asked without).
    settings: redis::RedisConnectionInfo,
    tls: Option<Option<redis::TlsCertificates>>,
    /// How long one Sentinel may take to answer.
    timeout: Duration,
}

impl Watch {
    /// The primary a majority of the Sentinels names now, asking all of them at once (one
    /// that hangs costs `timeout`, never more); `None` without a majority.
    pub(crate) async fn named(&self) -> Option<(String, u16)> {
        let asks = self.sentinels.iter().map(|sentinel| async move {
            let ask = async {
                let mut conn = sentinel.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&self.service)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(self.timeout, ask).await {
                Ok(Ok(named)) => named,
                _ => None,
            }
        });
        let named: Vec<(String, u16)> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        named
            .iter()
            .find(|candidate| {
                named.iter().filter(|n| n == candidate).count() * 2 > self.sentinels.len()
            })
            .cloned()
    }

    /// A client for the primary at `address`.
    pub(crate) fn client(&self, (host, port): (String, u16)) -> redis::RedisResult<redis::Client> {
        let addr = match &self.tls {
            None => redis::ConnectionAddr::Tcp(host, port),
            Some(_) => redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
        };
        let info = redis::IntoConnectionInfo::into_connection_info("redis://127.0.0.1:6379")?
            .set_addr(addr)
            .set_redis_settings(self.settings.clone())
            .set_tcp_settings(tcp());
        match &self.tls {
            Some(Some(certificates)) => redis::Client::build_with_tls(info, certificates.clone()),
            _ => redis::Client::open(info),
        }
    }
}

/// Where the subscription gets its connections: fixed clients tried in turn, or the
/// primary the Sentinels name now.
#[derive(Clone)]
pub(crate) enum ClientSource {
    Fixed(Vec<redis::Client>),
    Sentinel(Arc<Watch>),
}

impl ClientSource {
    /// The client for the `attempt`th try.
    pub(crate) async fn client(&self, attempt: usize) -> redis::RedisResult<redis::Client> {
        match self {
            ClientSource::Fixed(clients) => clients
                .get(attempt % clients.len().max(1))
                .cloned()
                .ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no node"))
                }),
            ClientSource::Sentinel(watch) => match watch.named().await {
                Some(address) => watch.client(address),
                None => Err(no_majority()),
            },
        }
    }
}

/// The connections made so far, one per lane.
#[derive(Default)]
struct Lanes {
    requests: Option<Conn>,
    bulk: Option<Conn>,
}

pub(crate) struct Redis {
    clients: Clients,
    /// Made on first use, inside the runtime (making one spawns its reconnecting task).
    /// Lookups, leases and records go on one connection; writes, index purges and
    /// revocation loads on another, so a large pipeline never holds a lookup up behind it.
    lanes: Mutex<Lanes>,
    /// A key of the tier's (`P seq`): on a cluster, its slot is the tier's.
    home_key: String,
    /// Behind Sentinels: the address the connections reach.
    primary: Mutex<Option<(String, u16)>>,
    breaker: Breaker,
    /// Outages seen so far (errors and timeouts, not refusals): the syncer compares it
    /// before and after a sync, so a read from Redis after any outage waits for a sync
    /// that began after it (see [`Tier::in_step`](super::store::Tier)).
    outages: AtomicU64,
    /// Wakes the syncer: on every outage (so it checks Redis at once), and for whoever
    /// learns that the journal moved.
    wake: Arc<Notify>,
    pub(crate) fetch_timeout: Duration,
    pub(crate) insert_timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("Redis")
            .field("available", &self.breaker.is_closed())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// `home_key`: a key of the tier's (all hash to one slot on a cluster).
    pub(crate) fn new(
        tier: &RedisTier,
        topology: &Topology,
        home_key: &str,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            clients: clients(tier, topology, home_key)?,
            lanes: Mutex::new(Lanes::default()),
            home_key: home_key.to_owned(),
            primary: Mutex::new(None),
            breaker: Breaker::new(tier.cool_down),
            outages: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            fetch_timeout: tier.fetch_timeout,
            insert_timeout: tier.insert_timeout,
        })
    }

    /// A key of the tier's: on a cluster, in the tier's slot.
    pub(crate) fn home_key(&self) -> &str {
        &self.home_key
    }

    /// Where the subscription gets its connections.
    pub(crate) fn subscription_source(&self) -> ClientSource {
        match &self.clients {
            Clients::Single(client) => ClientSource::Fixed(vec![client.clone()]),
            Clients::Cluster { nodes, .. } => ClientSource::Fixed(nodes.clone()),
            Clients::Sentinel(watch) => ClientSource::Sentinel(Arc::clone(watch)),
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lane's connection, made on first use (or, behind Sentinels, after an outage:
    /// the primary may have changed).
    async fn conn(&self, lane: Lane) -> Result<Conn, redis::RedisError> {
        let held = {
            let lanes = self.lanes();
            match lane {
                Lane::Requests => lanes.requests.clone(),
                Lane::Bulk => lanes.bulk.clone(),
            }
        };
        if let Some(conn) = held {
            return Ok(conn);
        }
        let response_timeout = self.insert_timeout.max(self.fetch_timeout);
        // Reconnection is ours to pace (the breaker), so a manager tries once per call,
        // and never waits longer for a connection than a lookup may.
        let manager_config = || {
            ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_connection_timeout(Some(self.fetch_timeout))
                .set_response_timeout(Some(response_timeout))
        };
        let made = match &self.clients {
            Clients::Single(client) => Conn::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                manager_config(),
            )?),
            Clients::Sentinel(watch) => {
                // Boxed: every Redis call's future would carry the Sentinels' otherwise.
                let address = Box::pin(watch.named()).await.ok_or_else(no_majority)?;
                let primary = watch.client(address.clone())?;
                *self.primary() = Some(address);
                Conn::Single(ConnectionManager::new_lazy_with_config(
                    primary,
                    manager_config(),
                )?)
            }
            // Connects in the background; the first command waits for it.
            Clients::Cluster { client, home, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(self.fetch_timeout)
                    .set_response_timeout(response_timeout);
                Conn::Cluster {
                    conn: client.get_pending_async_connection_with_config(config),
                    home: *home,
                }
            }
        };
        // A racing caller's connection may win; either works.
        let mut lanes = self.lanes();
        let slot = match lane {
            Lane::Requests => &mut lanes.requests,
            Lane::Bulk => &mut lanes.bulk,
        };
        Ok(slot.get_or_insert(made).clone())
    }

    /// After an outage behind Sentinels, the next call asks them for the primary again
    /// (a failover demotes or removes the one these connections reach).
    fn forget_primary(&self) {
        if matches!(self.clients, Clients::Sentinel(_)) {
            *self.lanes() = Lanes::default();
            *self.primary() = None;
        }
    }

    fn primary(&self) -> std::sync::MutexGuard<'_, Option<(String, u16)>> {
        self.primary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Behind Sentinels: whether a majority of them name the primary this instance's
    /// connections reach (asked on every sync, before the journal is read). A primary
    /// cut off with this instance and a minority of Sentinels, while the others promoted
    /// another, still answers reads as a primary: only the Sentinels can tell, and
    /// without a majority the sync fails, so the instance falls out of step within
    /// `max_lag` instead of reading a journal the fleet no longer writes.
    pub(crate) async fn confirm_primary(&self) -> Result<(), StoreError> {
        let Clients::Sentinel(watch) = &self.clients else {
            return Ok(());
        };
        if self.primary().is_none() {
            // Discovers one (as the journal read would), so it is confirmed before use.
            tokio::time::timeout(self.fetch_timeout, self.conn(Lane::Requests))
                .await
                .map_err(|_| StoreError::Timeout(self.fetch_timeout))??;
        }
        let Some(connected) = self.primary().clone() else {
            return Err(StoreError::NotPrimary);
        };
        if Box::pin(watch.named()).await.as_ref() == Some(&connected) {
            return Ok(());
        }
        // The next call asks them for the primary again.
        self.forget_primary();
        Err(StoreError::NotPrimary)
    }

    /// Whether calls go to Redis now (the breaker is closed).
    pub(crate) fn available(&self) -> bool {
        self.breaker.is_closed()
    }

    /// Outages seen so far.
    pub(crate) fn outages(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    fn outage_seen(&self) {
        self.outages.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// What wakes the syncer.
    pub(crate) fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// A pipeline within the fetch timeout that neither asks the breaker nor feeds it:
    /// for calls an ACL may refuse (`INFO`, `CONFIG GET`) without Redis being in trouble.
    pub(crate) async fn optional<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let call = async {
            let mut conn = self.conn(Lane::Bulk).await?;
            pipe.query_async(&mut conn).await
        };
        match tokio::time::timeout(self.fetch_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError::Redis(err)),
            Err(_) => Err(StoreError::Timeout(self.fetch_timeout)),
        }
    }

    /// Runs `call` on the connection within `timeout`, unless the breaker is open; its
    /// outcome feeds the breaker.
    pub(crate) async fn run<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_on(Lane::Requests, timeout, call).await
    }

    async fn run_on<T, F, Fut>(
        &self,
        lane: Lane,
        timeout: Duration,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let permit = self.breaker.permit().ok_or(StoreError::Open)?;
        self.run_with(permit, lane, timeout, call).await
    }

    /// The syncer's read of the journal, within the fetch timeout. It goes even while
    /// the breaker is open, as its probe (off the request path, and after a few quick
    /// retries at most once a tick), so the instance learns that Redis is back within a
    /// tick of it, not a cool-down; and a connection the fault broke is remade by that
    /// call, not by a request's.
    pub(crate) async fn sync_fetch<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let call = || {
            let permit = self.breaker.permit().unwrap_or(Permit::Probe);
            self.run_with(
                permit,
                Lane::Requests,
                self.fetch_timeout,
                |mut conn| async move { pipe.query_async(&mut conn).await },
            )
        };
        let was_open = !self.breaker.is_closed();
        let outcome = match call().await {
            // The connection a fault broke: this call only had it remade, so the next
            // one, at once, tells whether Redis is back.
            Err(StoreError::Redis(err)) if err.is_connection_dropped() || err.is_io_error() => {
                call().await
            }
            outcome => outcome,
        };
        // The outage is over. The fault that opened the breaker broke the bulk connection
        // too: a ping has it remade now (a ping neither asks nor feeds the breaker), or
        // the first write after the fault would fail and count as a new outage.
        if was_open && outcome.is_ok() {
            let _ = self
                .optional::<()>(redis::pipe().cmd("PING").ignore())
                .await;
        }
        outcome
    }

    async fn run_with<T, F, Fut>(
        &self,
        permit: Permit,
        lane: Lane,
        timeout: Duration,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // A call dropped half-way (its caller went away) still reports, so a probe never
        // keeps the breaker open for good.
        let mut report = Report {
            breaker: &self.breaker,
            permit,
            done: false,
        };
        // The connection is made (behind Sentinels: the primary asked for) within the
        // call's time-out.
        let outcome = tokio::time::timeout(timeout, async {
            let conn = self.conn(lane).await?;
            call(conn).await
        })
        .await;
        let outcome = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError::Redis(err)),
            Err(_) => Err(StoreError::Timeout(timeout)),
        };
        report.done = true;
        match &outcome {
            // A reply Redis sent (a wrong type, a script error) is not an outage.
            Err(StoreError::Redis(err)) if !is_outage(err) => self.breaker.succeeded(permit),
            Err(err) => {
                self.outage_seen();
                self.forget_primary();
                self.breaker.failed(permit, err);
            }
            Ok(_) => self.breaker.succeeded(permit),
        }
        outcome
    }

    /// A pipeline within the fetch timeout.
    pub(crate) async fn fetch<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.run(self.fetch_timeout, |mut conn| async move {
            pipe.query_async(&mut conn).await
        })
        .await
    }

    /// A pipeline within the insert timeout, on the bulk connection (entry writes, index
    /// purges, revocation loads: off the request path, possibly large).
    pub(crate) async fn bulk<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.run_on(Lane::Bulk, self.insert_timeout, |mut conn| async move {
            pipe.query_async(&mut conn).await
        })
        .await
    }

    /// A pipeline within the insert timeout.
    pub(crate) async fn write<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.run(self.insert_timeout, |mut conn| async move {
            pipe.query_async(&mut conn).await
        })
        .await
    }
}

/// The clients for `tier` on `topology`.
fn clients(
    tier: &RedisTier,
    topology: &Topology,
    home_key: &str,
) -> Result<Clients, redis::RedisError> {
    match topology {
        Topology::Single(url) => Ok(Clients::Single(client(tier, url)?)),
        Topology::Sentinel {
            sentinels,
            service,
            username,
            password,
            db,
            tls,
        } => {
            let scheme = if *tls { "rediss" } else { "redis" };
            let watchers = sentinels
                .iter()
                .map(|(host, port)| {
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host.clone()
                    };
                    client(tier, &format!("{scheme}://{host}:{port}"))
                })
                .collect::<Result<_, _>>()?;
            let mut settings = redis::RedisConnectionInfo::default().set_db(*db);
            if let Some(username) = username {
                settings = settings.set_username(username);
            }
            if let Some(password) = password {
                settings = settings.set_password(password);
            }
            Ok(Clients::Sentinel(Arc::new(Watch {
                sentinels: watchers,
                service: service.clone(),
                settings,
                tls: tls.then(|| certificates(tier)),
                timeout: tier.fetch_timeout,
            })))
        }
        Topology::Cluster(nodes) => {
            let mut builder =
                redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    // The client's own retries (after a failover: reconnect, refresh the
                    // slot map, redirect) run within each call's time-out, which bounds
                    // them.
                    .tcp_settings(tcp())
                    .connection_timeout(tier.fetch_timeout)
                    .response_timeout(tier.insert_timeout.max(tier.fetch_timeout));
            if let Some(certificates) = certificates(tier) {
                builder = builder.certs(certificates);
            }
            Ok(Clients::Cluster {
                client: builder.build()?,
                nodes: nodes
                    .iter()
                    .map(|node| client(tier, node))
                    .collect::<Result<_, _>>()?,
                home: Route::with_key(home_key, SlotAddr::Master),
            })
        }
    }
}

/// The client for `url`: with a CA or a client certificate, TLS configured with them;
/// else from the URL alone (`rediss://` with the system's roots).
fn client(tier: &RedisTier, url: &str) -> Result<redis::Client, redis::RedisError> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?.set_tcp_settings(tcp());
    match certificates(tier) {
        None => redis::Client::open(info),
        Some(certificates) => redis::Client::build_with_tls(info, certificates),
    }
}

/// `TCP_NODELAY` on every connection: a lookup is one small write that waits for its
/// answer, which Nagle's algorithm (the client's default) can hold back for a delayed
/// acknowledgement, some 40 ms.
fn tcp() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// The tier's own CA and client certificate, if it has either.
fn certificates(tier: &RedisTier) -> Option<redis::TlsCertificates> {
    if tier.ca.is_none() && tier.client_certificate.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: tier
            .client_certificate
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tier.ca.clone(),
    })
}

#[derive(Debug, Clone, Copy)]
enum Lane {
    Requests,
    Bulk,
}

/// Reports a call that ended without an outcome as a failure.
struct Report<'a> {
    breaker: &'a Breaker,
    permit: Permit,
    done: bool,
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        // An abandoned probe counts as failed (the next one goes after the cool-down); an
        // abandoned call says nothing about Redis (its client hung up).
        if !self.done && self.permit == Permit::Probe {
            self.breaker.failed(self.permit, &"the probe was abandoned");
        }
    }
}

fn is_outage(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_unrecoverable_error()
        // Redis answers, but cannot serve: a demoted primary, a load, an outage upstream,
        // a script stuck. A full memory (`OOM`) is not one: reads and deletes still work,
        // and the tier makes room for its records itself (see `admission`).
        || has_code(
            err,
            &[
                "READONLY",
                "LOADING",
                "MASTERDOWN",
                "BUSY",
                "MISCONF",
                "NOREPLICAS",
                "NOPERM",
            ],
        )
}

/// Behind Sentinels, none of the answers named one primary for a majority of them.
fn no_majority() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "no primary named by a majority of the Sentinels",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_does_not_keep_the_breaker_open() {
        let tier = RedisTier::new("redis://127.0.0.1:1").cool_down(Duration::from_secs(2));
        let topology = Topology::of(&tier.url).unwrap();
        let redis = Redis::new(&tier, &topology, "scoped-cache:seq").unwrap();
        for _ in 0..super::super::breaker::FAILURES_TO_OPEN {
            let _ = redis
                .run(Duration::from_millis(10), |_| async {
                    Err::<(), _>(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::ConnectionRefused,
                    )))
                })
                .await;
        }
        assert!(!redis.available());
        tokio::time::advance(Duration::from_secs(2)).await;
        // The probe's caller goes away before Redis answers.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(1),
            redis.run(Duration::from_secs(1), |_| {
                std::future::pending::<redis::RedisResult<()>>()
            }),
        )
        .await;
        assert!(abandoned.is_err());
        tokio::time::advance(Duration::from_secs(2)).await;
        let probe = redis
            .run(Duration::from_millis(10), |_| async {
                Ok::<_, redis::RedisError>(())
            })
            .await;
        assert!(probe.is_ok(), "a new probe went, and closed the breaker");
        assert!(redis.available());
    }
}
