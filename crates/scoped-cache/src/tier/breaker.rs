//! A circuit breaker for the Redis calls: while Redis is down or slow, requests stop
//! paying a timeout each and go straight to memory or execution.
//!
//! Closed → (`FAILURES_TO_OPEN` failures in a row) → open for `cool_down` → one probe
//! (half-open) → closed on success, open again on failure. The outage and the recovery
//! are logged once each, not per request.
//!
//! Hand-written rather than taken from a crate: it must follow tokio's clock (paused-time
//! tests), let exactly one probe through, and cost two atomic loads when closed; the
//! crates we looked at (`failsafe`, `circuitbreaker-rs`) use the wall clock and a lock.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::observe::names;

/// Consecutive failures (errors or timeouts) that open the breaker.
pub(crate) const FAILURES_TO_OPEN: u32 = 3;

#[derive(Debug)]
pub(crate) struct Breaker {
    cool_down: Duration,
    /// Fast path: whether the breaker is closed.
    closed: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    failures: u32,
    /// While open: when the next probe may go.
    retry_at: Option<Instant>,
    probing: bool,
}

/// Permission to make one call; report how it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    Call,
    /// The one call allowed while open: its outcome closes or reopens the breaker.
    Probe,
}

impl Breaker {
    pub(crate) fn new(cool_down: Duration) -> Self {
        Self {
            cool_down,
            closed: AtomicBool::new(true),
            state: Mutex::new(State {
                failures: 0,
                retry_at: None,
                probing: false,
            }),
        }
    }

    /// Whether a call may go now.
    pub(crate) fn permit(&self) -> Option<Permit> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Permit::Call);
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.retry_at {
            Some(at) if !state.probing && Instant::now() >= at => {
                state.probing = true;
                Some(Permit::Probe)
            }
            None => Some(Permit::Call),
            _ => None,
        }
    }

    /// Whether calls go through now (for logs and the demo's banner).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn succeeded(&self, permit: Permit) {
        if permit == Permit::Call && self.closed.load(Ordering::Acquire) {
            // The common case: no lock unless failures were counted.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.failures = 0;
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let was_open = state.retry_at.is_some();
        state.failures = 0;
        state.retry_at = None;
        state.probing = false;
        self.closed.store(true, Ordering::Release);
        if was_open {
            metrics::counter!(names::BREAKER, "to" => "closed").increment(1);
            tracing::info!("redis is reachable again; the shared tier resumes");
        }
    }

    pub(crate) fn failed(&self, permit: Permit, what: &dyn std::fmt::Display) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failures = state.failures.saturating_add(1);
        let open = state.retry_at.is_some();
        if permit == Permit::Probe || (!open && state.failures >= FAILURES_TO_OPEN) {
            if !open {
                metrics::counter!(names::BREAKER, "to" => "open").increment(1);
                tracing::warn!(
                    error = %what,
                    cool_down_ms = self.cool_down.as_millis() as u64,
                    "redis is failing; the shared tier is off until it answers again \
                     (requests are served from memory or by execution)"
                );
            }
            state.retry_at = Some(Instant::now() + self.cool_down);
            state.probing = false;
            self.closed.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_probes_once_and_closes() {
        let breaker = Breaker::new(Duration::from_secs(2));
        for _ in 0..FAILURES_TO_OPEN - 1 {
            let permit = breaker.permit().unwrap();
            breaker.failed(permit, &"boom");
        }
        assert!(breaker.is_closed(), "fewer failures keep it closed");
        let permit = breaker.permit().unwrap();
        breaker.failed(permit, &"boom");
        assert!(!breaker.is_closed());
        assert_eq!(breaker.permit(), None, "open: no calls");

        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(breaker.permit(), Some(Permit::Probe));
        assert_eq!(breaker.permit(), None, "one probe at a time");
        breaker.failed(Permit::Probe, &"still down");
        assert_eq!(breaker.permit(), None, "a failed probe reopens it");

        tokio::time::advance(Duration::from_secs(2)).await;
        let probe = breaker.permit().unwrap();
        breaker.succeeded(probe);
        assert!(breaker.is_closed());
        assert_eq!(breaker.permit(), Some(Permit::Call));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let breaker = Breaker::new(Duration::from_secs(2));
        for _ in 0..10 {
            breaker.failed(Permit::Call, &"blip");
            breaker.succeeded(Permit::Call);
        }
        // Interleaved failures never add up.
        assert!(breaker.is_closed());
    }
}
