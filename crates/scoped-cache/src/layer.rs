//! [`ScopedCacheLayer`]: the tower `Layer`.

use std::sync::Arc;

use tower::Layer;

use crate::cache::purge::{Purge, PurgeError, Purged};
use crate::cache::store::{CacheStats, ResponseStore};
use crate::graphql::EntityTags;
use crate::health::{Readiness, Usage};
use crate::observe::names;
use crate::pipeline::Pipeline;
use crate::revocation::{RevocationStore, Revoke, RevokeError, RevokeKind, Revoked};
use crate::service::ScopedCache;

/// Verifies bearer JWTs, puts [`Claims`](crate::Claims) into request extensions, and caches
/// GraphQL responses in buckets chosen by claim values.
///
/// Cloning is one `Arc` bump; every clone shares one cache. See the [crate docs](crate) for
/// an example.
#[derive(Debug, Clone)]
pub struct ScopedCacheLayer {
    pub(crate) shared: Arc<Pipeline>,
}

impl ScopedCacheLayer {
    /// Removes every cached entry `purge` selects, from every clone of this layer (and,
    /// with a [Redis tier](crate::ScopedCacheLayerBuilder::redis), from every instance);
    /// says how many were removed and whether the purge is fleet-wide yet (see
    /// [`Purged::fleet_wide`]). An execution that was running when the purge happened does
    /// not store what it read if the purge would have removed it.
    ///
    /// ```
    /// # async fn demo(layer: scoped_cache::ScopedCacheLayer) -> Result<(), scoped_cache::PurgeError> {
    /// use scoped_cache::Purge;
    ///
    /// let purged = layer.purge(&Purge::entity("Post", "42")).await?;
    /// if !purged.fleet_wide {
    ///     // Redis did not record it in time: it holds here, and is retried every second.
    /// }
    /// let alices = layer.purge(&Purge::scope([("sub", "alice")])?).await?;
    /// # let _ = (purged.removed, alices); Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PurgeError`] when the purge selects nothing by construction (an empty list).
    pub async fn purge(&self, purge: &Purge) -> Result<Purged, PurgeError> {
        self.shared.store.purge(purge).await
    }

    /// Revokes tokens: from the next request on, a matching token gets 401 (code
    /// `UNAUTHENTICATED`, "token revoked"), before any cached answer is looked up, whether
    /// its signature was just checked or it came from the verified-token cache. Revoking a
    /// subject also purges the cache buckets scoped to it (see
    /// [`purge_on_revoke`](crate::ScopedCacheLayerBuilder::purge_on_revoke)). Every clone
    /// of this layer shares the revocations; they live in memory and are forgotten on
    /// restart, unless the layer has a [Redis tier](crate::ScopedCacheLayerBuilder::redis),
    /// which shares them with every instance and keeps them in Redis; then
    /// [`Revoked::fleet_wide`] says whether Redis recorded it.
    ///
    /// ```
    /// # async fn demo(layer: scoped_cache::ScopedCacheLayer) -> Result<(), scoped_cache::RevokeError> {
    /// use std::time::SystemTime;
    /// use scoped_cache::Revoke;
    ///
    /// // alice's role changed: her tokens issued until now stop working, her next one
    /// // (with the new role) works and lands in the new role's bucket.
    /// let revoked = layer.revoke(&Revoke::subject("alice", SystemTime::now())).await?;
    /// # let _ = revoked.fleet_wide;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RevokeError`]: an empty name, or a full store (nothing is recorded then).
    pub async fn revoke(&self, revoke: &Revoke) -> Result<Revoked, RevokeError> {
        let shared = &self.shared;
        shared.revocations.revoke(revoke, shared.clock.now())?;
        let mut fleet_wide = shared.revocations.share(revoke).await;
        if shared.purge_on_revoke
            && let RevokeKind::Subject { sub, iss, .. } = &revoke.kind
        {
            let mut claims = vec![("sub", serde_json::Value::from(sub.as_str()))];
            if let Some(iss) = iss {
                claims.push(("iss", serde_json::Value::from(iss.as_str())));
            }
            let purge = Purge::scope(claims).map_err(|_| RevokeError::Empty("sub"))?;
            match shared.store.purge(&purge).await {
                Ok(purged) => {
                    fleet_wide &= purged.fleet_wide;
                    tracing::info!(
                        removed = purged.removed,
                        fleet_wide = purged.fleet_wide,
                        "a revoked subject's buckets were purged"
                    );
                }
                Err(err) => tracing::warn!(%err, "purging a revoked subject's buckets failed"),
            }
        }
        let kind = match &revoke.kind {
            RevokeKind::Token { .. } => "jti",
            RevokeKind::Subject { .. } => "sub",
            RevokeKind::Issuer { .. } => "iss",
        };
        let shared = if fleet_wide { "true" } else { "false" };
        metrics::counter!(names::REVOCATIONS, "kind" => kind, "shared" => shared).increment(1);
        // Never the subject, issuer or token id: they identify people.
        tracing::info!(kind, fleet_wide, "revoked");
        Ok(Revoked { fleet_wide })
    }

