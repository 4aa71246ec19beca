//! The forum demo's freshness contract end to end over real TCP: mutation-driven
//! invalidation, coalesced misses, stale-while-revalidate, the admin purge router and
//! bucket-bound ETags, as the demo's help text tells a new user to try them with curl.

// The demo's JWKS helpers are exercised in `jwks.rs`.
#[allow(dead_code)]
#[path = "../../examples/forum/app.rs"]
mod app;
#[path = "../../examples/forum/schema.rs"]
mod schema;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use scoped_cache::admin::AdminToken;
use serde_json::{Value, json};
use support::*;
use tokio::task::JoinSet;
use tokio::time::Instant;

const SECRET: &[u8] = b"end-to-end-test-secret-of-32-bytes";
const ADMIN: &str = "an-admin-token-of-enough-length";
const DAY: Duration = Duration::from_secs(86_400);

const PUBLIC_POSTS: &str = "{ publicPosts { id title } }";
const ME: &str = "{ me { id name role } }";

/// The demo with the admin routes mounted, on a loopback port.
async fn forum() -> (SocketAddr, Arc<schema::Forum>) {
    let forum = schema::Forum::seeded();
    let app = app::router_with_admin(
        Arc::clone(&forum),
        app::layer(app::hmac_verifier(SECRET)).unwrap(),
        Some(AdminToken::new(ADMIN).unwrap()),
        None,
    );
    (serve(app).await, forum)
}

fn token(sub: &str, role: &str) -> String {
    app::mint(SECRET, sub, &sub.to_uppercase(), role, DAY)
}

/// `query` over POST, with `token` if given.
async fn ask(addr: SocketAddr, token: Option<&str>, query: &str) -> Reply {
    post(addr, "/graphql", token, json!({ "query": query })).await
}

/// `POST /admin/purge` with the admin credential and a JSON body.
async fn purge(addr: SocketAddr, body: Value) -> Reply {
    post(addr, "/admin/purge", Some(ADMIN), body).await
}

