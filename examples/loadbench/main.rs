//! The server the load harness measures (`bash scripts/bench.sh`): the forum behind the
//! layer, a bare handler returning the exact bytes of the forum's HIT, and an instance whose
//! memory never holds a Redis entry (every hit an L2 hit).
//!
//! ```text
//! loadbench serve                # ADDR: the forum and /bare; L2_ADDR + REDIS_URL: the L2 instance
//! loadbench tokens N             # N member tokens of distinct users, one per line (HS256)
//! loadbench rs256-token          # one member token signed with RS256_PRIVATE_PEM
//! loadbench member-token         # one member token (HS256)
//! loadbench profile ROW N        # N requests of row a, b, d, e or f in process, no sockets
//! ```
//!
//! `profile` prints the wall time per request after the warm-up (one request, or one per
//! user for row e), and how many executed. It is also what `perf` and
//! `valgrind --tool=callgrind target/release/examples/loadbench profile b 10000` run (see
//! BENCHMARKS.md): instruction counts repeat exactly from run to run.
//!
//! Environment: `JWT_SECRET` (HS256, at least 32 bytes), `RS256_PRIVATE_PEM` /
//! `RS256_PUBLIC_PEM` (paths; tokens with `iss` = `load-rs256`), `ADDR`, `L2_ADDR`,
//! `REDIS_URL`.

// The forum's own modules: the harness measures the demo, not a lookalike.
#[path = "../forum/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "../forum/schema.rs"]
#[allow(dead_code)]
mod schema;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use axum::routing::post;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use scoped_cache::{RedisTier, Rule, ScopedCacheLayer, ScopedCacheLayerBuilder, Verifier};
use tower::ServiceExt;

const RS256_ISSUER: &str = "load-rs256";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// The HIT every row but (d) and (e) measures: role-scoped, the issue's query.
pub(crate) const MEMBER_POSTS: &str = r#"{"query":"{ memberPosts { id title body author } }"}"#;

fn secret() -> String {
    std::env::var("JWT_SECRET")
        .unwrap_or_else(|_| "load-harness-secret-of-at-least-32-bytes".into())
}

fn member_token(sub: &str) -> String {
    app::mint(secret().as_bytes(), sub, sub, "member", DAY)
}

fn rs256_token(pem: &[u8]) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = serde_json::json!({
        "iss": RS256_ISSUER, "aud": app::AUDIENCE, "sub": "rosa", "name": "rosa",
        "role": "member", "iat": now, "exp": now + DAY.as_secs(),
    });
    let key = EncodingKey::from_rsa_pem(pem).map_err(|err| format!("RS256_PRIVATE_PEM: {err}"))?;
    encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|err| err.to_string())
}

/// The forum's layer settings, with the RS256 verifier when `RS256_PUBLIC_PEM` is set.
fn builder() -> Result<ScopedCacheLayerBuilder, String> {
    let builder = app::builder(app::hmac_verifier(secret().as_bytes()));
    let Ok(path) = std::env::var("RS256_PUBLIC_PEM") else {
        return Ok(builder);
    };
    let pem = std::fs::read(&path).map_err(|err| format!("{path}: {err}"))?;
    Ok(builder.verifier(
        Verifier::from_rsa_pem(Algorithm::RS256, &pem)
            .issuer([RS256_ISSUER])
            .audience([app::AUDIENCE]),
    ))
}

fn layer() -> Result<ScopedCacheLayer, String> {
    builder()?.build().map_err(|err| err.to_string())
}

/// The exact bytes and content type of the forum's member HIT, asked of `forum` itself.
async fn hit_bytes(forum: &Router) -> Result<(Bytes, HeaderValue), String> {
    let request = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", member_token("bare")),
        )
        .body(Body::from(MEMBER_POSTS))
        .map_err(|err| err.to_string())?;
    let Ok(response) = forum.clone().oneshot(request).await;
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .map_err(|err| err.to_string())?;
    Ok((body, content_type))
}

/// The forum, the bare handler returning the exact bytes of its member HIT, and the
/// forum's data (which counts executions).
async fn routers() -> Result<(Router, Router, Arc<schema::Forum>), String> {
    let data = schema::Forum::seeded();
    let forum = app::router(Arc::clone(&data), layer()?);
    let (bytes, content_type) = hit_bytes(&forum).await?;
    let bare = Router::new().route(
        "/bare",
        post(move || {
            let (bytes, content_type) = (bytes.clone(), content_type.clone());
            async move {
                let mut response = Response::new(Body::from(bytes));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
                response
            }
        }),
    );
    Ok((forum, bare, data))
}

async fn serve() -> Result<(), String> {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:18080".into());
    let (forum, bare, _) = routers().await?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|err| format!("{addr}: {err}"))?;
    let main = axum::serve(listener, bare.merge(forum));

    // Every hit an L2 hit: memory keeps a Redis entry for a nanosecond.
    let second = match (std::env::var("L2_ADDR"), std::env::var("REDIS_URL")) {
        (Ok(addr), Ok(url)) => {
            seed_redis(&url, &addr).await?;
            let l2 = app::router(schema::Forum::seeded(), l2_layer(&url, true)?);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|err| format!("{addr}: {err}"))?;
            Some(axum::serve(listener, l2))
        }
        _ => None,
    };
    let result = match second {
        Some(second) => tokio::try_join!(main.into_future(), second.into_future()).map(|_| ()),
        None => main.await,
    };
    result.map_err(|err| err.to_string())
}

