//! The operators' live stats page in a real headless Chromium: it loads, asks for the
//! admin token (taken here from the URL's fragment, which no server sees), and shows the
//! figures after traffic. A screenshot is left in the target directory.
//!
//! Skips, saying so, where Chromium cannot be had (`.ci/run` installs Debian's).

#[allow(dead_code)]
#[path = "../../examples/forum/app.rs"]
mod app;
#[path = "../../examples/forum/schema.rs"]
mod schema;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use scoped_cache::admin::AdminToken;
use serde_json::json;
use support::*;

const SECRET: &[u8] = b"end-to-end-test-secret-of-32-bytes";
const ADMIN: &str = "an-admin-token-of-enough-length";

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .filter_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
        .next()
}

/// Runs headless Chromium on `url` with `args`, each run with a profile of its own;
/// returns what it printed.
fn run(chromium: &Path, url: &str, args: &[&str]) -> String {
    let profile = std::env::temp_dir().join(format!(
        "scoped-cache-chromium-{}-{}",
        std::process::id(),
        args.len()
    ));
    let output = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Waits for the page's fetches, then runs its timers in virtual time.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_page_shows_the_figures_after_traffic() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium on PATH (apt-get install chromium); the stats page was not tried in a browser"
        );
        return;
    };
    let forum = schema::Forum::seeded();
    let app = app::router_with_admin(
        forum,
        app::layer(app::hmac_verifier(SECRET)).unwrap(),
        Some(AdminToken::new(ADMIN).unwrap()),
        None,
    );
    let addr = serve(app).await;
    // One MISS, then two HITs: a hit ratio of two thirds.
    for _ in 0..3 {
        post(
            addr,
            "/graphql",
            None,
            json!({ "query": "{ publicPosts { id } }" }),
        )
        .await;
    }
    // `/admin/` leads to the page too.
    let redirected = get(addr, "/admin/", None, &[]).await;
    assert_eq!(redirected.status, 308);
    // No inline script runs but the page's own, by its hash: the page working below in
    // a real browser shows the hashes are right.
    let page = get(addr, "/admin", None, &[]).await;
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("script-src 'sha256-") && !policy.contains("unsafe-inline"),
        "{policy}"
    );

    let url = format!("http://{addr}/admin#token={ADMIN}");
    let browser = chromium.clone();
    let page = url.clone();
    let dom = tokio::task::spawn_blocking(move || run(&browser, &page, &["--dump-dom"]))
        .await
        .unwrap();
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page never loaded the stats:\n{dom}"
    );
    assert!(dom.contains("66.7 %"), "the hit ratio is not shown:\n{dom}");
    assert!(
        dom.contains("<td>default</td>"),
        "no row for the default rule:\n{dom}"
    );
    assert!(!dom.contains(ADMIN), "the page shows the admin token");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stats-page.png");
    let _ = std::fs::remove_file(&shot);
    let target = shot.clone();
    tokio::task::spawn_blocking(move || {
        run(
            &chromium,
            &url,
            &[
                "--window-size=1280,900",
                &format!("--screenshot={}", target.display()),
            ],
        )
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("a screenshot was taken");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "not a real screenshot"
    );
    eprintln!("screenshot: {}", shot.display());
}

#[tokio::test]
async fn the_stats_need_the_admin_token() {
    let app = app::router_with_admin(
        schema::Forum::seeded(),
        app::layer(app::hmac_verifier(SECRET)).unwrap(),
        Some(AdminToken::new(ADMIN).unwrap()),
        None,
    );
    let addr = serve(app).await;
    assert_eq!(get(addr, "/admin/stats", None, &[]).await.status, 401);
    assert_eq!(
        get(addr, "/admin/stats", Some("wrong-admin-token-guess"), &[])
            .await
            .status,
        401
    );
    let stats = get(addr, "/admin/stats", Some(ADMIN), &[]).await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.body["readiness"]["ready"], true);
    // The page holds no data: it is served without the token.
    assert_eq!(get(addr, "/admin", None, &[]).await.status, 200);
    assert_eq!(get(addr, "/ready", None, &[]).await.status, 200);
}