    /// How many entries the response cache holds, and their weight against
    /// [`max_bytes`](crate::ScopedCacheLayerBuilder::max_bytes).
    pub fn stats(&self) -> CacheStats {
        self.shared.store.stats()
    }

    /// Whether the layer can serve with its guarantees now, for a readiness probe: every
    /// JWKS source holds usable keys (one that does not is asked for them in the
    /// background, at most once per `min_refresh_interval`, so probes neither wait nor
    /// flood the provider, and the first probes ready a fresh instance), and with a Redis
    /// tier, this instance knows the fleet's revocations: it heard Redis within
    /// [`max_lag`](crate::RedisTier::max_lag), or is configured to take tokens when cut
    /// off ([`accept_tokens_when_cut_off`](crate::RedisTier::accept_tokens_when_cut_off)).
    /// Redis being down does not make it unready until then: it serves from memory or by
    /// execution meanwhile. Past it, every instance of the fleet turns unready together:
    /// they refuse tokens with 503 then anyway.
    ///
    /// ```
    /// # async fn demo(layer: scoped_cache::ScopedCacheLayer) {
    /// let readiness = layer.readiness().await;
    /// let status = if readiness.ready { 200 } else { 503 };
    /// # let _ = status;
    /// # }
    /// ```
    pub async fn readiness(&self) -> Readiness {
        // A probe may come before any request (traffic held back until ready): what a
        // first request starts, it starts too, or a layer built outside a runtime would
        // never get ready.
        self.shared.start();
        self.shared.readiness()
    }

    /// What each of the layer's caches holds against its bound: `responses`,
    /// `documents` (prepared request texts), `revocations`, and `tokens` (the
    /// verified-token cache, unless it is off). The `scoped_cache_entries`,
    /// `scoped_cache_bytes` and `scoped_cache_bound` gauges say the same, refreshed every
    /// five seconds.
    pub fn usage(&self) -> Vec<(&'static str, Usage)> {
        self.shared.usage()
    }

    /// The async-graphql extension that tags cached entries with the entities they hold,
    /// configured like this layer ([`entity_id`](crate::ScopedCacheLayerBuilder::entity_id),
    /// [`max_entity_tags`](crate::ScopedCacheLayerBuilder::max_entity_tags)). Add it to the
    /// schema with one line:
    ///
    /// ```
    /// # use async_graphql::{EmptyMutation, EmptySubscription, Schema};
    /// # #[derive(Default)] struct Query;
    /// # #[async_graphql::Object] impl Query { async fn ok(&self) -> bool { true } }
    /// # fn demo(layer: scoped_cache::ScopedCacheLayer) {
    /// let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
    ///     .extension(layer.entity_tags())
    ///     .finish();
    /// # }
    /// ```
    pub fn entity_tags(&self) -> EntityTags {
        self.shared.entity_ids.iter().fold(
            EntityTags::new().max_tags(self.shared.max_entity_tags),
            |tags, (ty, field)| tags.id_field(ty, field),
        )
    }
}

impl<S> Layer<S> for ScopedCacheLayer {
    type Service = ScopedCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ScopedCache::new(inner, Arc::clone(&self.shared))
    }
}
