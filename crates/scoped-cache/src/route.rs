//! Per-route behaviour: cache, verify only, or pass through.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{MatchedPath, OriginalUri};
use http::Request;

/// What the layer does on one route.
///
/// Routes are matched by axum's [`MatchedPath`] when the layer is added with
/// `Router::layer` (so `/posts/{id}` is one route), else by the exact URI path.
///
/// ```
/// use scoped_cache::RoutePolicy;
///
/// let cached = RoutePolicy::cached();
/// let members_only = RoutePolicy::cached().require_auth(true);
/// let no_cache = RoutePolicy::verify_only();
/// let health = RoutePolicy::passthrough();
/// // Served by `scoped_cache::graphql`: one entry per media type, not per `Accept` spelling.
/// let negotiated = RoutePolicy::cached().negotiated_accept();
/// # let _ = (cached, members_only, no_cache, health, negotiated);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub(crate) verify: bool,
    pub(crate) cache: bool,
    pub(crate) require_auth: bool,
    pub(crate) negotiated_accept: bool,
}

impl RoutePolicy {
    /// Verify tokens, and cache GraphQL responses by the rules.
    pub fn cached() -> Self {
        Self {
            verify: true,
            cache: true,
            require_auth: false,
            negotiated_accept: false,
        }
    }

    /// Verify tokens and hand claims on, never cache (`x-cache: BYPASS`).
    pub fn verify_only() -> Self {
        Self {
            cache: false,
            ..Self::cached()
        }
    }

    /// Do nothing: no verification, no claims, no caching. For health checks and static files.
    pub fn passthrough() -> Self {
        Self {
            verify: false,
            cache: false,
            require_auth: false,
            negotiated_accept: false,
        }
    }

    /// Whether a request without a token is refused with 401. Default: `false` (anonymous
    /// requests are served, from the anonymous bucket). Has no effect on a passthrough route.
    #[must_use]
    pub fn require_auth(mut self, required: bool) -> Self {
        self.require_auth = required;
        self
    }

    /// Says the route's handler picks the response's media type from `Accept` by the
    /// GraphQL-over-HTTP rules, and reads nothing else of it, as
    /// [`scoped_cache::graphql`](crate::graphql)'s `GraphQL` and `GraphQLRequest` do. The
    /// cache key then holds the media type negotiated rather than the header's spelling:
    /// `*/*`, `application/json`, `application/json;q=0.9` and no `Accept` at all share
    /// one entry instead of making one each (and one execution each).
    ///
    /// Only for such handlers: one that reads `Accept` another way (a GraphiQL page for
    /// `text/html`, `multipart/mixed` for incremental delivery, as async-graphql-axum's
    /// does) would have one answer served for another. Default: off, and the key holds
    /// every `Accept` line as sent.
    #[must_use]
    pub fn negotiated_accept(mut self) -> Self {
        self.negotiated_accept = true;
        self
    }
}

/// The configured routes and the policy for all others.
#[derive(Debug)]
pub(crate) struct Routes {
    /// Each route's policy, and its label's index in `labels`.
    exact: HashMap<String, (RoutePolicy, u16)>,
    /// The routes' names for metrics and traces: `other` (every route not configured),
    /// then each configured path, sorted.
    labels: Vec<Arc<str>>,
    fallback: RoutePolicy,
    /// The fallback was chosen (`default_route`): routes that get it are meant to, and
    /// are not warned about.
    chosen: bool,
    /// Route patterns already warned about: a bounded set (an app has finitely many
    /// routes, and raw request paths are never put here).
    warned: Mutex<HashSet<String>>,
    warned_unrouted: AtomicBool,
}

/// More distinct unmatched route patterns than this are not remembered (nor warned about).
const MAX_WARNED: usize = 256;

impl Routes {
    /// `fallback`: the chosen default policy, if one was.
    pub(crate) fn new(exact: HashMap<String, RoutePolicy>, fallback: Option<RoutePolicy>) -> Self {
        let mut paths: Vec<(String, RoutePolicy)> = exact.into_iter().collect();
        paths.sort_by(|a, b| a.0.cmp(&b.0));
        let mut labels: Vec<Arc<str>> = vec![Arc::from("other")];
        labels.extend(paths.iter().map(|(path, _)| Arc::from(path.as_str())));
        let exact = paths
            .drain(..)
            .enumerate()
            .map(|(i, (path, policy))| (path, (policy, u16::try_from(i + 1).unwrap_or(0))))
            .collect();
        Self {
            exact,
            labels,
            fallback: fallback.unwrap_or_else(RoutePolicy::verify_only),
            chosen: fallback.is_some(),
            warned: Mutex::default(),
            warned_unrouted: AtomicBool::new(false),
        }
    }

