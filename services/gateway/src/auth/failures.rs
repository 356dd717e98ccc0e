//! Failed credential presentations, per client address, in memory: an
//! address that keeps presenting credentials we refuse (random session
//! tokens, forged JWTs, stolen-then-revoked cookies) is answered 429 before
//! admission runs, so the flood costs neither Redis nor Postgres.
//!
//! Each address may fail [`FAILURES_PER_MINUTE`] times a minute (a burst of
//! as many); past that it is refused until its allowance returns. Only
//! refusals count: a missing credential is not a failure, and a browser with
//! a stale cookie fails once before signing in again. Memory is bounded: past
//! [`ADDRESSES_BOUND`] addresses, those back at full allowance are dropped
//! (at most once a second), and if that is not enough the state is emptied.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};

/// Refused presentations allowed per address per minute.
pub const FAILURES_PER_MINUTE: u32 = 120;

/// Addresses remembered before idle ones are dropped.
pub const ADDRESSES_BOUND: usize = 50_000;

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// The per-address failure allowance and the addresses out of it.
pub struct FailedPresentations {
    allowance: Limiter,
    /// Addresses refused until the instant their allowance returns.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Whether `blocked` may hold anything: the common case (nobody
    /// blocked) then costs one atomic load per request, no lock.
    any_blocked: std::sync::atomic::AtomicBool,
    swept: Mutex<Instant>,
}

impl std::fmt::Debug for FailedPresentations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedPresentations")
            .field("addresses", &self.allowance.len())
            .finish_non_exhaustive()
    }
}

impl Default for FailedPresentations {
    fn default() -> Self {
        Self::new(FAILURES_PER_MINUTE)
    }
}

impl FailedPresentations {
    /// `per_minute` failures allowed per address.
    #[must_use]
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            allowance: governor::RateLimiter::keyed(governor::Quota::per_minute(n)),
            blocked: Mutex::new(HashMap::new()),
            any_blocked: std::sync::atomic::AtomicBool::new(false),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Whether any address is blocked now (or was, until next asked).
    #[must_use]
    pub fn any_blocked(&self) -> bool {
        self.any_blocked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Seconds to wait when `address` has spent its allowance, else `None`.
    #[must_use]
    pub fn refused(&self, address: IpAddr) -> Option<u64> {
        if !self.any_blocked() {
            return None;
        }
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = *blocked.get(&address)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&address);
            if blocked.is_empty() {
                self.any_blocked
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            return None;
        }
        Some((until - now).as_secs().max(1))
    }

    /// Counts one refused presentation from `address`.
    pub fn failed(&self, address: IpAddr) {
        self.sweep();
        if let Err(not_until) = self.allowance.check_key(&address) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("gatehouse_credential_failures_blocked_total").increment(1);
            let mut blocked = self
                .blocked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            blocked.insert(address, Instant::now() + wait.max(Duration::from_secs(1)));
            self.any_blocked
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn sweep(&self) {
        if self.allowance.len() <= ADDRESSES_BOUND {
            return;
        }
        {
            let Ok(mut swept) = self.swept.try_lock() else {
                return;
            };
            if swept.elapsed() < Duration::from_secs(1) {
                return;
            }
            *swept = Instant::now();
        }
        self.allowance.retain_recent();
        self.allowance.shrink_to_fit();
        let now = Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        blocked.retain(|_, until| *until > now);
        if blocked.len() > ADDRESSES_BOUND {
            blocked.clear();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_once_its_failures_are_spent_and_others_are_not() {
        let failures = FailedPresentations::new(5);
        let flood: IpAddr = "198.51.100.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(failures.refused(flood), None);
            failures.failed(flood);
        }
        assert_eq!(failures.refused(flood), None, "five failures are allowed");
        failures.failed(flood);
        let wait = failures.refused(flood).unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(failures.refused(other), None);
    }
}
