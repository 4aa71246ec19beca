//! Keys from a JWKS over real HTTP, tokens from PyJWT: interop, sharing, rotation,
//! removal, forged-kid floods, provider outages and OIDC discovery.

// The demo's HS256 helpers are not used here.
#[allow(dead_code)]
#[path = "../../examples/forum/app.rs"]
mod app;
#[path = "../../examples/forum/schema.rs"]
mod schema;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use scoped_cache::{JwksSource, JwksSourceBuilder, ScopedCacheLayer, Verifier};
use serde_json::{Value, json};
use support::provider::Provider;
use support::pyjwt::{Minted, mint};
use support::*;

const ME: &str = "{ me { id role } }";

fn claims(sub: &str, iss: &str) -> Value {
    json!({"sub": sub, "name": sub, "role": "member", "iss": iss, "aud": "forum-api"})
}

/// Keys `ids` (with `alg`) and one token per key, signed by PyJWT.
fn keys_and_tokens(keys: &[(&str, &str)], iss: &str) -> Minted {
    let keys_spec: Vec<Value> = keys
        .iter()
        .map(|(id, alg)| json!({"id": id, "alg": alg}))
        .collect();
    let mut tokens: Vec<Value> = keys
        .iter()
        .map(|(id, _)| json!({"id": id, "key": id, "claims": claims(&format!("user-{id}"), iss)}))
        .collect();
    tokens.extend(keys.iter().map(|(id, _)| {
        json!({"id": format!("{id}-tampered"), "key": id, "claims": claims(&format!("user-{id}"), iss), "tamper": true})
    }));
    mint(json!({"keys": keys_spec, "tokens": tokens}))
}

async fn forum_with(source: JwksSource) -> SocketAddr {
    let layer = app::layer(app::jwks_verifier(source)).unwrap();
    serve(app::router(schema::Forum::seeded(), layer)).await
}

fn source(provider: &Provider) -> JwksSourceBuilder {
    JwksSource::url(provider.jwks_url())
}

async fn me(addr: SocketAddr, token: &str) -> Reply {
    post(
        addr,
        "/graphql/nocache",
        Some(token),
        json!({ "query": ME }),
    )
    .await
}

#[tokio::test]
async fn pyjwt_tokens_verify_for_each_algorithm_and_tampered_ones_fail() {
    let algs = [
        ("rs", "RS256"),
        ("ps", "PS256"),
        ("es", "ES256"),
        ("ed", "EdDSA"),
    ];
    let minted = keys_and_tokens(&algs, app::ISSUER);
    let provider = Provider::start(algs.iter().map(|(id, _)| minted.jwk(id)).collect()).await;
    let addr = forum_with(source(&provider).build().unwrap()).await;
    for (id, alg) in algs {
        let good = me(addr, minted.token(id)).await;
        assert_eq!(good.status, StatusCode::OK, "{alg}: {}", good.body);
        assert_eq!(good.body["data"]["me"]["id"], format!("user-{id}"), "{alg}");
        let bad = me(addr, minted.token(&format!("{id}-tampered"))).await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED, "{alg}");
        assert_eq!(bad.code(), "UNAUTHENTICATED");
    }
    assert_eq!(provider.jwks_fetches(), 1, "one fetch serves every request");
}

