//! The differential test: the forum demo's cached route (`/graphql`) against its uncached
//! twin (`/graphql/nocache`, the same handler behind verification only), request by
//! request, at the same moment. Random users with random tokens (fresh, refreshed,
//! expired, revoked mid-run), random documents (aliases, named and inline fragments,
//! variables, `@include`/`@skip`, GET and POST), random mutations and purges. Every cached
//! answer must equal the uncached one (status and body), and no answer may hold another
//! user's profile.
//!
//! A bounded run by default (under a minute in CI). A long run:
//! `DIFF_CASES=5000 cargo test -p scoped-cache-e2e --release --test differential`
//! (200 operations a case, so 1,000,000 operations).

#[allow(dead_code)]
#[path = "../../examples/forum/app.rs"]
mod app;
#[path = "../../examples/forum/schema.rs"]
mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use scoped_cache::{Purge, Revoke, ScopedCacheLayer};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"differential-test-secret-of-32-bytes";
/// `sub`, `name`, `role`: members and admins read members' posts and may post.
const USERS: [(&str, &str, &str); 5] = [
    ("alice", "Alice", "member"),
    ("bob", "Bob", "admin"),
    ("carol", "Carol", "guest"),
    ("dave", "Dave", "member"),
    ("erin", "Erin", "guest"),
];
const OPS_PER_CASE: usize = 200;

#[derive(Debug, Clone, Copy)]
enum Token {
    /// The user's current token.
    Current,
    /// A new one: same claims, new `iat` and `jti`.
    Refreshed,
    /// Expired a minute ago (past the forum's 30 s leeway).
    Expired,
}

#[derive(Debug, Clone, Copy)]
enum PostFields {
    Inline(u8),
    NamedFragment(u8),
    InlineFragment(u8),
}

#[derive(Debug, Clone)]
enum Field {
    PublicPosts(Option<i32>, PostFields),
    MemberPosts(PostFields),
    /// A bit mask over `id`, `name`, `role`.
    Me(u8),
    Post(u8, PostFields),
}

#[derive(Debug, Clone)]
struct Selection {
    aliased: bool,
    field: Field,
    /// `@include(if: $on)` / `@skip(if: $on)` with the variable's value.
    directive: Option<(bool, bool)>,
    /// Arguments passed as variables rather than literals.
    variables: bool,
}

#[derive(Debug, Clone)]
struct Ask {
    /// `None`: anonymous.
    user: Option<usize>,
    token: Token,
    /// Which of the case's documents: a few, asked again and again, so the cache answers.
    doc: usize,
    get: bool,
}

/// Documents a case asks.
const DOCS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    Ask(Ask),
    CreatePost(usize),
    PurgePosts,
    PurgePost(u8),
    PurgeUser(usize),
    Revoke(usize),
}

fn post_fields() -> impl Strategy<Value = PostFields> {
    (1u8..16, 0..3).prop_map(|(mask, style)| match style {
        0 => PostFields::Inline(mask),
        1 => PostFields::NamedFragment(mask),
        _ => PostFields::InlineFragment(mask),
    })
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        (proptest::option::of(0i32..8), post_fields())
            .prop_map(|(limit, fields)| Field::PublicPosts(limit, fields)),
        post_fields().prop_map(Field::MemberPosts),
        (1u8..8).prop_map(Field::Me),
        (1u8..10, post_fields()).prop_map(|(id, fields)| Field::Post(id, fields)),
    ]
}

