//! At most one log line a minute for what a hostile client or a broken peer can repeat
//! at will: a wrong credential on every request must not flood the logs.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How often a throttled warning may be logged.
const EVERY_MILLIS: u64 = 60_000;
/// "Never logged yet".
const NEVER: u64 = u64::MAX;

/// Says when a throttled warning is due, and how many were held back meanwhile.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// When it was last due, in milliseconds since the process's first throttle.
    last: AtomicU64,
    held_back: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new() -> Self {
        Self {
            last: AtomicU64::new(NEVER),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` when a warning is due now; `None` (and one
    /// more held back) otherwise.
    pub(crate) fn due(&self) -> Option<u64> {
        static BASE: OnceLock<Instant> = OnceLock::new();
        let base = *BASE.get_or_init(Instant::now);
        self.due_at(u64::try_from(base.elapsed().as_millis()).unwrap_or(NEVER - 1))
    }

    /// [`due`](Self::due), `now` milliseconds into the process.
    fn due_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == NEVER || now.saturating_sub(last) >= EVERY_MILLIS;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_a_minute_saying_how_many_were_held_back() {
        let throttle = Throttle::new();
        assert_eq!(throttle.due_at(5), Some(0));
        assert_eq!(throttle.due_at(6), None);
        assert_eq!(throttle.due_at(EVERY_MILLIS + 4), None);
        assert_eq!(throttle.due_at(EVERY_MILLIS + 5), Some(2));
        assert_eq!(throttle.due_at(EVERY_MILLIS + 6), None);
    }
}