#[tokio::test]
async fn many_routes_and_layers_share_one_fetch() {
    let minted = keys_and_tokens(&[("k1", "ES256")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("k1")]).await;
    let shared = source(&provider).build().unwrap();
    let first = forum_with(shared.clone()).await;
    let second = forum_with(shared.clone()).await;
    for addr in [first, second] {
        for path in ["/graphql", "/graphql/nocache"] {
            for _ in 0..3 {
                let reply =
                    post(addr, path, Some(minted.token("k1")), json!({ "query": ME })).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
        }
    }
    assert_eq!(provider.jwks_fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_newly_published_key_verifies_without_restart() {
    let minted = keys_and_tokens(&[("old", "RS256"), ("new", "RS256")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("old")]).await;
    let keys = source(&provider)
        .min_refresh_interval(Duration::from_secs(5))
        .build()
        .unwrap();
    keys.refresh_now().await.unwrap();
    let addr = forum_with(keys).await;
    assert_eq!(me(addr, minted.token("old")).await.status, StatusCode::OK);

    provider.publish(vec![minted.jwk("old"), minted.jwk("new")]);
    tokio::time::advance(Duration::from_secs(5)).await;
    let reply = me(addr, minted.token("new")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["data"]["me"]["id"], "user-new");
    assert_eq!(
        provider.jwks_fetches(),
        2,
        "the unknown kid caused exactly one refresh"
    );
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_verifying_even_cached_tokens() {
    let minted = keys_and_tokens(&[("gone", "ES256"), ("kept", "ES256")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("gone"), minted.jwk("kept")]).await;
    let keys = source(&provider).build().unwrap();
    let addr = forum_with(keys.clone()).await;
    for _ in 0..2 {
        // The second request is served from the verified-token cache.
        assert_eq!(me(addr, minted.token("gone")).await.status, StatusCode::OK);
    }
    provider.publish(vec![minted.jwk("kept")]);
    keys.refresh_now().await.unwrap();
    let reply = me(addr, minted.token("gone")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(me(addr, minted.token("kept")).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_forged_kid_flood_costs_the_provider_at_most_one_fetch_per_interval() {
    let minted = mint(json!({
        "keys": [{"id": "real", "alg": "ES256"}, {"id": "attacker", "alg": "ES256"}],
        "tokens": (0..30).map(|n| json!({
            "id": format!("forged-{n}"), "key": "attacker", "kid": format!("forged-kid-{n}"),
            "claims": claims("mallory", app::ISSUER),
        })).collect::<Vec<_>>(),
    }));
    let provider = Provider::start(vec![minted.jwk("real")]).await;
    let keys = source(&provider)
        .min_refresh_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    keys.refresh_now().await.unwrap();
    let addr = forum_with(keys).await;
    let forged = |n: usize| minted.token(&format!("forged-{n}")).to_owned();

    // Within the interval after the last fetch: forged kids cause no fetch at all.
    tokio::time::advance(Duration::from_secs(29)).await;
    for n in 0..10 {
        assert_eq!(me(addr, &forged(n)).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(provider.jwks_fetches(), 1);
    // Past it: one refresh, however many forged tokens follow, one after another.
    tokio::time::advance(Duration::from_secs(1)).await;
    for n in 10..30 {
        assert_eq!(me(addr, &forged(n)).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        provider.jwks_fetches(),
        2,
        "initial fetch plus one refresh, not twenty"
    );
}

#[tokio::test(start_paused = true)]
async fn provider_outage_keeps_fetched_keys_until_max_stale_then_503() {
    let minted = keys_and_tokens(&[("k1", "EdDSA")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("k1")]).await;
    let keys = source(&provider)
        .refresh_interval(Duration::from_secs(600))
        .max_stale(Duration::from_secs(3600))
        .build()
        .unwrap();
    keys.refresh_now().await.unwrap();
    // The verified-token cache is on: beyond max-stale, cached tokens must fail too.
    let addr = forum_with(keys.clone()).await;
    assert_eq!(me(addr, minted.token("k1")).await.status, StatusCode::OK);

    provider.set_down(true);
    assert!(keys.refresh_now().await.is_err());
    assert_eq!(
        me(addr, minted.token("k1")).await.status,
        StatusCode::OK,
        "stale keys still verify"
    );

    tokio::time::advance(Duration::from_secs(3601)).await;
    let reply = me(addr, minted.token("k1")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "AUTH_UNAVAILABLE");
    assert!(reply.headers.contains_key("retry-after"));
    let anonymous = post(
        addr,
        "/graphql",
        None,
        json!({ "query": "{ publicPosts { id } }" }),
    )
    .await;
    assert_eq!(
        anonymous.status,
        StatusCode::OK,
        "anonymous requests do not need keys"
    );

    provider.set_down(false);
    keys.refresh_now().await.unwrap();
    assert_eq!(me(addr, minted.token("k1")).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_during_an_outage_is_503_and_the_provider_is_not_hammered() {
    let minted = mint(json!({
        "keys": [{"id": "old", "alg": "ES256"}, {"id": "new", "alg": "ES256"}],
        "tokens": [
            {"id": "old", "key": "old", "claims": claims("user-old", app::ISSUER)},
            {"id": "new", "key": "new", "claims": claims("user-new", app::ISSUER)},
            {"id": "forged", "key": "new", "kid": "forged-kid", "claims": claims("mallory", app::ISSUER)},
        ],
    }));
    let provider = Provider::start(vec![minted.jwk("old")]).await;
    let keys = source(&provider)
        .min_refresh_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    keys.refresh_now().await.unwrap();
    let addr = forum_with(keys).await;

    // The provider goes down, and rotates to "new" while it is unreachable.
    provider.set_down(true);
    provider.publish(vec![minted.jwk("old"), minted.jwk("new")]);
    tokio::time::advance(Duration::from_secs(30)).await;
    // The first request's refresh fails; the next ones are rate-limited while the last
    // attempt is a failure. None of them can tell a new key from a forged one: 503.
    for n in 0..10 {
        let reply = me(addr, minted.token("new")).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "request {n}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "AUTH_UNAVAILABLE");
        assert!(reply.headers.contains_key("retry-after"));
    }
    assert_eq!(
        provider.jwks_requests(),
        2,
        "the initial fetch and one failed refresh, not ten"
    );
    assert_eq!(
        me(addr, minted.token("old")).await.status,
        StatusCode::OK,
        "known keys keep verifying"
    );

    // Back up: the next refresh finds the new key; a kid unknown after that is 401.
    provider.set_down(false);
    tokio::time::advance(Duration::from_secs(30)).await;
    let reply = me(addr, minted.token("new")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["data"]["me"]["id"], "user-new");
    let reply = me(addr, minted.token("forged")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(reply.code(), "UNAUTHENTICATED");
}

#[tokio::test(start_paused = true)]
async fn start_up_with_the_provider_down_answers_503_then_recovers() {
    let minted = keys_and_tokens(&[("k1", "RS256")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("k1")]).await;
    provider.set_down(true);
    let keys = source(&provider)
        .min_refresh_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let addr = forum_with(keys).await;
    let reply = me(addr, minted.token("k1")).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );

    provider.set_down(false);
    tokio::time::advance(Duration::from_secs(10)).await;
    let reply = me(addr, minted.token("k1")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys_and_requires_its_issuer() {
    // The issuer is the provider's own URL, so its address must be known before minting.
    let provider = Provider::start(vec![]).await;
    let issuer = provider.base_url();
    let minted = mint(json!({
        "keys": [{"id": "k1", "alg": "RS256"}],
        "tokens": [
            {"id": "right", "key": "k1", "claims": claims("oidc-user", &issuer)},
            {"id": "wrong", "key": "k1", "claims": claims("oidc-user", "forum-demo")},
        ],
    }));
    provider.publish(vec![minted.jwk("k1")]);
    let keys = JwksSource::oidc(issuer.clone()).build().unwrap();
    assert_eq!(keys.issuer(), Some(issuer.as_str()));
    let addr = forum_with(keys).await;
    let reply = me(addr, minted.token("right")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["data"]["me"]["id"], "oidc-user");
    assert_eq!(
        me(addr, minted.token("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(provider.discoveries(), 1);
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let minted = keys_and_tokens(&[("k1", "ES256")], "https://evil.example");
    let provider = Provider::start(vec![minted.jwk("k1")]).await;
    provider.claim_issuer("https://evil.example");
    let keys = JwksSource::oidc(provider.base_url()).build().unwrap();
    assert!(matches!(
        keys.refresh_now().await,
        Err(scoped_cache::KeyFetchError::IssuerMismatch)
    ));
    assert_eq!(
        provider.jwks_fetches(),
        0,
        "keys of a mismatched issuer are never fetched"
    );
}

#[tokio::test(start_paused = true)]
async fn background_refresh_follows_a_shorter_cache_control_max_age() {
    let minted = keys_and_tokens(&[("k1", "ES256")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("k1")]).await;
    provider.set_cache_control("public, max-age=60");
    let keys = source(&provider)
        .refresh_interval(Duration::from_secs(600))
        .min_refresh_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    keys.refresh_now().await.unwrap();
    let fetched = provider.jwks_fetches();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(provider.jwks_fetches(), fetched, "not before max-age");
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(|| provider.jwks_fetches() > fetched).await;
    assert_eq!(provider.jwks_fetches(), fetched + 1);

    // A max-age below `min_refresh_interval` is raised to it.
    provider.set_cache_control("max-age=1");
    keys.refresh_now().await.unwrap();
    let fetched = provider.jwks_fetches();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(provider.jwks_fetches(), fetched);
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle(|| provider.jwks_fetches() > fetched).await;
    assert_eq!(provider.jwks_fetches(), fetched + 1);
}

/// Lets spawned tasks run until `done` holds (bounded: a missing fetch fails the assert).
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn several_identity_providers_are_told_apart_by_iss() {
    let a = keys_and_tokens(&[("a1", "ES256")], "https://idp-a.example");
    let b = keys_and_tokens(&[("b1", "ES256")], "https://idp-b.example");
    let provider_a = Provider::start(vec![a.jwk("a1")]).await;
    let provider_b = Provider::start(vec![b.jwk("b1")]).await;
    let layer = ScopedCacheLayer::builder()
        .verifier(
            Verifier::jwks(source(&provider_a).build().unwrap())
                .issuer(["https://idp-a.example"])
                .audience([app::AUDIENCE]),
        )
        .verifier(
            Verifier::jwks(source(&provider_b).build().unwrap())
                .issuer(["https://idp-b.example"])
                .audience([app::AUDIENCE]),
        )
        .build()
        .unwrap();
    let addr = serve(app::router(schema::Forum::seeded(), layer)).await;
    assert_eq!(
        me(addr, a.token("a1")).await.body["data"]["me"]["id"],
        "user-a1"
    );
    assert_eq!(
        me(addr, b.token("b1")).await.body["data"]["me"]["id"],
        "user-b1"
    );
    assert_eq!(
        (provider_a.jwks_fetches(), provider_b.jwks_fetches()),
        (1, 1)
    );
}

#[tokio::test]
async fn an_oversized_jwks_is_refused_and_nothing_is_trusted() {
    let minted = keys_and_tokens(&[("k1", "RS256")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("k1"); 20]).await;
    let keys = source(&provider).max_response_bytes(1024).build().unwrap();
    assert!(matches!(
        keys.refresh_now().await,
        Err(scoped_cache::KeyFetchError::TooLarge(1024))
    ));
    let addr = forum_with(keys).await;
    assert_eq!(
        me(addr, minted.token("k1")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn an_oidc_source_vouches_only_for_its_own_issuer() {
    let provider_a = Provider::start(vec![]).await;
    let provider_b = Provider::start(vec![]).await;
    let (iss_a, iss_b) = (provider_a.base_url(), provider_b.base_url());
    let minted = mint(json!({
        "keys": [{"id": "a1", "alg": "ES256"}, {"id": "b1", "alg": "ES256"}],
        "tokens": [
            {"id": "honest", "key": "b1", "claims": claims("bob", &iss_b)},
            {"id": "impostor", "key": "b1", "claims": claims("mallory", &iss_a)},
        ],
    }));
    provider_a.publish(vec![minted.jwk("a1")]);
    provider_b.publish(vec![minted.jwk("b1")]);
    let verifier = Verifier::jwks(JwksSource::oidc(iss_a).build().unwrap())
        .key_source(JwksSource::oidc(iss_b).build().unwrap())
        .audience([app::AUDIENCE]);
    let layer = ScopedCacheLayer::builder()
        .verifier(verifier)
        .build()
        .unwrap();
    let addr = serve(app::router(schema::Forum::seeded(), layer)).await;
    assert_eq!(
        me(addr, minted.token("honest")).await.status,
        StatusCode::OK
    );
    let reply = me(addr, minted.token("impostor")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "B's key must not vouch for A's issuer"
    );
}

#[tokio::test]
async fn jwks_sources_bound_to_their_issuers_vouch_only_for_them() {
    const IDP_A: &str = "https://idp-a.example";
    const IDP_B: &str = "https://idp-b.example";
    let minted = mint(json!({
        "keys": [{"id": "a1", "alg": "ES256"}, {"id": "b1", "alg": "ES256"}],
        "tokens": [
            {"id": "alice", "key": "a1", "claims": claims("alice", IDP_A)},
            {"id": "bob", "key": "b1", "claims": claims("bob", IDP_B)},
            {"id": "impostor", "key": "b1", "claims": claims("mallory", IDP_A)},
        ],
    }));
    let provider_a = Provider::start(vec![minted.jwk("a1")]).await;
    let provider_b = Provider::start(vec![minted.jwk("b1")]).await;

    // Unbound, either provider's keys would vouch for both issuers: refused at build.
    let unbound = Verifier::jwks(source(&provider_a).build().unwrap())
        .key_source(source(&provider_b).build().unwrap())
        .issuer([IDP_A, IDP_B])
        .audience([app::AUDIENCE]);
    assert!(matches!(
        ScopedCacheLayer::builder().verifier(unbound).build(),
        Err(scoped_cache::BuildError::UnboundKeySource)
    ));

    let verifier = Verifier::jwks(source(&provider_a).issuer([IDP_A]).build().unwrap())
        .key_source(source(&provider_b).issuer([IDP_B]).build().unwrap())
        .audience([app::AUDIENCE]);
    let layer = ScopedCacheLayer::builder()
        .verifier(verifier)
        .build()
        .unwrap();
    let addr = serve(app::router(schema::Forum::seeded(), layer)).await;
    for (token, sub) in [("alice", "alice"), ("bob", "bob")] {
        let reply = me(addr, minted.token(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["data"]["me"]["id"], sub);
    }
    let reply = me(addr, minted.token("impostor")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "B's key must not vouch for A's issuer: {}",
        reply.body
    );
    assert_eq!(
        provider_b.jwks_fetches(),
        1,
        "the impostor never made B's source refresh"
    );
}

#[tokio::test]
async fn an_emptied_jwks_withdraws_every_key_at_once() {
    let minted = keys_and_tokens(&[("k1", "RS256")], app::ISSUER);
    let provider = Provider::start(vec![minted.jwk("k1")]).await;
    let keys = source(&provider).build().unwrap();
    let addr = forum_with(keys.clone()).await;
    assert_eq!(me(addr, minted.token("k1")).await.status, StatusCode::OK);
    provider.publish(vec![]);
    assert!(matches!(
        keys.refresh_now().await,
        Err(scoped_cache::KeyFetchError::NoUsableKeys)
    ));
    let reply = me(addr, minted.token("k1")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "withdrawn, not unavailable: {}",
        reply.body
    );
}

/// Readiness probes ask for missing keys without waiting on the provider and without
/// flooding it: the same rate limit as an unknown `kid`.
#[tokio::test]
async fn readiness_probes_fetch_missing_keys_once_and_never_wait() {
    let minted = keys_and_tokens(&[("ready-1", "RS256")], "forum-demo");
    let provider = Provider::start(vec![minted.jwk("ready-1")]).await;
    let layer = app::layer(app::jwks_verifier(
        source(&provider)
            .min_refresh_interval(Duration::from_secs(60))
            .build()
            .unwrap(),
    ))
    .unwrap();
    // The first probe finds no keys and asks for them; later ones see them arrive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut probes = 0;
    while !layer.readiness().await.ready {
        probes += 1;
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fetched = provider.jwks_requests();
    assert!(fetched <= 2, "{fetched} fetches for {probes} probes");

    // Down: a flood of probes is answered at once, and costs the provider nothing more
    // than the rate limit allows.
    let provider = Provider::start(Vec::new()).await;
    provider.set_down(true);
    let layer = app::layer(app::jwks_verifier(
        source(&provider)
            .min_refresh_interval(Duration::from_secs(60))
            .build()
            .unwrap(),
    ))
    .unwrap();
    for _ in 0..200 {
        let readiness = layer.readiness().await;
        assert!(!readiness.ready && !readiness.keys);
    }
    assert!(
        provider.jwks_requests() <= 2,
        "{}",
        provider.jwks_requests()
    );
}
