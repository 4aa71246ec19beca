//! The forum's GraphQL schema: public posts, members-only posts, the caller's profile, and
//! two fields that show the cache at work (`slow` for coalescing, `ticker` for STALE).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_graphql::{
    Context, EmptySubscription, Error, ErrorExtensions, ID, Object, Result, Schema, SimpleObject,
};
use scoped_cache::Claims;
use scoped_cache::graphql::EntityTags;

pub(crate) type ForumSchema = Schema<Query, Mutation, EmptySubscription>;

#[derive(Clone, SimpleObject)]
pub(crate) struct Post {
    id: ID,
    title: String,
    body: String,
    author: String,
    #[graphql(skip)]
    members_only: bool,
}

#[derive(SimpleObject)]
pub(crate) struct User {
    id: ID,
    name: String,
    role: String,
}

/// Shared state: the posts, how many operations actually executed (a HIT never does),
/// and the counters behind `renderId`, `slow` and `ticker`.
#[derive(Default)]
pub(crate) struct Forum {
    posts: RwLock<Vec<Post>>,
    pub(crate) executions: AtomicU64,
    renders: AtomicU64,
    pub(crate) slow_runs: AtomicU64,
    pub(crate) ticks: AtomicU64,
}

impl Forum {
    pub(crate) fn seeded() -> Arc<Self> {
        let seed = |id: usize, title: &str, author: &str, members_only: bool| Post {
            id: ID(id.to_string()),
            title: title.to_owned(),
            body: format!("{title}: the full text."),
            author: author.to_owned(),
            members_only,
        };
        Arc::new(Self {
            posts: RwLock::new(vec![
                seed(1, "Welcome to the forum", "admin", false),
                seed(2, "House rules", "admin", false),
                seed(3, "Release notes 1.0", "alice", false),
                seed(4, "Caching GraphQL by claims", "bob", false),
                seed(5, "Meet-up in Lisbon", "carol", false),
                seed(6, "Members: roadmap draft", "alice", true),
                seed(7, "Members: budget 2027", "bob", true),
            ]),
            ..Self::default()
        })
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.read().map(|p| p.clone()).unwrap_or_default()
    }
}

/// The schema, with the limits a production schema sets. Each was measured against the
/// deepest real client query, GraphiQL's introspection query (forum queries themselves
/// nest two fields deep and select fewer than 15 fields); a request over a limit is refused
/// before execution.
///
/// These limits do not bound the work async-graphql does *before* it refuses: its
/// validation expands every fragment spread anew. Fragments that each spread the next four
/// times, 12 deep (653 bytes), stay under `limit_recursive_depth` and cost about 6 s of CPU
/// (release build) before `limit_complexity` refuses them. scoped-cache's handler stops
/// those first: it counts fields with each fragment once and refuses documents over
/// `max_selections` (10,000 by default) before async-graphql sees them.
///
/// With `tags` (the layer's [`EntityTags`]), every cached answer is tagged with the posts
/// and users in it, so `createPost`, and purges by entity, reach exactly those answers.
pub(crate) fn build(forum: Arc<Forum>, tags: Option<EntityTags>) -> ForumSchema {
    let builder = Schema::build(Query, Mutation, EmptySubscription).data(forum);
    let builder = match tags {
        Some(tags) => builder.extension(tags),
        None => builder,
    };
    builder
        // Field nesting: forum data is 2 deep (`memberPosts { title }`); GraphiQL's
        // introspection query is 13 (its `ofType` chain), and GraphiQL and code generators
        // need it. Nothing deeper exists here except by recursing through introspection.
        .limit_depth(16)
        // Fields selected, each counting 1 plus its children (lists are not multiplied):
        // the welcome query is 8, introspection 185. A few hundred bounds what a request
        // can make the resolvers do.
        .limit_complexity(300)
        // Nesting of selection sets and fragment spreads, checked right after parsing:
        // introspection reaches 15 (each spread counts as a level); the default is 32.
        // Chains of fragments deeper than this are refused before validation.
        .limit_recursive_depth(20)
        // Directives on one field: real queries put one `@include`/`@skip` on a field.
        .limit_directives(4)
        .finish()
}

