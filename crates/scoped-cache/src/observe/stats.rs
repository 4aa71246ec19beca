//! What the stats page shows: the answers of a recent window (about a minute), by
//! status, operation, rule and reason, from counts this layer keeps whatever metrics
//! recorder is installed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::meter::{Counts, Meter};

/// Snapshots older than this are dropped: the window is at most this long.
const WINDOW: Duration = Duration::from_secs(60);

/// Counts taken every few seconds, so a window's counts are now's less the oldest's.
#[derive(Debug)]
pub(crate) struct Window {
    snapshots: Mutex<VecDeque<(Instant, Counts)>>,
    started: Instant,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            snapshots: Mutex::default(),
            started: Instant::now(),
        }
    }
}

impl Window {
    /// Takes a snapshot of `meter` at `now`, dropping those past the window.
    pub(crate) fn record(&self, meter: &Meter, now: Instant) {
        let mut snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        snapshots.push_back((now, meter.counts()));
        // Keep one at or before the window's start, so the window stays a whole one.
        while snapshots
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= WINDOW)
        {
            snapshots.pop_front();
        }
    }

    /// The answers since the oldest snapshot (or since the layer started).
    pub(crate) fn stats(&self, meter: &Meter, now: Instant) -> Answers {
        // The newest snapshot a whole window old; until there is one, since the start
        // (counts start at zero then, so that window is exact too).
        let (since, before) = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|(at, _)| now.saturating_duration_since(*at) >= WINDOW)
            .map_or((self.started, Counts::default()), |(at, counts)| {
                (*at, counts.clone())
            });
        let current = meter.counts();
        let delta = |now: &HashMap<u64, u64>, then: &HashMap<u64, u64>| {
            now.iter()
                .map(|(id, n)| (*id, n.saturating_sub(then.get(id).copied().unwrap_or(0))))
                .filter(|(_, n)| *n > 0)
                .collect::<Vec<_>>()
        };
        let mut answers = Answers {
            window_seconds: now.saturating_duration_since(since).as_secs_f64(),
            uptime_seconds: now.saturating_duration_since(self.started).as_secs(),
            ..Answers::default()
        };
        for (id, n) in delta(&current.responses, &before.responses) {
            let named = meter.named(id);
            answers.total.add(named.status, n);
            answers
                .by_operation
                .entry(named.operation.to_string())
                .or_default()
                .add(named.status, n);
            answers
                .by_rule
                .entry(named.rule.to_string())
                .or_default()
                .add(named.status, n);
            answers
                .by_route
                .entry(named.route.to_string())
                .or_default()
                .add(named.status, n);
        }
        for (id, n) in delta(&current.reasons, &before.reasons) {
            *answers
                .reasons
                .entry(Meter::reason(id).as_str())
                .or_default() += n;
        }
        for tally in std::iter::once(&mut answers.total)
            .chain(answers.by_operation.values_mut())
            .chain(answers.by_rule.values_mut())
            .chain(answers.by_route.values_mut())
        {
            tally.settle();
        }
        answers
    }
}

/// Answers by status, with their hit ratio.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Tally {
    #[serde(rename = "HIT")]
    hit: u64,
    #[serde(rename = "STALE")]
    stale: u64,
    #[serde(rename = "MISS")]
    miss: u64,
    #[serde(rename = "BYPASS")]
    bypass: u64,
    #[serde(rename = "REFUSED")]
    refused: u64,
    #[serde(rename = "PASSTHROUGH")]
    passthrough: u64,
    /// Served from the cache (`HIT` and `STALE`) among those the cache could have served
    /// (`HIT`, `STALE`, `MISS`); `null` when there were none.
    hit_ratio: Option<f64>,
}

impl Tally {
    fn add(&mut self, status: &str, n: u64) {
        let slot = match status {
            "HIT" => &mut self.hit,
            "STALE" => &mut self.stale,
            "MISS" => &mut self.miss,
            "BYPASS" => &mut self.bypass,
            "REFUSED" => &mut self.refused,
            _ => &mut self.passthrough,
        };
        *slot += n;
    }

    fn settle(&mut self) {
        let served = self.hit + self.stale;
        let cacheable = served + self.miss;
        self.hit_ratio = (cacheable > 0).then(|| served as f64 / cacheable as f64);
    }
}

/// The window's answers.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Answers {
    /// How long the window is (up to a minute; less just after start).
    pub(crate) window_seconds: f64,
    pub(crate) uptime_seconds: u64,
    pub(crate) total: Tally,
    pub(crate) by_route: BTreeMap<String, Tally>,
    pub(crate) by_operation: BTreeMap<String, Tally>,
    pub(crate) by_rule: BTreeMap<String, Tally>,
    /// Why answers were not fresh hits, by reason.
    pub(crate) reasons: BTreeMap<&'static str, u64>,
}