    /// The policy for `req`, found by any name the route goes by: axum's [`MatchedPath`]
    /// (the full pattern, nest prefixes included), the URI the client sent (axum's
    /// [`OriginalUri`], before a nested router stripped its prefix) or the URI the layer
    /// sees. Only the policy comes from the route pattern: cache keys use the request's own
    /// path, since `/t/{tenant}` serves different data per tenant.
    #[cfg(test)]
    pub(crate) fn resolve<B>(&self, req: &Request<B>) -> RoutePolicy {
        self.resolve_labelled(req).0
    }

    /// The routes' names for metrics and traces, by the label [`resolve_labelled`]
    /// gives.
    ///
    /// [`resolve_labelled`]: Self::resolve_labelled
    pub(crate) fn labels(&self) -> &[Arc<str>] {
        &self.labels
    }

    /// [`resolve`](Self::resolve), with the route's label: `0` (`other`) for every route
    /// not configured, so a label never holds a raw request path.
    pub(crate) fn resolve_labelled<B>(&self, req: &Request<B>) -> (RoutePolicy, u16) {
        let matched = req.extensions().get::<MatchedPath>();
        let original = req.extensions().get::<OriginalUri>();
        let found = matched
            .and_then(|m| self.exact.get(m.as_str()))
            .or_else(|| original.and_then(|o| self.exact.get(o.0.path())))
            .or_else(|| self.exact.get(req.uri().path()));
        match found {
            Some(found) => *found,
            None => {
                // A chosen default is meant for the other routes (health checks, 404s),
                // but a GraphQL route that gets it is likely a misspelt `route(..)`.
                let graphql = || req.uri().path().to_ascii_lowercase().contains("graphql");
                if !self.exact.is_empty() && (!self.chosen || graphql()) {
                    self.warn_unmatched(matched);
                }
                (self.fallback, 0)
            }
        }
    }

    /// Routes were configured, yet this request matched none of them: it gets the default
    /// policy, which may not be what was meant (a nested prefix, a path parameter, a
    /// service wrapped from outside). Said once per route pattern.
    fn warn_unmatched(&self, matched: Option<&MatchedPath>) {
        match matched {
            Some(pattern) => {
                let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
                if warned.len() < MAX_WARNED && warned.insert(pattern.as_str().to_owned()) {
                    tracing::warn!(
                        route = pattern.as_str(),
                        "no configured route policy matches this route; the default route policy applies"
                    );
                }
            }
            None => {
                if !self.warned_unrouted.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "a request matched no configured route policy and carries no axum MatchedPath; the default route policy applies (further such requests are not reported)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_routes_win_and_others_fall_back() {
        let routes = Routes::new(
            HashMap::from([("/graphql".to_owned(), RoutePolicy::cached())]),
            Some(RoutePolicy::verify_only()),
        );
        let req = Request::get("/graphql?query={me{id}}").body(()).unwrap();
        assert_eq!(routes.resolve(&req), RoutePolicy::cached());
        let other = Request::get("/health").body(()).unwrap();
        assert_eq!(routes.resolve(&other), RoutePolicy::verify_only());
    }

    #[test]
    fn a_nested_route_is_found_by_its_original_path() {
        let routes = Routes::new(
            HashMap::from([(
                "/api/graphql".to_owned(),
                RoutePolicy::cached().require_auth(true),
            )]),
            Some(RoutePolicy::passthrough()),
        );
        // A router nested at `/api` sees `/graphql`; the client sent `/api/graphql`.
        let mut req = Request::get("/graphql").body(()).unwrap();
        req.extensions_mut()
            .insert(OriginalUri("/api/graphql".parse().unwrap()));
        assert_eq!(
            routes.resolve(&req),
            RoutePolicy::cached().require_auth(true)
        );
    }

    #[test]
    fn only_an_unchosen_default_is_warned_about() {
        let named = || HashMap::from([("/graphql".to_owned(), RoutePolicy::cached())]);
        let unrouted = || Request::get("/nowhere").body(()).unwrap();

        let implicit = Routes::new(named(), None);
        assert_eq!(implicit.resolve(&unrouted()), RoutePolicy::verify_only());
        assert!(
            implicit.warned_unrouted.load(Ordering::Relaxed),
            "a route the default reached by accident is reported"
        );

        let chosen = Routes::new(named(), Some(RoutePolicy::passthrough()));
        assert_eq!(chosen.resolve(&unrouted()), RoutePolicy::passthrough());
        assert!(
            !chosen.warned_unrouted.load(Ordering::Relaxed),
            "a chosen default is meant: no warning on every health check or 404"
        );
        // Unless a GraphQL route gets it (a misspelt `route(..)`).
        let graphql = Request::get("/api/GraphQL").body(()).unwrap();
        assert_eq!(chosen.resolve(&graphql), RoutePolicy::passthrough());
        assert!(chosen.warned_unrouted.load(Ordering::Relaxed));
    }
}
