//! The pipeline's health: what each cache holds (for the gauges, refreshed in the
//! background while the layer lives) and whether it can serve with its guarantees (for a
//! readiness probe).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cache::store::ResponseStore;
use crate::health::{Readiness, TierHealth, Usage};
use crate::observe::Answers;

use super::Pipeline;

/// What `GET /admin/stats` answers.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    #[serde(flatten)]
    answers: Answers,
    caches: BTreeMap<&'static str, Usage>,
    tier: Option<TierHealth>,
    readiness: Readiness,
}

/// How often the gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

impl Pipeline {
    /// What each cache holds, by the name its gauges carry.
    pub(crate) fn usage(&self) -> Vec<(&'static str, Usage)> {
        let responses = self.store.stats();
        let mut caches = vec![
            (
                "responses",
                Usage {
                    entries: responses.entries,
                    bytes: responses.bytes,
                    bound: self.limits.cache_bytes,
                },
            ),
            ("documents", self.preparer.usage()),
            ("revocations", self.revocations.usage()),
        ];
        if let Some(tokens) = self.verifier.token_usage() {
            caches.push(("tokens", tokens));
        }
        caches
    }

    /// Whether the layer can serve with its guarantees: every JWKS source holds usable
    /// keys (one that does not is asked for them in the background, rate-limited as an
    /// unknown `kid` is, and the probe does not wait), and a Redis tier knows the fleet's
    /// revocations (in step, or cut off with tokens deliberately accepted meanwhile:
    /// `accept_tokens_when_cut_off`).
    pub(crate) fn readiness(&self) -> Readiness {
        let mut keys = true;
        for source in self.verifier.sources() {
            if !source.is_usable() {
                // A probe is often the first caller: without this, no traffic (held back
                // until ready) would ever fetch the keys.
                source.nudge();
                keys = false;
            }
        }
        let now = Instant::now();
        let tier = self.store.tier_health(now);
        Readiness {
            ready: keys && self.revocations.known(now),
            keys,
            tier,
        }
    }

    /// Starts, once, the background work a layer built outside a runtime leaves to its
    /// first caller: the Redis tier's syncer and subscriber, and the gauges.
    pub(crate) fn start(self: &Arc<Self>) {
        self.store.start();
        self.start_gauges();
    }

    /// Starts refreshing the gauges every few seconds, once, if a runtime runs (the
    /// first request starts it when `build()` ran outside one). Stops when the layer is
    /// dropped.
    pub(crate) fn start_gauges(self: &Arc<Self>) {
        if self.observer.gauges_started.load(Ordering::Relaxed)
            || self.observer.gauges_started.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.observer.gauges_started.store(false, Ordering::Relaxed);
            return;
        };
        let pipeline: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(GAUGE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(pipeline) = pipeline.upgrade() else {
                    break;
                };
                pipeline.refresh_gauges();
            }
        });
    }

    /// Sets the gauges to what the caches hold now, and takes the stats window's
    /// snapshot.
    pub(crate) fn refresh_gauges(&self) {
        let readiness = self.readiness();
        self.observer.gauges(&self.usage(), &readiness);
        self.observer.snapshot(Instant::now());
    }

    /// What the stats page shows: the recent window's answers, each cache's usage, the
    /// tier's state and readiness.
    pub(crate) fn report(&self) -> Report {
        let readiness = self.readiness();
        let now = Instant::now();
        Report {
            answers: self.observer.answers(now),
            caches: self.usage().into_iter().collect(),
            tier: readiness.tier,
            readiness,
        }
    }
}
