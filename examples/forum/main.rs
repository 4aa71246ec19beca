//! A members-only forum behind scoped-cache.
//!
//! ```text
//! cargo run --release --example forum                       # serve on ADDR (127.0.0.1:8000)
//! cargo run --release --example forum -- token SUB NAME ROLE # print an HS256 token
//! cargo run --release --example forum -- --config examples/forum/forum.toml
//! ```
//!
//! `--config FILE`: the layer's settings from a TOML file instead of the built-in ones
//! (`examples/forum/forum.toml` is the built-in setup as a file); the secrets it names
//! come from the environment.
//!
//! Environment:
//! - `ADDR`: listen address, default `127.0.0.1:8000`.
//! - `JWT_SECRET`: HS256 secret, at least 32 bytes; a development secret is used, with a
//!   warning, when neither it nor a JWKS is configured.
//! - `JWKS_URL`: verify with the keys of this JWKS instead (tokens must have `iss` =
//!   `forum-demo`); or `OIDC_ISSUER`: discover the JWKS from this issuer (then `iss` must be
//!   that issuer).
//! - `JWKS_REFRESH_SECS`, `JWKS_MIN_REFRESH_SECS`: background refresh interval (default
//!   600) and least time between refreshes caused by unknown `kid`s (default 30).
//! - `ADMIN_TOKEN`: mounts the operators' routes at `/admin` (`POST /admin/purge`,
//!   `POST /admin/revoke`), with this bearer credential (at least 16 bytes); without it they
//!   are not mounted.
//! - `REDIS_URL`: share the cache, purges and revocations with every instance using the
//!   same Redis (`redis://127.0.0.1:6379`, or a cluster:
//!   `redis+cluster://127.0.0.1:7000,127.0.0.1:7001`); hits then say `x-cache-tier: memory` or
//!   `redis`. Without it the cache is this process's memory only.
//! - `RUST_LOG`: log filter, default `info`.

mod app;
mod schema;

use std::process::ExitCode;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use scoped_cache::admin::AdminToken;
use scoped_cache::config::Config;
use scoped_cache::{BuildError, Explain, JwksSource, RedisTier};
use tracing_subscriber::EnvFilter;