/// `query` over GET, with `token` and `If-None-Match` if given: the raw answer.
async fn get_raw(
    addr: SocketAddr,
    token: Option<&str>,
    query: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let path = format!(
        "/graphql?{}",
        serde_urlencoded::to_string([("query", query)]).unwrap()
    );
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    if let Some(tag) = if_none_match {
        headers.push(("if-none-match", tag));
    }
    exchange(addr, Method::GET, &path, &headers, Bytes::new()).await
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

fn first_post_id(reply: &Reply) -> &Value {
    &reply.body["data"]["publicPosts"][0]["id"]
}

/// Asserts `query` (as `token`) is served with `x-cache: expected`.
async fn assert_served(addr: SocketAddr, token: Option<&str>, query: &str, expected: &str) {
    let reply = ask(addr, token, query).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
    assert_eq!(reply.x_cache(), expected, "{query}: {}", reply.body);
}

// 1. createPost purges every cached list of posts.

#[tokio::test]
async fn create_post_purges_cached_post_lists_and_the_next_list_has_it_first() {
    let (addr, _) = forum().await;
    let alice = token("alice", "member");

    // Two buckets of publicPosts (anonymous and authenticated), and alice's `me`.
    let anonymous = ask(addr, None, PUBLIC_POSTS).await;
    assert_eq!(anonymous.x_cache(), "MISS");
    assert_eq!(first_post_id(&anonymous), "5");
    assert_served(addr, None, PUBLIC_POSTS, "HIT").await;
    assert_served(addr, Some(&alice), PUBLIC_POSTS, "MISS").await;
    assert_served(addr, Some(&alice), PUBLIC_POSTS, "HIT").await;
    assert_served(addr, Some(&alice), ME, "MISS").await;

    // A refused createPost (a guest, or nobody) purges nothing: otherwise anyone could
    // empty the cache at will.
    let create = "mutation { createPost(title: \"x\", body: \"y\") { id } }";
    for refused in [None, Some(token("gina", "guest"))] {
        let reply = ask(addr, refused.as_deref(), create).await;
        assert_eq!(reply.code(), "FORBIDDEN");
        assert_served(addr, None, PUBLIC_POSTS, "HIT").await;
    }

    let created = post(
        addr,
        "/graphql",
        Some(&alice),
        json!({
            "query": "mutation New($t: String!, $b: String!) { createPost(title: $t, body: $b) { id title author } }",
            "variables": {"t": "Fresh news", "b": "Just in."},
        }),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.x_cache(), "BYPASS");
    assert_eq!(
        created.body["data"]["createPost"],
        json!({"id": "8", "title": "Fresh news", "author": "alice"})
    );

    for t in [None, Some(alice.as_str())] {
        let after = ask(addr, t, PUBLIC_POSTS).await;
        assert_eq!(after.x_cache(), "MISS", "{t:?}: the list was purged");
        assert_eq!(
            after.body["data"]["publicPosts"][0],
            json!({"id": "8", "title": "Fresh news"}),
            "{t:?}: the new post comes first"
        );
        assert_eq!(after.body["data"]["publicPosts"][1]["id"], "5");
        let again = ask(addr, t, PUBLIC_POSTS).await;
        assert_eq!(again.x_cache(), "HIT", "{t:?}: the new list is cached");
        assert_eq!(again.body, after.body);
    }
    // Only answers holding posts were purged.
    assert_served(addr, Some(&alice), ME, "HIT").await;
}

// 2. Concurrent misses of one key share one execution.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_slow_misses_share_one_execution() {
    let (addr, forum) = forum().await;
    let query = "{ slow(ms: 1500) }";
    let mut requests = JoinSet::new();
    for _ in 0..5 {
        requests.spawn(async move { get(addr, "/graphql", None, &[("query", query)]).await });
    }
    let replies = requests.join_all().await;

    let id = &replies[0].body["data"]["slow"];
    assert!(
        id.as_str().is_some_and(|id| id.starts_with("slow-")),
        "{id}"
    );
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body["data"]["slow"], id, "every request gets one id");
    }
    let mut labels: Vec<&str> = replies.iter().map(Reply::x_cache).collect();
    labels.sort_unstable();
    assert_eq!(labels, ["HIT", "HIT", "HIT", "HIT", "MISS"]);
    assert_eq!(forum.slow_runs.load(Ordering::SeqCst), 1);

    let later = get(addr, "/graphql", None, &[("query", query)]).await;
    assert_eq!((later.x_cache(), &later.body["data"]["slow"]), ("HIT", id));
    assert_eq!(forum.slow_runs.load(Ordering::SeqCst), 1);
}

// 3. ticker: fresh for 2 s, then STALE while one background run refreshes it.

