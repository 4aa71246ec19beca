//! [`ScopedCacheLayer`]: the tower `Layer`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use tower::Layer;

use crate::builder::ScopedCacheLayerBuilder;
use crate::cache::inflight::InFlight;
use crate::cache::request::Preparer;
use crate::cache::store::MemoryStore;
use crate::guard::DocumentLimits;
use crate::jwt::TokenVerifier;
use crate::jwt::token::TokenSource;
use crate::route::Routes;
use crate::scope::RuleSet;
use crate::service::ScopedCache;

/// Verifies bearer JWTs, puts [`Claims`](crate::Claims) into request extensions, and caches
/// GraphQL responses in buckets chosen by claim values.
///
/// Cloning is one `Arc` bump; every clone shares one cache. See the [crate docs](crate) for
/// an example.
#[derive(Debug, Clone)]
pub struct ScopedCacheLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Everything the service needs, built once.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) verifier: TokenVerifier,
    pub(crate) tokens: TokenSource,
    pub(crate) routes: Routes,
    pub(crate) rules: RuleSet,
    pub(crate) preparer: Preparer,
    pub(crate) store: MemoryStore,
    pub(crate) in_flight: InFlight,
    pub(crate) coalesce: bool,
    pub(crate) limits: Limits,
    /// Request headers in every key besides `Host` and `Accept`.
    pub(crate) key_headers: Vec<HeaderName>,
    pub(crate) vary: HeaderValue,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) entry_bytes: usize,
    pub(crate) request_bytes: usize,
    pub(crate) document: DocumentLimits,
}

impl ScopedCacheLayer {
    /// Starts configuring a layer.
    pub fn builder() -> ScopedCacheLayerBuilder {
        ScopedCacheLayerBuilder::default()
    }
}

impl<S> Layer<S> for ScopedCacheLayer {
    type Service = ScopedCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ScopedCache::new(inner, Arc::clone(&self.shared))
    }
}
