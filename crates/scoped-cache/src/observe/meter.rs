//! The per-request metrics: handles registered with the recorder once per combination of
//! labels, then one map read and one atomic add per response.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use metrics::{Counter, Histogram, Label};

use super::Reason;
use super::names;

/// Statuses a response can have, as labels (`HIT` first: no reason means a hit).
pub(crate) const STATUSES: [&str; 6] = ["HIT", "MISS", "STALE", "BYPASS", "REFUSED", "PASSTHROUGH"];

/// More distinct label combinations than this per metric are not registered where they
/// are registered as they come (a configuration with over 65,536 route × operation × rule
/// combinations, or the per-reason counters): the labels are bounded by the configuration
/// already, this bounds a very large one. A smaller configuration's response series are
/// all registered up front, at most 65,536 of them.
const MAX_SERIES: usize = 4096;

/// The names labels are given, by index: routes, rules, the operations rules name.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    pub(crate) routes: Vec<Arc<str>>,
    pub(crate) rules: Vec<Arc<str>>,
    pub(crate) operations: Vec<Arc<str>>,
}

impl Labels {
    fn name(names: &[Arc<str>], index: Option<u16>) -> String {
        index
            .and_then(|i| names.get(usize::from(i)))
            .map_or_else(|| "none".to_owned(), ToString::to_string)
    }
}

/// One response's labels, by index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Series {
    pub(crate) route: u16,
    pub(crate) operation: Option<u16>,
    pub(crate) rule: Option<u16>,
}

impl Series {
    /// Where responses past [`MAX_SERIES`] are counted.
    fn overflow() -> Self {
        Series {
            route: 0,
            operation: Some(crate::scope::OTHER_OPERATION),
            rule: Some(crate::scope::SEVERAL_RULES),
        }
    }

    fn id(self, first: u16) -> u64 {
        let option = |v: Option<u16>| v.map_or(0, |v| u64::from(v) + 1);
        u64::from(first) << 52
            | u64::from(self.route) << 34
            | option(self.operation) << 17
            | option(self.rule)
    }
}

/// A count this layer keeps for itself as well (the stats page reads it whatever the
/// recorder is), and the recorder's handle.
#[derive(Debug)]
pub(crate) struct Tally {
    counter: Counter,
    count: AtomicU64,
}

/// The largest dense table of response series (statuses × routes × operations × rules);
/// a larger configuration keeps them in a map instead.
const MAX_DENSE: usize = 1 << 16;

/// Response series: a dense table indexed by the labels when the configuration is small
/// enough (one load and one add on the hit path, no lock), else a map.
#[derive(Debug)]
enum Responses {
    Dense {
        slots: Vec<OnceLock<Tally>>,
        routes: usize,
        operations: usize,
        rules: usize,
    },
    Sparse(Family<Tally>),
}

impl Default for Responses {
    fn default() -> Self {
        Responses::Sparse(Family::default())
    }
}

impl Responses {
    fn for_labels(labels: &Labels) -> Self {
        // `None` is one more value of each optional label.
        let (routes, operations, rules) = (
            labels.routes.len().max(1),
            labels.operations.len() + 1,
            labels.rules.len() + 1,
        );
        let size = STATUSES.len() * routes * operations * rules;
        if size > MAX_DENSE {
            return Responses::Sparse(Family::default());
        }
        Responses::Dense {
            slots: (0..size).map(|_| OnceLock::new()).collect(),
            routes,
            operations,
            rules,
        }
    }

    fn with(
        &self,
        status: usize,
        series: Series,
        register: impl FnOnce() -> Tally,
    ) -> Option<&Tally> {
        match self {
            Responses::Dense {
                slots,
                routes,
                operations,
                rules,
            } => {
                let option = |v: Option<u16>| v.map_or(0, |v| usize::from(v) + 1);
                let index = ((status * routes + usize::from(series.route)) * operations
                    + option(series.operation))
                    * rules
                    + option(series.rule);
                slots.get(index).map(|slot| slot.get_or_init(register))
            }
            Responses::Sparse(_) => None,
        }
    }

