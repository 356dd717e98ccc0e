//! Automatic canary analysis: is the new version of a service doing worse
//! than the old one? Pure (the statistics are read from Redis by
//! [`crate::RoutingStore::version_stats`], decisions are acted on by the
//! gateway's canary controller).
//!
//! Each version's requests, failures (5xx answers, connect failures,
//! timeouts) and a latency histogram are counted per time slot by
//! `lua/route_outcome.lua`, separately for each tenant whose own rollout
//! chose the version ([`crate::counts_for_canary`]); a window sums the slots
//! it covers. A tenant's canary is judged on that tenant's traffic alone, so
//! no other tenant's users can roll it back or hold it up. The canary
//! fails when, over the window:
//! - its error rate exceeds the stable version's by more than
//!   `max_error_rate_increase` (absolute: 0.05 = five points), or
//! - its p99 latency exceeds the stable version's times `max_p99_ratio` (only
//!   when both versions saw `min_requests`; p99 is read from buckets a quarter
//!   of a doubling wide, so ratios below about 1.2 cannot be told apart).
//!
//! The stable version's rate is the baseline only when it saw `min_requests`
//! in the window; otherwise the baseline is 0% (a canary at 100% leaves the
//! old version no traffic to compare with). The canary itself must have seen
//! `min_requests` before it is judged at all.

use serde::{Deserialize, Serialize};

/// How a canary is judged (`analysis` of a rollout).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Analysis {
    /// Most the canary's error rate may exceed the stable one's (0-1).
    pub max_error_rate_increase: f64,
    /// Most the canary's p99 may be, as a multiple of the stable one's (≥ 1).
    pub max_p99_ratio: f64,
    /// The window the statistics cover, in seconds (10-3600).
    pub window_s: u32,
    /// Requests a version needs in the window before it counts.
    pub min_requests: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.05,
            max_p99_ratio: 2.0,
            window_s: 60,
            min_requests: 20,
        }
    }
}

impl Analysis {
    /// Checks the bounds; `Err` names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.max_error_rate_increase) {
            return Err("analysis.max_error_rate_increase must be between 0 and 1".into());
        }
        if !(1.0..=100.0).contains(&self.max_p99_ratio) {
            return Err("analysis.max_p99_ratio must be between 1 and 100".into());
        }
        if !(10..=3600).contains(&self.window_s) {
            return Err("analysis.window_s must be between 10 and 3600".into());
        }
        if !(1..=1_000_000).contains(&self.min_requests) {
            return Err("analysis.min_requests must be between 1 and 1000000".into());
        }
        Ok(())
    }
}

/// Latency buckets per doubling in the histogram (`lua/route_outcome.lua`).
pub const BUCKETS_PER_DOUBLING: u32 = 4;

/// One version's counts over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionStats {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency histogram: bucket k holds latencies `ms` with
    /// `floor(4 * log2(ms + 1)) == k`.
    pub latency: std::collections::BTreeMap<u32, u64>,
}

impl VersionStats {
    /// Failures per request (0 without requests).
    #[must_use]
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            to_f64(self.errors) / to_f64(self.requests)
        }
    }

    /// The 99th percentile latency in ms: the upper edge of the bucket it
    /// falls in (`None` without requests).
    #[must_use]
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.latency.values().sum();
        if total == 0 {
            return None;
        }
        let rank = total - total / 100;
        let mut seen = 0;
        for (bucket, count) in &self.latency {
            seen += count;
            if seen >= rank {
                let exponent = f64::from(bucket + 1) / f64::from(BUCKETS_PER_DOUBLING);
                return Some(exponent.exp2() - 1.0);
            }
        }
        None
    }

    /// Counts one request of `latency` (failed or not), in the histogram's
    /// bucket as `lua/route_outcome.lua` would place it.
    pub fn count(&mut self, ok: bool, latency: std::time::Duration) {
        self.requests += 1;
        if !ok {
            self.errors += 1;
        }
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a bucket index below 256"
        )]
        let bucket = (f64::from(BUCKETS_PER_DOUBLING) * ((ms as f64) + 1.0).log2()).floor() as u32;
        *self.latency.entry(bucket).or_default() += 1;
    }

    /// Adds another slot's counts.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (bucket, count) in &other.latency {
            *self.latency.entry(*bucket).or_default() += count;
        }
    }
}

#[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
fn to_f64(n: u64) -> f64 {
    n as f64
}

/// The analysis's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough canary traffic yet.
    Waiting {
        /// Canary requests in the window.
        seen: u64,
        /// Needed.
        needed: u32,
    },
    /// Within the margins.
    Healthy,
    /// Worse than allowed; the reason says by how much.
    Failing(String),
}

