//! A members-only forum behind scoped-cache.
//!
//! ```text
//! cargo run --release --example forum                       # serve on ADDR (127.0.0.1:8000)
//! cargo run --release --example forum -- token SUB NAME ROLE # print a token
//! ```
//!
//! Environment: `ADDR` (listen address), `JWT_SECRET` (HS256 secret, at least 32 bytes;
//! a development secret is used, with a warning, when unset), `RUST_LOG`.

mod app;
mod schema;

use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

const DEV_SECRET: &str = "forum-demo-development-secret-change-me!";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let secret = match std::env::var("JWT_SECRET") {
        Ok(secret) => secret,
        Err(_) => {
            eprintln!(
                "warning: JWT_SECRET is not set; using the development secret {DEV_SECRET:?}. Never use it in production."
            );
            DEV_SECRET.to_owned()
        }
    };
    let layer = match app::layer(secret.as_bytes()) {
        Ok(layer) => layer,
        Err(err) => {
            eprintln!("error: JWT_SECRET cannot be used: {err}");
            return ExitCode::from(2);
        }
    };

    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, sub, name, role] = args.as_slice()
        && command == "token"
    {
        println!("{}", app::mint(secret.as_bytes(), sub, name, role, DAY));
        return ExitCode::SUCCESS;
    }
    if !args.is_empty() {
        eprintln!("usage: forum [token SUB NAME ROLE]");
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
    print_welcome(&addr, secret.as_bytes());
    let app = app::router(schema::Forum::seeded(), layer);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
    {
        eprintln!("error: server failed: {err}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

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
    let query = r#"{"query":"{ renderId me { id name role } memberPosts { id title } }"}"#;
    println!(
        "\nforum listening on http://{addr}\n\
         \n  POST/GET /graphql          cached (x-cache: MISS, then HIT)\
         \n  POST/GET /graphql/nocache  verified, never cached (x-cache: BYPASS)\
         \n\nmember token (alice, valid 24 h):\n{alice}\n\
         \nsame claims, refreshed token (alice):\n{alice_refreshed}\n\
         \nanother member (bob):\n{bob}\n\
         \na non-member (gina, role guest):\n{guest}\n\
         \ntry it (run twice: the second answer is a HIT with the same renderId):\n\
         \ncurl -si http://{addr}/graphql -H 'content-type: application/json' -H 'authorization: Bearer {alice}' -d '{query}'\n\
         \nmint more: cargo run --release --example forum -- token SUB NAME ROLE\n"
    );
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