    fn each(&self, mut visit: impl FnMut(u64, &Tally)) {
        match self {
            Responses::Dense {
                slots,
                routes,
                operations,
                rules,
            } => {
                for (index, slot) in slots.iter().enumerate() {
                    let Some(tally) = slot.get() else { continue };
                    let option = |v: usize| v.checked_sub(1).map(|v| v as u16);
                    let rule = option(index % rules);
                    let rest = index / rules;
                    let operation = option(rest % operations);
                    let rest = rest / operations;
                    let series = Series {
                        route: (rest % routes) as u16,
                        operation,
                        rule,
                    };
                    visit(series.id((rest / routes) as u16), tally);
                }
            }
            Responses::Sparse(family) => family.each(visit),
        }
    }
}

impl Tally {
    fn add(&self) {
        self.counter.increment(1);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Every count so far, by series id: responses, and reasons.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub(crate) responses: HashMap<u64, u64>,
    pub(crate) reasons: HashMap<u64, u64>,
}

/// One response series' labels, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Named {
    pub(crate) status: &'static str,
    pub(crate) route: Arc<str>,
    pub(crate) operation: Arc<str>,
    pub(crate) rule: Arc<str>,
}

type Handles<H> = RwLock<HashMap<u64, H, foldhash::fast::FixedState>>;

/// Handles of one metric, by label combination, registered on first use.
#[derive(Debug)]
struct Family<H> {
    handles: Handles<H>,
}

impl<H> Default for Family<H> {
    fn default() -> Self {
        Self {
            handles: RwLock::new(HashMap::default()),
        }
    }
}

impl<H> Family<H> {
    /// Calls `use_it` with the handle for `id`, registering it (`register`) first if it
    /// is new; `None` past [`MAX_SERIES`], unless `forced` (the one overflow series each
    /// caller falls back to, so nothing goes uncounted).
    fn with<R>(
        &self,
        id: u64,
        forced: bool,
        register: impl FnOnce() -> H,
        use_it: impl FnOnce(&H) -> R,
    ) -> Option<R> {
        if let Some(handle) = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Some(use_it(handle));
        }
        let mut handles = self.handles.write().unwrap_or_else(PoisonError::into_inner);
        if !forced && handles.len() >= MAX_SERIES && !handles.contains_key(&id) {
            return None;
        }
        Some(use_it(handles.entry(id).or_insert_with(register)))
    }

    fn each(&self, mut visit: impl FnMut(u64, &H)) {
        for (id, handle) in self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            visit(*id, handle);
        }
    }
}

/// The request path's metrics.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    labels: Labels,
    responses: Responses,
    reasons: Family<Tally>,
    executions: Family<Histogram>,
}

impl Meter {
    pub(crate) fn new(labels: Labels) -> Self {
        names::describe();
        Self {
            responses: Responses::for_labels(&labels),
            labels,
            ..Self::default()
        }
    }

    pub(crate) fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Counts one response of `status` (an index into [`STATUSES`]) and, unless it was a
    /// hit, its reason.
    pub(crate) fn response(&self, status: usize, series: Series, reason: Option<Reason>) {
        let status = status.min(STATUSES.len() - 1);
        let tally = |series: Series| {
            move || Tally {
                counter: metrics::counter!(names::RESPONSES, self.response_labels(status, series)),
                count: AtomicU64::new(0),
            }
        };
        match &self.responses {
            Responses::Dense { .. } => {
                if let Some(tally) = self.responses.with(status, series, tally(series)) {
                    tally.add();
                }
            }
            Responses::Sparse(family) => {
                let id = series.id(status as u16);
                if family.with(id, false, tally(series), Tally::add).is_none() {
                    // Past the bound: one series of its own (route `other`, operation
                    // `other`, rule `several`), so nothing goes uncounted.
                    let overflow = Series::overflow();
                    family.with(
                        overflow.id(status as u16),
                        true,
                        tally(overflow),
                        Tally::add,
                    );
                }
            }
        }
        if let Some(reason) = reason {
            let index = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
            let counter = |route: u16| {
                move || Tally {
                    counter: metrics::counter!(
                        names::REASONS,
                        vec![
                            Label::new("reason", reason.as_str()),
                            Label::new("route", Labels::name(&self.labels.routes, Some(route))),
                        ]
                    ),
                    count: AtomicU64::new(0),
                }
            };
            let id = |route: u16| {
                Series {
                    route,
                    operation: None,
                    rule: None,
                }
                .id(index as u16)
            };
            let route = series.route;
            if self
                .reasons
                .with(id(route), false, counter(route), Tally::add)
                .is_none()
            {
                self.reasons.with(id(0), true, counter(0), Tally::add);
            }
        }
    }