fn forum<'c>(ctx: &Context<'c>) -> &'c Arc<Forum> {
    ctx.data_unchecked::<Arc<Forum>>()
}

fn is_member(ctx: &Context<'_>) -> bool {
    ctx.data_opt::<Claims>()
        .and_then(|claims| claims.claim_str("role"))
        .is_some_and(|role| role == "member" || role == "admin")
}

fn forbidden() -> Error {
    Error::new("members only").extend_with(|_, e| e.set("code", "FORBIDDEN"))
}

pub(crate) struct Query;

#[Object]
impl Query {
    /// Public posts, newest first.
    #[graphql(cache_control(max_age = 60))]
    async fn public_posts(&self, ctx: &Context<'_>, limit: Option<i32>) -> Vec<Post> {
        let limit = usize::try_from(limit.unwrap_or(20).max(0)).unwrap_or(0);
        let mut posts: Vec<Post> = forum(ctx)
            .posts()
            .into_iter()
            .filter(|p| !p.members_only)
            .collect();
        posts.reverse();
        posts.truncate(limit);
        posts
    }

    /// Posts for members and admins (FORBIDDEN for everyone else).
    #[graphql(cache_control(max_age = 30, private))]
    async fn member_posts(&self, ctx: &Context<'_>) -> Result<Vec<Post>> {
        if !is_member(ctx) {
            return Err(forbidden());
        }
        Ok(forum(ctx)
            .posts()
            .into_iter()
            .filter(|p| p.members_only)
            .collect())
    }

    /// The caller, from their token's `sub`, `name` and `role`; null when anonymous.
    #[graphql(cache_control(private))]
    async fn me(&self, ctx: &Context<'_>) -> Option<User> {
        let claims = ctx.data_opt::<Claims>()?;
        Some(User {
            id: ID(claims.subject()?.to_owned()),
            name: claims.claim_str("name").unwrap_or_default().to_owned(),
            role: claims.claim_str("role").unwrap_or_default().to_owned(),
        })
    }

    /// One post; members-only posts need a member or admin role.
    async fn post(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Post>> {
        let post = forum(ctx).posts().into_iter().find(|p| p.id == id);
        match post {
            Some(post) if post.members_only && !is_member(ctx) => Err(forbidden()),
            post => Ok(post),
        }
    }

    /// A fresh id per execution: a cache HIT returns the stored one.
    async fn render_id(&self, ctx: &Context<'_>) -> ID {
        let n = forum(ctx).renders.fetch_add(1, Ordering::Relaxed) + 1;
        ID(format!("render-{}-{n}", std::process::id()))
    }

    /// Sleeps `ms` milliseconds (at most 5,000) and returns a fresh id: concurrent misses
    /// of one key wait for a single execution, so they all get the same id.
    async fn slow(&self, ctx: &Context<'_>, ms: i32) -> ID {
        let ms = u64::try_from(ms.clamp(0, 5_000)).unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        let n = forum(ctx).slow_runs.fetch_add(1, Ordering::Relaxed) + 1;
        ID(format!("slow-{}-{n}", std::process::id()))
    }

    /// A fresh id per execution, cached for 2 s and then served STALE for up to 30 s while
    /// one background execution refreshes it.
    async fn ticker(&self, ctx: &Context<'_>) -> ID {
        let n = forum(ctx).ticks.fetch_add(1, Ordering::Relaxed) + 1;
        ID(format!("tick-{}-{n}", std::process::id()))
    }
}

pub(crate) struct Mutation;

#[Object]
impl Mutation {
    /// Publishes a public post (members and admins only).
    async fn create_post(&self, ctx: &Context<'_>, title: String, body: String) -> Result<Post> {
        if !is_member(ctx) {
            return Err(forbidden());
        }
        let author = ctx
            .data_opt::<Claims>()
            .and_then(Claims::subject)
            .unwrap_or_default()
            .to_owned();
        let forum = forum(ctx);
        let mut posts = forum
            .posts
            .write()
            .map_err(|_| Error::new("storage unavailable"))?;
        let post = Post {
            id: ID((posts.len() + 1).to_string()),
            title,
            body,
            author,
            members_only: false,
        };
        posts.push(post.clone());
        Ok(post)
    }
}