fn selection() -> impl Strategy<Value = Selection> {
    (
        any::<bool>(),
        field(),
        proptest::option::of((any::<bool>(), any::<bool>())),
        any::<bool>(),
    )
        .prop_map(|(aliased, field, directive, variables)| Selection {
            aliased,
            field,
            directive,
            variables,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let ask = (
        proptest::option::of(0..USERS.len()),
        prop_oneof![
            6 => Just(Token::Current),
            2 => Just(Token::Refreshed),
            1 => Just(Token::Expired),
        ],
        0..DOCS,
        any::<bool>(),
    )
        .prop_map(|(user, token, doc, get)| {
            Op::Ask(Ask {
                user,
                token,
                doc,
                get,
            })
        });
    prop_oneof![
        40 => ask,
        2 => (0..USERS.len()).prop_map(Op::CreatePost),
        1 => Just(Op::PurgePosts),
        1 => (1u8..10).prop_map(Op::PurgePost),
        1 => (0..USERS.len()).prop_map(Op::PurgeUser),
        1 => (0..USERS.len()).prop_map(Op::Revoke),
    ]
}

const POST_FIELDS: [&str; 4] = ["id", "title", "body", "author"];
const ME_FIELDS: [&str; 3] = ["id", "name", "role"];

fn pick(names: &[&str], mask: u8) -> String {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The document, its variables.
fn document(selections: &[Selection]) -> (String, Value) {
    let mut body = String::new();
    let mut declared = Vec::new();
    let mut variables = serde_json::Map::new();
    let mut fragments = std::collections::BTreeSet::new();
    let posts = |fields: PostFields, fragments: &mut std::collections::BTreeSet<u8>| match fields {
        PostFields::Inline(mask) => format!("{{ {} }}", pick(&POST_FIELDS, mask)),
        PostFields::NamedFragment(mask) => {
            fragments.insert(mask);
            format!("{{ ...P{mask} }}")
        }
        PostFields::InlineFragment(mask) => {
            format!("{{ ... on Post {{ {} }} }}", pick(&POST_FIELDS, mask))
        }
    };
    for (i, selection) in selections.iter().enumerate() {
        let (name, args, sub) = match &selection.field {
            Field::PublicPosts(limit, fields) => {
                let args = match (limit, selection.variables) {
                    (None, _) => String::new(),
                    (Some(limit), false) => format!("(limit: {limit})"),
                    (Some(limit), true) => {
                        declared.push(format!("$limit{i}: Int"));
                        variables.insert(format!("limit{i}"), json!(limit));
                        format!("(limit: $limit{i})")
                    }
                };
                ("publicPosts", args, posts(*fields, &mut fragments))
            }
            Field::MemberPosts(fields) => {
                ("memberPosts", String::new(), posts(*fields, &mut fragments))
            }
            Field::Me(mask) => (
                "me",
                String::new(),
                format!("{{ {} }}", pick(&ME_FIELDS, *mask)),
            ),
            Field::Post(id, fields) => {
                let args = if selection.variables {
                    declared.push(format!("$id{i}: ID!"));
                    variables.insert(format!("id{i}"), json!(id.to_string()));
                    format!("(id: $id{i})")
                } else {
                    format!("(id: \"{id}\")")
                };
                ("post", args, posts(*fields, &mut fragments))
            }
        };
        // Two selections of one field with other arguments need aliases.
        let alias = if selection.aliased || i > 0 {
            format!("f{i}: ")
        } else {
            String::new()
        };
        let directive = match selection.directive {
            None => String::new(),
            Some((include, on)) => {
                declared.push(format!("$on{i}: Boolean!"));
                variables.insert(format!("on{i}"), json!(on));
                let name = if include { "include" } else { "skip" };
                format!(" @{name}(if: $on{i})")
            }
        };
        body.push_str(&format!(" {alias}{name}{args}{directive} {sub}"));
    }
    let declared = if declared.is_empty() {
        String::new()
    } else {
        format!("({})", declared.join(", "))
    };
    let mut doc = format!("query Q{declared} {{{body} }}");
    for mask in fragments {
        doc.push_str(&format!(
            " fragment P{mask} on Post {{ {} }}",
            pick(&POST_FIELDS, mask)
        ));
    }
    (doc, Value::Object(variables))
}

static JTI: AtomicU64 = AtomicU64::new(0);

fn mint(user: usize, expired: bool) -> String {
    let (sub, name, role) = USERS[user];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (iat, exp) = if expired {
        (now - 3_600, now - 60)
    } else {
        (now, now + 3_600)
    };
    encode(
        &Header::new(Algorithm::HS256),
        &json!({
            "iss": app::ISSUER, "aud": app::AUDIENCE, "sub": sub, "name": name, "role": role,
            "iat": iat, "exp": exp, "jti": JTI.fetch_add(1, Ordering::Relaxed).to_string(),
        }),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

struct Forum {
    app: Router,
    layer: ScopedCacheLayer,
    tokens: Vec<String>,
    posts: u64,
    /// Asks, and the cached route's HITs among them.
    asks: u64,
    hits: u64,
}

impl Forum {
    fn new() -> Self {
        let forum = schema::Forum::seeded();
        let layer = app::layer(app::hmac_verifier(SECRET)).unwrap();
        Self {
            app: app::router(Arc::clone(&forum), layer.clone()),
            layer,
            tokens: (0..USERS.len()).map(|u| mint(u, false)).collect(),
            posts: 0,
            asks: 0,
            hits: 0,
        }
    }

    /// The status and body, and whether it was a HIT.
    async fn send(
        &self,
        route: &str,
        token: Option<&str>,
        doc: &str,
        vars: &Value,
        get: bool,
    ) -> ((StatusCode, Value), bool) {
        let mut request = if get {
            let query =
                serde_urlencoded::to_string([("query", doc), ("variables", &vars.to_string())])
                    .unwrap();
            Request::get(format!("{route}?{query}")).body(Body::empty())
        } else {
            Request::post(route)
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({ "query": doc, "variables": vars }).to_string(),
                ))
        }
        .unwrap();
        request
            .headers_mut()
            .insert("accept", "application/json".parse().unwrap());
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let hit = response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v.as_bytes().starts_with(b"HIT"));
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        ((status, body), hit)
    }

    async fn run(&mut self, docs: &[Vec<Selection>], op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Ask(ask) => {
                let selections = &docs[ask.doc];
                let token = ask.user.map(|user| match ask.token {
                    Token::Current => self.tokens[user].clone(),
                    Token::Refreshed => {
                        self.tokens[user] = mint(user, false);
                        self.tokens[user].clone()
                    }
                    Token::Expired => mint(user, true),
                });
                let (doc, vars) = document(selections);
                let (cached, hit) = self
                    .send("/graphql", token.as_deref(), &doc, &vars, ask.get)
                    .await;
                let (uncached, _) = self
                    .send("/graphql/nocache", token.as_deref(), &doc, &vars, ask.get)
                    .await;
                self.asks += 1;
                self.hits += u64::from(hit);
                prop_assert_eq!(&cached, &uncached, "{}", doc);
                // Nobody else's profile, whatever the two routes agree on.
                let own = ask.user.map(|u| USERS[u].0);
                if let Some(data) = cached.1.get("data").and_then(Value::as_object) {
                    for (key, value) in data {
                        if let Some(id) = value.get("id").and_then(Value::as_str)
                            && selections.iter().enumerate().any(|(i, s)| {
                                matches!(s.field, Field::Me(_))
                                    && (key == "me" || *key == format!("f{i}"))
                            })
                        {
                            prop_assert_eq!(Some(id), own, "another user's profile: {}", doc);
                        }
                    }
                }
            }
            Op::CreatePost(user) => {
                self.posts += 1;
                let doc = format!(
                    "mutation {{ createPost(title: \"t{}\", body: \"b\") {{ id title }} }}",
                    self.posts
                );
                let token = self.tokens[*user].clone();
                let ((status, _), _) = self
                    .send("/graphql", Some(&token), &doc, &json!({}), false)
                    .await;
                prop_assert!(status == StatusCode::OK || status == StatusCode::UNAUTHORIZED);
            }
            Op::PurgePosts => {
                self.layer.purge(&Purge::types(["Post"])).await.unwrap();
            }
            Op::PurgePost(id) => {
                self.layer
                    .purge(&Purge::entity("Post", id.to_string()))
                    .await
                    .unwrap();
            }
            Op::PurgeUser(user) => {
                self.layer
                    .purge(&Purge::scope([("sub", USERS[*user].0)]).unwrap())
                    .await
                    .unwrap();
            }
            Op::Revoke(user) => {
                self.layer
                    .revoke(&Revoke::subject(USERS[*user].0, SystemTime::now()))
                    .await
                    .unwrap();
            }
        }
        Ok(())
    }
}

#[test]
fn the_cached_route_answers_as_the_uncached_one() {
    let cases = std::env::var("DIFF_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(25);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (asked, hits) = (AtomicU64::new(0), AtomicU64::new(0));
    let case = (
        proptest::collection::vec(proptest::collection::vec(selection(), 1..4), DOCS),
        proptest::collection::vec(op(), OPS_PER_CASE),
    );
    let result = runner.run(&case, |(docs, ops)| {
        runtime.block_on(async {
            let mut forum = Forum::new();
            for op in &ops {
                forum.run(&docs, op).await?;
            }
            asked.fetch_add(forum.asks, Ordering::Relaxed);
            hits.fetch_add(forum.hits, Ordering::Relaxed);
            Ok(())
        })
    });
    let (asked, hits) = (asked.load(Ordering::Relaxed), hits.load(Ordering::Relaxed));
    eprintln!("differential: {asked} requests asked of both routes, {hits} of them cached HITs");
    if let Err(err) = result {
        panic!("{err}");
    }
    // Equal answers prove something only if the cache answered many of them.
    assert!(
        hits * 5 >= asked,
        "too few HITs to compare: {hits} of {asked}"
    );
}
