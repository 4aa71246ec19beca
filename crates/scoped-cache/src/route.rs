//! Per-route behaviour: cache, verify only, or pass through.

use std::collections::HashMap;

use axum::extract::MatchedPath;
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
/// # let _ = (cached, members_only, no_cache, health);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub(crate) verify: bool,
    pub(crate) cache: bool,
    pub(crate) require_auth: bool,
}

impl RoutePolicy {
    /// Verify tokens, and cache GraphQL responses by the rules.
    pub fn cached() -> Self {
        Self {
            verify: true,
            cache: true,
            require_auth: false,
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
        }
    }

    /// Whether a request without a token is refused with 401. Default: `false` (anonymous
    /// requests are served, from the anonymous bucket). Has no effect on a passthrough route.
    #[must_use]
    pub fn require_auth(mut self, required: bool) -> Self {
        self.require_auth = required;
        self
    }
}

/// The configured routes and the policy for all others.
#[derive(Debug)]
pub(crate) struct Routes {
    exact: HashMap<String, RoutePolicy>,
    fallback: RoutePolicy,
}

impl Routes {
    pub(crate) fn new(exact: HashMap<String, RoutePolicy>, fallback: RoutePolicy) -> Self {
        Self { exact, fallback }
    }

    /// The policy for `req`. Only the policy comes from the route pattern: cache keys use
    /// the request's own path, since `/t/{tenant}` serves different data per tenant.
    pub(crate) fn resolve<B>(&self, req: &Request<B>) -> RoutePolicy {
        let path = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| req.uri().path(), MatchedPath::as_str);
        self.exact.get(path).copied().unwrap_or(self.fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_routes_win_and_others_fall_back() {
        let routes = Routes::new(
            HashMap::from([("/graphql".to_owned(), RoutePolicy::cached())]),
            RoutePolicy::verify_only(),
        );
        let req = Request::get("/graphql?query={me{id}}").body(()).unwrap();
        assert_eq!(routes.resolve(&req), RoutePolicy::cached());
        let other = Request::get("/health").body(()).unwrap();
        assert_eq!(routes.resolve(&other), RoutePolicy::verify_only());
    }
}