/// Judges `canary` against `stable` by `analysis` (see the module doc).
#[must_use]
pub fn judge(analysis: &Analysis, canary: &VersionStats, stable: &VersionStats) -> Verdict {
    let needed = analysis.min_requests;
    if canary.requests < u64::from(needed) {
        return Verdict::Waiting {
            seen: canary.requests,
            needed,
        };
    }
    let stable_counts = stable.requests >= u64::from(needed);
    let baseline = if stable_counts {
        stable.error_rate()
    } else {
        0.0
    };
    let rate = canary.error_rate();
    if rate > baseline + analysis.max_error_rate_increase {
        return Verdict::Failing(format!(
            "error rate {:.1}% over {} requests vs {:.1}% on the stable version (allowed: +{:.1} points) in {} s",
            rate * 100.0,
            canary.requests,
            baseline * 100.0,
            analysis.max_error_rate_increase * 100.0,
            analysis.window_s
        ));
    }
    if stable_counts
        && let (Some(canary_p99), Some(stable_p99)) = (canary.p99_ms(), stable.p99_ms())
        && canary_p99 > stable_p99 * analysis.max_p99_ratio
    {
        return Verdict::Failing(format!(
            "p99 {canary_p99:.0} ms vs {stable_p99:.0} ms on the stable version (allowed: ×{}) in {} s",
            analysis.max_p99_ratio, analysis.window_s
        ));
    }
    Verdict::Healthy
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    /// `n` requests, `errors` of them failed, all at `ms`.
    fn stats(n: u64, errors: u64, ms: f64) -> VersionStats {
        let bucket = (4.0 * (ms + 1.0).log2()).floor();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "test"
        )]
        let bucket = bucket as u32;
        VersionStats {
            requests: n,
            errors,
            latency: [(bucket, n)].into_iter().collect(),
        }
    }

    #[test]
    fn a_canary_with_a_fifth_of_its_requests_failing_is_rolled_back() {
        let a = Analysis::default();
        let verdict = judge(&a, &stats(100, 20, 5.0), &stats(400, 0, 5.0));
        let Verdict::Failing(reason) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(
            reason.starts_with("error rate 20.0% over 100 requests vs 0.0%"),
            "{reason}"
        );
    }

    #[test]
    fn the_stable_rate_is_the_baseline_only_with_enough_traffic() {
        let a = Analysis::default();
        // Both at 10% errors: the canary is no worse.
        assert_eq!(
            judge(&a, &stats(100, 10, 5.0), &stats(100, 10, 5.0)),
            Verdict::Healthy
        );
        // The stable version saw 5 requests: the baseline is 0%.
        assert!(matches!(
            judge(&a, &stats(100, 10, 5.0), &stats(5, 1, 5.0)),
            Verdict::Failing(_)
        ));
    }

    #[test]
    fn too_little_canary_traffic_waits() {
        let a = Analysis::default();
        assert_eq!(
            judge(&a, &stats(19, 19, 5.0), &stats(100, 0, 5.0)),
            Verdict::Waiting {
                seen: 19,
                needed: 20
            }
        );
    }

    #[test]
    fn a_slow_canary_fails_on_p99() {
        let a = Analysis::default();
        let verdict = judge(&a, &stats(100, 0, 200.0), &stats(100, 0, 20.0));
        assert!(
            matches!(verdict, Verdict::Failing(ref r) if r.starts_with("p99")),
            "{verdict:?}"
        );
        assert_eq!(
            judge(&a, &stats(100, 0, 30.0), &stats(100, 0, 20.0)),
            Verdict::Healthy
        );
    }

    #[test]
    fn p99_is_the_upper_edge_of_its_bucket() {
        let mut s = stats(99, 0, 3.0);
        s.add(&stats(1, 0, 1000.0));
        // 100 requests: the 99th is still in the 3 ms bucket.
        let p99 = s.p99_ms().unwrap();
        assert!((3.0..5.0).contains(&p99), "{p99}");
        s.add(&stats(1, 0, 1000.0));
        assert!(s.p99_ms().unwrap() >= 1000.0);
        assert_eq!(VersionStats::default().p99_ms(), None);
    }

    #[test]
    fn bounds_are_checked_by_name() {
        let bad = Analysis {
            window_s: 5,
            ..Analysis::default()
        };
        assert!(bad.check().unwrap_err().contains("window_s"));
        assert!(Analysis::default().check().is_ok());
    }
}
