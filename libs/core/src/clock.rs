//! Time as a parameter: library code asks a [`Clock`] instead of reading the
//! system clock, so expiry, lockout windows and key rotation are tested by
//! moving a [`ManualClock`] rather than by sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A source of "now".
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> OffsetDateTime;

    /// The current time as whole seconds since the Unix epoch.
    fn unix_seconds(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// The current time as milliseconds since the Unix epoch (0 before it):
    /// what routing's deadlines and statistics slots are written in.
    fn unix_millis(&self) -> u64 {
        u64::try_from(self.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock tests set and advance by hand; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    unix_micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    #[must_use]
    pub fn at(start: OffsetDateTime) -> Self {
        let micros = i64::try_from(start.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
        Self {
            unix_micros: Arc::new(AtomicI64::new(micros)),
        }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: time::Duration) {
        let micros = i64::try_from(by.whole_microseconds()).unwrap_or(i64::MAX);
        self.unix_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let micros = i128::from(self.unix_micros.load(Ordering::SeqCst));
        OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let start = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = ManualClock::at(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        clock.advance(time::Duration::minutes(31));
        assert_eq!(other.now(), start + time::Duration::minutes(31));
        assert_eq!(other.unix_seconds(), start.unix_timestamp() + 31 * 60);
        assert_eq!(
            other.unix_millis(),
            u64::try_from(start.unix_timestamp() + 31 * 60).unwrap() * 1000
        );
    }
}
