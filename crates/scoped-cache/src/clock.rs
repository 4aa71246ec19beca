//! Unix time: the one clock every check of `exp`, `nbf` and `iat`, every revocation and
//! the Redis tier's timestamps read.
//!
//! It is the wall clock, unless tokio's clock has run further since the first reading:
//! then that. So it never runs behind the wall clock (a machine back from suspend, whose
//! monotonic clock stood still, takes no expired token), never runs backwards (a wall
//! clock stepped back does not revive a token or forget a revocation early), and follows
//! tokio's paused clock in tests, which advance it explicitly.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch, now.
pub(crate) fn now() -> Duration {
    static ANCHOR: OnceLock<(Duration, tokio::time::Instant)> = OnceLock::new();
    let wall = since_epoch(SystemTime::now());
    let (anchor_wall, anchor) = *ANCHOR.get_or_init(|| (wall, tokio::time::Instant::now()));
    let ticked =
        anchor_wall.saturating_add(tokio::time::Instant::now().saturating_duration_since(anchor));
    wall.max(ticked)
}

/// Whole Unix seconds, now.
pub(crate) fn now_seconds() -> u64 {
    now().as_secs()
}

/// Unix seconds, now, with their fraction (JWT NumericDates may have one).
pub(crate) fn now_seconds_f64() -> f64 {
    now().as_secs_f64()
}

/// Unix milliseconds, now.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn now_millis() -> u64 {
    u64::try_from(now().as_millis()).unwrap_or(u64::MAX)
}

/// Whole Unix seconds of `time` (0 before the epoch).
pub(crate) fn seconds(time: SystemTime) -> u64 {
    since_epoch(time).as_secs()
}

/// Unix seconds of `time`, rounded up: "issued before now" then covers tokens issued
/// earlier in the current second.
pub(crate) fn seconds_ceil(time: SystemTime) -> u64 {
    let since = since_epoch(time);
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The clock revocations are judged by, as a value a store can be handed: [`now_seconds`],
/// or one reading of it a request judges its token and its revocation by.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnixClock {
    reading: Option<u64>,
}

impl UnixClock {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The clock stopped at `now` (since the Unix epoch).
    pub(crate) fn at(now: Duration) -> Self {
        Self {
            reading: Some(now.as_secs()),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.reading.unwrap_or_else(now_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_up_covers_the_current_second() {
        let time = UNIX_EPOCH + Duration::from_millis(10_500);
        assert_eq!(seconds(time), 10);
        assert_eq!(seconds_ceil(time), 11);
        assert_eq!(seconds_ceil(UNIX_EPOCH + Duration::from_secs(10)), 10);
        assert_eq!(seconds(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn it_follows_tokios_clock_and_never_runs_behind_the_wall_clock() {
        let before = now();
        assert!(before >= since_epoch(SystemTime::now()) - Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert!(now() >= before + Duration::from_secs(3_600));
        assert!(now() >= since_epoch(SystemTime::now()));
    }
}