const DEV_SECRET: &str = "forum-demo-development-secret-change-me!";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Where the forum's verification keys come from.
enum Keys {
    Secret(String),
    Jwks {
        source: JwksSource,
        described: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let keys = match keys_from_env() {
        Ok(keys) => keys,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let verifier = match &keys {
        Keys::Secret(secret) => app::hmac_verifier(secret.as_bytes()),
        Keys::Jwks { source, .. } => app::jwks_verifier(source.clone()),
    };
    let redis = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    // Before the layer is built: its metrics register with the recorder installed then.
    let metrics = match install_metrics() {
        Ok(handle) => Some(handle),
        Err(err) => {
            eprintln!("warning: no /metrics: {err}");
            None
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, args) = match args.as_slice() {
        [flag, path, rest @ ..] if flag == "--config" => (Some(path.clone()), rest.to_vec()),
        _ => (None, args),
    };
    let file = match &config {
        None => None,
        Some(path) => match Config::from_file(path) {
            Ok(file) => Some((path.clone(), file)),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        },
    };
    // The file's secrets come from the environment; an unset JWT_SECRET is the
    // development secret (with the warning above), as it is without a file.
    let env = |name: &str| match (&keys, name) {
        (Keys::Secret(secret), "JWT_SECRET") => Some(secret.clone()),
        _ => std::env::var(name).ok().filter(|v| !v.is_empty()),
    };
    // The operators' credential: the file's `[admin]` table, else ADMIN_TOKEN. Only the
    // name of the variable holding it is kept, for the commands printed below.
    let (admin, admin_var) = match file.as_ref().and_then(|(_, f)| f.admin.as_ref()) {
        Some(table) => match file.as_ref().map(|(_, f)| f.admin_token_with(env)) {
            Some(Ok(token)) => (token, table.token_env.clone()),
            Some(Err(err)) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
            None => (None, None),
        },
        None => match env("ADMIN_TOKEN") {
            None => (None, None),
            Some(token) => match AdminToken::new(token) {
                Ok(admin) => (Some(admin), Some("ADMIN_TOKEN".to_owned())),
                Err(err) => {
                    eprintln!("error: ADMIN_TOKEN cannot be used: {err}");
                    return ExitCode::from(2);
                }
            },
        },
    };
    let (mut builder, shared) = match &file {
        None => (app::builder(verifier), redis.is_some()),
        Some((path, file)) => match file.builder_with(env) {
            Ok(builder) => (app::with_schema(builder), file.redis.is_some()),
            Err(err) => {
                eprintln!("error: {path}: {err}");
                return ExitCode::from(2);
            }
        },
    };
    // What the file sets, it sets alone: REDIS_URL and ADMIN_TOKEN fill in only the
    // tables it does not have.
    let file_has = |table: fn(&Config) -> bool| file.as_ref().is_some_and(|(_, f)| table(f));
    if let Some(url) = &redis
        && !file_has(|f| f.redis.is_some())
    {
        builder = builder.redis(RedisTier::new(url).key_prefix("forum:"));
    }
    if let Some(admin) = &admin
        && !file_has(|f| f.admin.is_some())
    {
        // `curl -H "x-cache-explain: $ADMIN_TOKEN" ...` is told why an answer was not a hit.
        builder = builder.explain(Explain::ToOperators(admin.clone()));
    }
    let layer = match builder.build() {
        Ok(layer) => layer,
        Err(err) if file.is_some() => {
            let path = config.as_deref().unwrap_or_default();
            eprintln!("error: {path}: invalid configuration: {err}");
            return ExitCode::from(2);
        }
        Err(err @ (BuildError::WeakSecret { .. } | BuildError::InvalidKey { .. })) => {
            eprintln!("error: JWT_SECRET cannot be used: {err}");
            return ExitCode::from(2);
        }
        Err(err @ BuildError::InvalidRedis { .. }) => {
            eprintln!("error: REDIS_URL cannot be used: {err}");
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("error: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };

    if let [command, sub, name, role] = args.as_slice()
        && command == "token"
    {
        let Keys::Secret(secret) = &keys else {
            eprintln!(
                "error: with JWKS_URL or OIDC_ISSUER, tokens come from your identity provider"
            );
            return ExitCode::from(2);
        };
        println!("{}", app::mint(secret.as_bytes(), sub, name, role, DAY));
        return ExitCode::SUCCESS;
    }
    if !args.is_empty() {
        eprintln!(
            "usage: forum [--config FILE] [token SUB NAME ROLE]\n\
             environment: ADDR (default 127.0.0.1:8000), JWT_SECRET (HS256, at least 32 bytes), \
             JWKS_URL or OIDC_ISSUER, JWKS_REFRESH_SECS, JWKS_MIN_REFRESH_SECS, ADMIN_TOKEN, REDIS_URL, RUST_LOG"
        );
        return ExitCode::from(2);
    }

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8000".to_owned());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {addr}: {err}");
            return ExitCode::from(1);
        }
    };
    match &keys {
        Keys::Secret(secret) => print_welcome(&addr, secret.as_bytes()),
        Keys::Jwks { described, .. } => print_jwks_welcome(&addr, described),
    }
    let alice = match &keys {
        Keys::Secret(secret) => Some(app::mint(
            secret.as_bytes(),
            "alice",
            "Alice",
            "member",
            DAY,
        )),
        Keys::Jwks { .. } => None,
    };
    match shared {
        // Not the URL itself: it may hold a password.
        true => println!(
            "cache: this process's memory in front of Redis (REDIS_URL or the file's [redis]); \
             instances on the same Redis share answers, purges and revocations \
             (hits say x-cache-tier: memory or redis). Redis unreachable for over 5 s = nothing served from \
             the cache and tokens answered 503, until it answers (purges and revocations answer 202 \
             \"shared\":false meanwhile).\n\
             to see it shared, start a second instance with another ADDR and the same REDIS_URL, and send \
             both the same Host header (the host is part of every cache key), e.g. add -H 'host: forum.local' \
             to the curl commands below.\n"
        ),
        false => println!(
            "cache: this process's memory (set REDIS_URL=redis://127.0.0.1:6379 to share it between instances)\n"
        ),
    }
    print_freshness(&addr, alice.as_deref(), admin_var.as_deref());
    let app = app::router_with_admin(schema::Forum::seeded(), layer, admin, metrics);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
    {
        eprintln!("error: server failed: {err}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn keys_from_env() -> Result<Keys, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let secs = |name: &str, default: u64| -> Result<Duration, String> {
        match var(name) {
            None => Ok(Duration::from_secs(default)),
            Some(text) => text
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| format!("{name} must be a whole number of seconds, not {text:?}")),
        }
    };
    let (builder, described) = match (var("JWKS_URL"), var("OIDC_ISSUER")) {
        (Some(_), Some(_)) => return Err("set JWKS_URL or OIDC_ISSUER, not both".into()),
        (Some(url), None) => (
            JwksSource::url(&url),
            format!("the JWKS at {url} (iss must be forum-demo)"),
        ),
        (None, Some(issuer)) => (
            JwksSource::oidc(issuer.clone()),
            format!("keys discovered from the OIDC issuer {issuer} (iss must be {issuer})"),
        ),
        (None, None) => {
            return Ok(Keys::Secret(var("JWT_SECRET").unwrap_or_else(|| {
                eprintln!("warning: JWT_SECRET is not set; using the development secret {DEV_SECRET:?}. Never use it in production.");
                DEV_SECRET.to_owned()
            })));
        }
    };
    let source = builder
        .refresh_interval(secs("JWKS_REFRESH_SECS", 600)?)
        .min_refresh_interval(secs("JWKS_MIN_REFRESH_SECS", 30)?)
        .build()
        .map_err(|err| format!("invalid key source: {err}"))?;
    Ok(Keys::Jwks { source, described })
}

const WELCOME_QUERY: &str =
    r#"{"query":"query Welcome { renderId me { id name role } memberPosts { id title } }"}"#;

fn print_welcome(addr: &str, secret: &[u8]) {
    let alice = app::mint(secret, "alice", "Alice", "member", DAY);
    let alice_refreshed = app::mint(
        secret,
        "alice",
        "Alice",
        "member",
        DAY + Duration::from_secs(60),
    );
    let bob = app::mint(secret, "bob", "Bob", "member", DAY);
    let guest = app::mint(secret, "gina", "Gina", "guest", DAY);
    println!(
        "\nforum listening on http://{addr}\n\
         \n  POST/GET /graphql          cached (x-cache: MISS, then HIT)\
         \n  POST/GET /graphql/nocache  verified, never cached (x-cache: BYPASS)\
         \n  GET      /health           passes through\
         \n  POST     /admin/purge      operators only, when ADMIN_TOKEN is set\
         \n  POST     /admin/revoke     operators only, when ADMIN_TOKEN is set\
         \n  GET      /admin/stats      operators only, when ADMIN_TOKEN is set: hit ratios, reasons, caches, Redis (JSON)\
         \n  GET      /admin            the live stats page, when ADMIN_TOKEN is set (asks for it)\
         \n  GET      /metrics          Prometheus text (scoped_cache_* metrics)\
         \n  GET      /ready            readiness: 200, or 503 with what is not ready\
         \n\nmember token (alice, valid 24 h):\n{alice}\n\
         \nsame claims, refreshed token (alice):\n{alice_refreshed}\n\
         \nanother member (bob):\n{bob}\n\
         \na non-member (gina, role guest):\n{guest}\n\
         \ntry it (run twice: the second answer is a HIT with the same renderId):\n\
         \ncurl -si http://{addr}/graphql -H 'content-type: application/json' -H 'authorization: Bearer {alice}' -d '{WELCOME_QUERY}'\n\
         \nmint more (with the same JWT_SECRET as this server): cargo run --release --example forum -- token SUB NAME ROLE\
         \nenvironment: ADDR (listen address), JWT_SECRET (HS256, at least 32 bytes), or JWKS_URL / OIDC_ISSUER, \
         ADMIN_TOKEN, REDIS_URL\n"
    );
}

fn print_jwks_welcome(addr: &str, described: &str) {
    println!(
        "\nforum listening on http://{addr}, verifying tokens with {described}; aud must be forum-api.\n\
         \n  POST/GET /graphql          cached (x-cache: MISS, then HIT)\
         \n  POST/GET /graphql/nocache  verified, never cached (x-cache: BYPASS)\
         \n  GET      /health           passes through\
         \n  POST     /admin/purge      operators only, when ADMIN_TOKEN is set\
         \n  POST     /admin/revoke     operators only, when ADMIN_TOKEN is set\
         \n  GET      /admin/stats      operators only, when ADMIN_TOKEN is set: hit ratios, reasons, caches, Redis (JSON)\
         \n  GET      /admin            the live stats page, when ADMIN_TOKEN is set (asks for it)\
         \n  GET      /metrics          Prometheus text (scoped_cache_* metrics)\
         \n  GET      /ready            readiness: 200, or 503 with what is not ready\n\
         \nwith a token from your identity provider in $TOKEN (claims sub, name, role):\n\
         \ncurl -si http://{addr}/graphql -H 'content-type: application/json' -H \"authorization: Bearer $TOKEN\" -d '{WELCOME_QUERY}'\n"
    );
}

/// How answers stay fresh, and the purge and revoke commands (with the real credential, so
/// they work as printed; this is the operator's own console).
fn print_freshness(addr: &str, alice: Option<&str>, admin_var: Option<&str>) {
    let create = r#"{"query":"mutation { createPost(title: \"Hello\", body: \"from alice\") { id title } }"}"#;
    let as_alice = alice.unwrap_or("$TOKEN");
    println!(
        "keeping answers fresh:\n\
         \n  a member's createPost purges every cached list of posts (the next publicPosts is a MISS with the new post first):\
         \n  curl -si http://{addr}/graphql -H 'content-type: application/json' -H 'authorization: Bearer {as_alice}' -d '{create}'\n\
         \n  ticker is fresh for 2 s, then served STALE for 30 s while one background run refreshes it:\
         \n  curl -si 'http://{addr}/graphql?query=%7Bticker%7D'\n\
         \n  slow(ms) sleeps, so concurrent misses share one execution (the same id; the second waits and is a HIT):\
         \n  curl -s -w '\\n' 'http://{addr}/graphql?query=%7Bslow(ms:2000)%7D' & curl -s -w '\\n' 'http://{addr}/graphql?query=%7Bslow(ms:2000)%7D'; wait\n"
    );
    let Some(var) = admin_var else {
        println!(
            "the admin routes (POST /admin/purge, POST /admin/revoke) are not mounted: set ADMIN_TOKEN (at least 16 bytes) to mount them\n"
        );
        return;
    };
    println!(
        "purge every cached answer holding a post (answers {{\"purged\":N,\"shared\":true}}; \
         202 with \"shared\":false when a Redis tier could not record it yet).\n\
         The operator's credential is not printed: run these where {var} is set.\n\
         \ncurl -si -X POST http://{addr}/admin/purge -H \"authorization: Bearer ${var}\" -H 'content-type: application/json' -d '{{\"types\":[\"Post\"]}}'\n\
         \nother bodies: {{\"tags\":[\"Post:1\"]}}, {{\"operation\":\"Welcome\"}}, {{\"scope\":{{\"sub\":\"alice\"}}}}, {{\"all\":true}}\n\
         \nrevoke every token alice holds now (the ones printed above get 401 at once; a token minted afterwards works, with whatever role it carries):\n\
         \ncurl -si -X POST http://{addr}/admin/revoke -H \"authorization: Bearer ${var}\" -H 'content-type: application/json' -d '{{\"sub\":\"alice\",\"issued_before\":'$(($(date +%s)+1))'}}'\n\
         \nthen: cargo run --release --example forum -- token alice Alice admin\n\
         \nwhy was an answer not a HIT? send the admin token in x-cache-explain (the app never sees it):\n\
         \ncurl -si http://{addr}/graphql -H 'content-type: application/json' -H \"x-cache-explain: ${var}\" -d '{{\"query\":\"{{ publicPosts {{ id }} }}\"}}' | grep -i x-cache\n\
         \nthe live stats page: open http://{addr}/admin/ and paste {var}; the same as JSON:\n\
         \ncurl -s http://{addr}/admin/stats -H \"authorization: Bearer ${var}\"\n"
    );
}

/// The Prometheus recorder behind `GET /metrics`, with real histograms for the layer's
/// timings, and its upkeep every few seconds.
fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Ctrl-C, or SIGTERM as orchestrators send it.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