/// A layer on the shared tier. An instance keeps its own misses in memory for their whole
/// lifetime, so the L2 row's entries are written by another instance, and live an hour:
/// the row must never meet a miss of its own. With `empty_memory`, memory keeps what it
/// reads from Redis for a nanosecond.
fn l2_layer(url: &str, empty_memory: bool) -> Result<ScopedCacheLayer, String> {
    let mut tier = RedisTier::new(url).key_prefix("loadbench:");
    if empty_memory {
        tier = tier.local_ttl(Duration::from_nanos(1));
    }
    builder()?
        .default_rule(Rule::new().max_age(Duration::from_secs(60 * 60)))
        .redis(tier)
        .build()
        .map_err(|err| err.to_string())
}

/// Stores the L2 row's answer in Redis through a writer instance, and waits until an
/// instance with an empty memory reads it from there (each try a new instance, so none
/// answers from a miss of its own). Asked as wrk asks the instance at `host` (`Host` is
/// part of the key).
async fn seed_redis(url: &str, host: &str) -> Result<(), String> {
    let member = member_token("mia");
    let ask = |router: Router| {
        let request = Request::post("/graphql")
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {member}"))
            .body(Body::from(MEMBER_POSTS));
        async move {
            let request = request.map_err(|err| err.to_string())?;
            let Ok(response) = router.oneshot(request).await;
            Ok::<_, String>(
                response
                    .headers()
                    .get(scoped_cache::X_CACHE_TIER)
                    .is_some_and(|tier| tier == "redis"),
            )
        }
    };
    ask(app::router(schema::Forum::seeded(), l2_layer(url, false)?)).await?;
    for _ in 0..500 {
        if ask(app::router(schema::Forum::seeded(), l2_layer(url, true)?)).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the L2 row's entry never reached Redis".into())
}

/// `n` requests of `row` through the app in this process (one warm-up first), each body
/// read to its end: what the server does per request, without the sockets.
async fn profile(row: &str, n: usize) -> Result<(), String> {
    const PUBLIC_POSTS: &str = r#"{"query":"{ publicPosts { id title body author } }"}"#;
    const ME: &str = r#"{"query":"{ me { id name role } }"}"#;
    let (forum, bare, data) = routers().await?;
    let member = member_token("mia");
    let users: Vec<String> = match row {
        "e" => (0..10_000)
            .map(|u| member_token(&format!("user{u}")))
            .collect(),
        _ => Vec::new(),
    };
    let request = |i: usize| -> (Router, &'static str, &'static str, Option<&str>) {
        match row {
            "a" => (bare.clone(), "/bare", MEMBER_POSTS, Some(&member)),
            "b" => (forum.clone(), "/graphql", MEMBER_POSTS, Some(&member)),
            "d" => (forum.clone(), "/graphql", PUBLIC_POSTS, None),
            "e" => (forum.clone(), "/graphql", ME, Some(&users[i % users.len()])),
            _ => (
                forum.clone(),
                "/graphql/nocache",
                MEMBER_POSTS,
                Some(&member),
            ),
        }
    };
    if !matches!(row, "a" | "b" | "d" | "e" | "f") {
        return Err(format!("no such row: {row} (a, b, d, e or f)"));
    }
    // Every bucket filled before counting starts.
    let warm = users.len().max(1);
    let mut executed = 0;
    let mut started = std::time::Instant::now();
    for i in 0..warm + n {
        let (router, path, body, token) = request(i);
        let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Body::from(body))
            .map_err(|err| err.to_string())?;
        let Ok(response) = router.oneshot(request).await;
        if !response.status().is_success() {
            return Err(format!("row {row}: status {}", response.status()));
        }
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .map_err(|err| err.to_string())?;
        if i + 1 == warm {
            executed = data.executions.load(Ordering::Relaxed);
            started = std::time::Instant::now();
        }
    }
    let per_request = started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    // A row that is meant to be all hits says so: anything else is measuring executions.
    eprintln!(
        "row {row}: {n} requests, {per_request:.2} µs each (wall), {} executions after the warm-up",
        data.executions.load(Ordering::Relaxed) - executed
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve"] => serve().await,
        ["tokens", n] => match n.parse::<usize>() {
            Ok(n) => {
                for user in 0..n {
                    println!("{}", member_token(&format!("user{user}")));
                }
                Ok(())
            }
            Err(_) => Err(format!("not a count: {n}")),
        },
        ["profile", row, n] => match n.parse::<usize>() {
            Ok(n) => profile(row, n).await,
            Err(_) => Err(format!("not a count: {n}")),
        },
        ["member-token"] => {
            println!("{}", member_token("mia"));
            Ok(())
        }
        ["rs256-token"] => std::env::var("RS256_PRIVATE_PEM")
            .map_err(|_| "RS256_PRIVATE_PEM is not set".to_owned())
            .and_then(|path| std::fs::read(&path).map_err(|err| format!("{path}: {err}")))
            .and_then(|pem| rs256_token(&pem))
            .map(|token| println!("{token}")),
        _ => Err(
            "usage: loadbench serve | tokens N | member-token | rs256-token | profile ROW N (ROW: a, b, d, e or f)".into(),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