    /// Times one execution on `route`.
    pub(crate) fn execution(&self, route: u16, seconds: f64) {
        let id = Series {
            route,
            ..Series::default()
        }
        .id(0);
        self.executions.with(
            id,
            false,
            || {
                metrics::histogram!(
                    names::EXECUTION_SECONDS,
                    vec![Label::new(
                        "route",
                        Labels::name(&self.labels.routes, Some(route))
                    )]
                )
            },
            |histogram| histogram.record(seconds),
        );
    }

    /// Every count so far.
    pub(crate) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        self.responses.each(|id, tally| {
            counts.responses.insert(id, tally.count());
        });
        self.reasons.each(|id, tally| {
            counts.reasons.insert(id, tally.count());
        });
        counts
    }

    /// The labels of response series `id`.
    pub(crate) fn named(&self, id: u64) -> Named {
        let option = |v: u64| v.checked_sub(1).map(|v| v as u16);
        let name = |names: &[Arc<str>], i: Option<u16>| {
            i.and_then(|i| names.get(usize::from(i)).cloned())
                .unwrap_or_else(|| Arc::from("none"))
        };
        Named {
            status: STATUSES.get((id >> 52) as usize).copied().unwrap_or("HIT"),
            route: name(&self.labels.routes, Some(((id >> 34) & 0xffff) as u16)),
            operation: name(&self.labels.operations, option((id >> 17) & 0x1ffff)),
            rule: name(&self.labels.rules, option(id & 0x1ffff)),
        }
    }

    /// The reason of reason series `id`.
    pub(crate) fn reason(id: u64) -> Reason {
        Reason::ALL
            .get((id >> 52) as usize)
            .copied()
            .unwrap_or(Reason::Absent)
    }

    fn response_labels(&self, status: usize, series: Series) -> Vec<Label> {
        vec![
            Label::new("status", STATUSES[status]),
            Label::new(
                "route",
                Labels::name(&self.labels.routes, Some(series.route)),
            ),
            Label::new(
                "operation",
                Labels::name(&self.labels.operations, series.operation),
            ),
            Label::new("rule", Labels::name(&self.labels.rules, series.rule)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_bound_a_family_counts_into_the_overflow_series_only() {
        let family: Family<u64> = Family::default();
        for id in 0..MAX_SERIES as u64 {
            assert_eq!(family.with(id, false, || id, |v| *v), Some(id));
        }
        assert_eq!(family.with(u64::MAX - 1, false, || 7, |v| *v), None);
        assert_eq!(family.with(u64::MAX, true, || 9, |v| *v), Some(9));
        // Known series still count.
        assert_eq!(family.with(3, false, || 0, |v| *v), Some(3));
    }

    #[test]
    fn a_series_id_keeps_every_label_apart() {
        let a = Series {
            route: 1,
            operation: Some(0),
            rule: None,
        };
        let b = Series {
            route: 1,
            operation: None,
            rule: Some(0),
        };
        let c = Series {
            route: u16::MAX,
            operation: Some(u16::MAX),
            rule: Some(u16::MAX),
        };
        let ids = [a.id(0), b.id(0), a.id(1), c.id(5), c.id(0)];
        let distinct: std::collections::HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