/// `n` concurrent GETs of `{ ticker }`: each answer's `x-cache`, id and `Age`.
async fn tickers(addr: SocketAddr, n: usize) -> Vec<(String, String, u64)> {
    let mut requests = JoinSet::new();
    for _ in 0..n {
        requests.spawn(async move {
            let reply = get(addr, "/graphql", None, &[("query", "{ ticker }")]).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let id = reply.body["data"]["ticker"].as_str().unwrap().to_owned();
            let age = header(&reply.headers, "age").parse().unwrap_or(0);
            (reply.x_cache().to_owned(), id, age)
        });
    }
    requests.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_ticker_is_served_while_one_background_run_refreshes_it() {
    let (addr, forum) = forum().await;
    let deadline = Instant::now() + Duration::from_secs(10);

    let first = tickers(addr, 1).await.remove(0);
    assert_eq!(first.0, "MISS");
    let old = first.1;
    let second = tickers(addr, 1).await.remove(0);
    assert_eq!((second.0.as_str(), &second.1), ("HIT", &old));

    // Until max-age (2 s) passes, answers are HITs with the old id; then STALE, still
    // with the old id. Nothing in between is a MISS: the stale window covers it.
    let mut new: Option<String> = None;
    let mut stale = 0;
    let mut check = |(label, id, age): &(String, String, u64), stale_seen: bool| -> bool {
        match label.as_str() {
            "HIT" if *id == old => {}
            // The background run may finish within a burst that saw STALE.
            "HIT" if stale_seen => assert_eq!(new.get_or_insert_with(|| id.clone()), id),
            "STALE" => {
                assert_eq!(*id, old, "STALE serves the stored answer");
                assert!(*age >= 2, "a STALE answer is past max-age: Age {age}");
                return true;
            }
            other => panic!("unexpected {other} with {id} (old {old})"),
        }
        false
    };
    while stale == 0 {
        assert!(Instant::now() < deadline, "ticker never went STALE");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let burst = tickers(addr, 4).await;
        let stale_seen = burst.iter().any(|(label, _, _)| label == "STALE");
        for reply in &burst {
            stale += usize::from(check(reply, stale_seen));
        }
    }
    // More requests in the stale window: STALE (old id) until the one background run
    // stores the new answer, then HIT (new id). None of them starts another run.
    for reply in &tickers(addr, 8).await {
        stale += usize::from(check(reply, true));
    }
    let new = loop {
        assert!(Instant::now() < deadline, "the background run never stored");
        let (label, id, _) = tickers(addr, 1).await.remove(0);
        if label == "HIT" && id != old {
            break id;
        }
        assert!(
            (label == "STALE" && id == old) || (label == "HIT" && new.as_ref() == Some(&id)),
            "{label} {id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A HIT with the new id means the new entry is fresh: no later run can have started.
    assert_eq!(
        forum.ticks.load(Ordering::SeqCst),
        2,
        "{stale} STALE answers started one background run"
    );
    for (label, id, _) in tickers(addr, 3).await {
        assert_eq!((label.as_str(), id.as_str()), ("HIT", new.as_str()));
    }
    assert_eq!(forum.ticks.load(Ordering::SeqCst), 2);
}

// 4. The admin router.

#[tokio::test]
async fn refused_admin_requests_purge_nothing_and_a_type_purge_does() {
    let (addr, _) = forum().await;
    let alice = token("alice", "member");
    assert_served(addr, None, PUBLIC_POSTS, "MISS").await;
    assert_served(addr, Some(&alice), PUBLIC_POSTS, "MISS").await;
    assert_served(addr, None, PUBLIC_POSTS, "HIT").await;

    let everything = json!({"all": true});
    for credential in [
        Some("an-admin-token-of-enough-lengtH"),
        Some("an-admin-token-of-enough-length-and-more"),
        Some(alice.as_str()),
        None,
    ] {
        let refused = post(addr, "/admin/purge", credential, everything.clone()).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{credential:?}");
        assert!(refused.headers.contains_key("www-authenticate"));
        assert!(refused.body["error"].is_string(), "{}", refused.body);
        assert_served(addr, None, PUBLIC_POSTS, "HIT").await;
    }
    // The credential in another scheme is not accepted either.
    let basic = format!("Basic {ADMIN}");
    let (status, _, _) = exchange(
        addr,
        Method::POST,
        "/admin/purge",
        &[
            ("authorization", basic.as_str()),
            ("content-type", "application/json"),
        ],
        Bytes::from(everything.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_served(addr, None, PUBLIC_POSTS, "HIT").await;

    let bearer = format!("Bearer {ADMIN}");
    for body in [
        "{\"types\":",
        "{}",
        r#"{"types":[]}"#,
        r#"{"types":["Post:1"]}"#,
        r#"{"type":["Post"]}"#,
        r#"{"types":["Post"],"all":true}"#,
        r#"{"all":false}"#,
        r#"[{"all":true}]"#,
    ] {
        let (status, headers, bytes) = exchange(
            addr,
            Method::POST,
            "/admin/purge",
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            Bytes::from(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(header(&headers, "cache-control"), "no-store");
        let message: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            message["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}: {message}"
        );
        assert_served(addr, None, PUBLIC_POSTS, "HIT").await;
        assert_served(addr, Some(&alice), PUBLIC_POSTS, "HIT").await;
    }

    let purged = purge(addr, json!({"types": ["Post"]})).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(header(&purged.headers, "cache-control"), "no-store");
    assert_eq!(
        purged.body,
        json!({"purged": 2, "shared": true}),
        "both buckets' lists hold posts"
    );
    assert_served(addr, None, PUBLIC_POSTS, "MISS").await;
    assert_served(addr, Some(&alice), PUBLIC_POSTS, "MISS").await;
    assert_served(addr, None, PUBLIC_POSTS, "HIT").await;
}

#[tokio::test]
async fn scope_purge_removes_alices_me_and_keeps_bobs() {
    let (addr, _) = forum().await;
    let (alice, bob) = (token("alice", "member"), token("bob", "member"));
    for t in [&alice, &bob] {
        assert_served(addr, Some(t), ME, "MISS").await;
        assert_served(addr, Some(t), ME, "HIT").await;
    }
    // An unscoped answer carries no claim values: a scope purge leaves it.
    assert_served(addr, Some(&alice), PUBLIC_POSTS, "MISS").await;

    let purged = purge(addr, json!({"scope": {"sub": "alice"}})).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(purged.body, json!({"purged": 1, "shared": true}));

    let again = ask(addr, Some(&alice), ME).await;
    assert_eq!(again.x_cache(), "MISS");
    assert_eq!(again.body["data"]["me"]["id"], "alice");
    let bobs = ask(addr, Some(&bob), ME).await;
    assert_eq!(bobs.x_cache(), "HIT");
    assert_eq!(bobs.body["data"]["me"]["id"], "bob");
    assert_served(addr, Some(&alice), PUBLIC_POSTS, "HIT").await;

    // Every claim given must match: bob's `me` goes, alice's (also a member) stays.
    let purged = purge(addr, json!({"scope": {"role": "member", "sub": "bob"}})).await;
    assert_eq!(purged.body, json!({"purged": 1, "shared": true}));
    assert_served(addr, Some(&alice), ME, "HIT").await;
    assert_served(addr, Some(&bob), ME, "MISS").await;

    // Another value of the claim matches nothing.
    let none = purge(addr, json!({"scope": {"sub": "carol"}})).await;
    assert_eq!(none.body, json!({"purged": 0, "shared": true}));
    assert_served(addr, Some(&bob), ME, "HIT").await;

    // One claim that both buckets hold reaches both.
    let members = purge(addr, json!({"scope": {"role": "member"}})).await;
    assert_eq!(members.body, json!({"purged": 2, "shared": true}));
    for t in [&alice, &bob] {
        assert_served(addr, Some(t), ME, "MISS").await;
    }
    assert_served(addr, Some(&alice), PUBLIC_POSTS, "HIT").await;
}

#[tokio::test]
async fn tag_and_operation_purges_remove_exactly_their_entries() {
    let (addr, _) = forum().await;
    let alice = token("alice", "member");
    let post1 = r#"{ post(id: "1") { id title } }"#;
    let post2 = r#"{ post(id: "2") { id title } }"#;
    // Posts 5 and 4 only: it holds neither post 1 nor post 2.
    let feed = "query Feed { publicPosts(limit: 2) { id title } }";
    for q in [post1, post2, feed] {
        assert_served(addr, Some(&alice), q, "MISS").await;
    }

    let purged = purge(addr, json!({"tags": ["Post:1"]})).await;
    assert_eq!(purged.body, json!({"purged": 1, "shared": true}));
    assert_served(addr, Some(&alice), post2, "HIT").await;
    assert_served(addr, Some(&alice), feed, "HIT").await;
    assert_served(addr, Some(&alice), post1, "MISS").await;

    let purged = purge(addr, json!({"operation": "Feed"})).await;
    assert_eq!(purged.body, json!({"purged": 1, "shared": true}));
    assert_served(addr, Some(&alice), post1, "HIT").await;
    assert_served(addr, Some(&alice), post2, "HIT").await;
    assert_served(addr, Some(&alice), feed, "MISS").await;
}

#[tokio::test]
async fn purge_all_removes_every_cached_answer_and_counts_them() {
    let (addr, _) = forum().await;
    let (alice, bob) = (token("alice", "member"), token("bob", "member"));
    let cached: Vec<(Option<&str>, &str)> = vec![
        (None, PUBLIC_POSTS),
        (Some(&alice), PUBLIC_POSTS),
        (Some(&alice), ME),
        (Some(&bob), ME),
        (Some(&alice), "{ memberPosts { id title } }"),
        (None, "{ renderId }"),
    ];
    for (t, q) in &cached {
        assert_served(addr, *t, q, "MISS").await;
    }
    // Neither an uncached answer nor a repeat adds an entry.
    assert_served(addr, Some(&bob), "{ memberPosts { id title } }", "HIT").await;
    let forbidden = ask(addr, None, "{ memberPosts { id } }").await;
    assert_eq!(forbidden.code(), "FORBIDDEN");

    let purged = purge(addr, json!({"all": true})).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(purged.body, json!({"purged": cached.len(), "shared": true}));
    for (t, q) in &cached {
        assert_served(addr, *t, q, "MISS").await;
    }
    // Everything is cached again, once.
    assert_eq!(
        purge(addr, json!({"all": true})).await.body,
        json!({"purged": cached.len(), "shared": true})
    );
    assert_eq!(
        purge(addr, json!({"all": true})).await.body,
        json!({"purged": 0, "shared": true})
    );
}

#[tokio::test]
async fn without_an_admin_token_the_admin_routes_are_not_mounted() {
    let forum = schema::Forum::seeded();
    let app = app::router(
        Arc::clone(&forum),
        app::layer(app::hmac_verifier(SECRET)).unwrap(),
    );
    let addr = serve(app).await;
    assert_served(addr, None, PUBLIC_POSTS, "MISS").await;
    for credential in [Some(ADMIN), None] {
        let reply = post(addr, "/admin/purge", credential, json!({"all": true})).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{credential:?}");
    }
    assert_served(addr, None, PUBLIC_POSTS, "HIT").await;
}

// 5. ETags bound to the bucket.

#[tokio::test]
async fn etag_revalidates_with_304_only_in_its_own_bucket() {
    let (addr, _) = forum().await;
    let alice = token("alice", "member");

    let (status, headers, body) = get_raw(addr, None, PUBLIC_POSTS, None).await;
    assert_eq!(
        (status, header(&headers, "x-cache")),
        (StatusCode::OK, "MISS")
    );
    let anonymous = header(&headers, "etag").to_owned();
    assert!(
        anonymous.starts_with('"') && anonymous.len() > 2,
        "{anonymous}"
    );
    assert!(!body.is_empty());

    let (status, headers, body) = get_raw(addr, None, PUBLIC_POSTS, Some(&anonymous)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty(), "a 304 has no body: {body:?}");
    assert_eq!(header(&headers, "etag"), anonymous);
    assert_eq!(header(&headers, "x-cache"), "HIT");
    // Without the validator, the same entry is served in full.
    let (status, headers, full) = get_raw(addr, None, PUBLIC_POSTS, None).await;
    assert_eq!(
        (status, header(&headers, "x-cache")),
        (StatusCode::OK, "HIT")
    );
    assert_eq!(header(&headers, "etag"), anonymous);

    // Same body, another bucket (authenticated): the anonymous tag confirms nothing.
    for expected in ["MISS", "HIT"] {
        let (status, headers, body) =
            get_raw(addr, Some(&alice), PUBLIC_POSTS, Some(&anonymous)).await;
        assert_eq!(status, StatusCode::OK, "{expected}");
        assert_eq!(header(&headers, "x-cache"), expected);
        assert_eq!(body, full, "the same posts");
        assert_ne!(header(&headers, "etag"), anonymous);
    }
    let (_, headers, _) = get_raw(addr, Some(&alice), PUBLIC_POSTS, None).await;
    let alices = header(&headers, "etag").to_owned();
    let (status, _, body) = get_raw(addr, Some(&alice), PUBLIC_POSTS, Some(&alices)).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));

    // Claim-scoped: bob's tag for his `me` never confirms alice's.
    let bob = token("bob", "member");
    let (_, headers, _) = get_raw(addr, Some(&bob), ME, None).await;
    let bobs = header(&headers, "etag").to_owned();
    let (status, _, body) = get_raw(addr, Some(&alice), ME, Some(&bobs)).await;
    assert_eq!(status, StatusCode::OK);
    let me: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(me["data"]["me"]["id"], "alice");
    let (status, _, _) = get_raw(addr, Some(&bob), ME, Some(&bobs)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // After a new post, the old tag no longer matches: the new list comes in full.
    let created = ask(
        addr,
        Some(&alice),
        "mutation { createPost(title: \"t\", body: \"b\") { id } }",
    )
    .await;
    assert_eq!(created.body["data"]["createPost"]["id"], "8");
    let (status, headers, body) = get_raw(addr, None, PUBLIC_POSTS, Some(&anonymous)).await;
    assert_eq!(
        (status, header(&headers, "x-cache")),
        (StatusCode::OK, "MISS")
    );
    assert_ne!(header(&headers, "etag"), anonymous);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["data"]["publicPosts"][0]["id"], "8");
}

/// An HS256 forum token for `sub` with `role`, issued at `iat` (Unix seconds).
fn token_issued_at(sub: &str, role: &str, iat: u64) -> String {
    let claims = json!({
        "iss": app::ISSUER, "aud": app::AUDIENCE, "sub": sub, "name": sub, "role": role,
        "iat": iat, "exp": iat + 3_600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[tokio::test]
async fn revoking_alice_stops_her_old_token_and_her_new_role_gets_its_own_bucket() {
    let (addr, _) = forum().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = token_issued_at("alice", "member", now - 10);
    let members = "{ memberPosts { id } me { role } }";
    let before = ask(addr, Some(&old), members).await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.body["data"]["me"]["role"], "member");
    assert_served(addr, Some(&old), members, "HIT").await;

    // Wrong credential: nothing changes.
    let refused = post(
        addr,
        "/admin/revoke",
        Some("not-the-admin-token-at-all"),
        json!({"sub": "alice", "issued_before": now}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_served(addr, Some(&old), members, "HIT").await;
    // A malformed body: nothing changes, and the message names the field.
    let malformed = post(addr, "/admin/revoke", Some(ADMIN), json!({"sub": "alice"})).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(
        malformed.body["error"]
            .as_str()
            .unwrap()
            .contains("issued_before")
    );
    assert_served(addr, Some(&old), members, "HIT").await;

    let revoked = post(
        addr,
        "/admin/revoke",
        Some(ADMIN),
        json!({"sub": "alice", "issued_before": now}),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.body, json!({"revoked": true, "shared": true}));

    // Her old token is refused at once, cached answer or not.
    let refused = ask(addr, Some(&old), members).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.code(), "UNAUTHENTICATED");
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    // Her new token, issued since, carries the new role and lands in its bucket.
    let new = token_issued_at("alice", "admin", now);
    let after = ask(addr, Some(&new), members).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(after.body["data"]["me"]["role"], "admin");
    assert_served(addr, Some(&new), members, "HIT").await;
    // Bob is untouched.
    assert_eq!(
        ask(addr, Some(&token("bob", "member")), members)
            .await
            .status,
        StatusCode::OK
    );
}
