//! A small circuit breaker for the throttle's Redis calls: after a failure,
//! stop asking Redis for a while (each ask would cost a full timeout during an
//! outage), then let one probe through to see whether it is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Closed (use Redis), open (skip Redis until a deadline), half-open (one probe).
#[derive(Debug)]
pub struct Breaker {
    base: Instant,
    open_for: Duration,
    /// Milliseconds since `base` until which the breaker is open; 0 = closed.
    open_until_ms: AtomicU64,
    /// Milliseconds since `base` when the current half-open probe started; 0 =
    /// none. A probe that never reports back (its caller was dropped) stops
    /// counting after `open_for`, so the breaker cannot stay stuck open.
    probe_started_ms: AtomicU64,
}

impl Breaker {
    /// A closed breaker that opens for `open_for` after each failure.
    #[must_use]
    pub fn new(open_for: Duration) -> Self {
        Self {
            base: Instant::now(),
            open_for,
            open_until_ms: AtomicU64::new(0),
            probe_started_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go to Redis now.
    pub fn allow_request(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms().max(1);
        if now < until {
            return false;
        }
        // Open period over: one caller at a time probes; a probe older than
        // the open period is presumed lost and replaced.
        let started = self.probe_started_ms.load(Ordering::Acquire);
        let open_for = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX);
        if started != 0 && now.saturating_sub(started) < open_for {
            return false;
        }
        self.probe_started_ms
            .compare_exchange(started, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The call succeeded: close.
    pub fn record_success(&self) {
        self.open_until_ms.store(0, Ordering::Release);
        self.probe_started_ms.store(0, Ordering::Release);
    }

    /// The call failed: open (again) for the configured time.
    pub fn record_failure(&self) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.open_until_ms.store(until, Ordering::Release);
        self.probe_started_ms.store(0, Ordering::Release);
    }

    /// Whether the breaker is currently skipping Redis.
    #[must_use]
    pub fn is_open(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_then_lets_one_probe_through() {
        let breaker = Breaker::new(Duration::from_millis(30));
        assert!(breaker.allow_request());
        breaker.record_failure();
        assert!(breaker.is_open());
        assert!(!breaker.allow_request(), "open: skip Redis");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow_request(), "one probe after the open period");
        assert!(!breaker.allow_request(), "only one probe at a time");
        breaker.record_success();
        assert!(
            breaker.allow_request() && breaker.allow_request(),
            "closed again"
        );
    }

    #[test]
    fn a_lost_probe_does_not_keep_the_breaker_open() {
        let breaker = Breaker::new(Duration::from_millis(30));
        breaker.record_failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow_request(), "probe taken, and never reported");
        assert!(!breaker.allow_request());
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            breaker.allow_request(),
            "a new probe after the lost one expired"
        );
    }
}
