//! The in-process limiter used while Redis is unreachable or too slow, with
//! each limit divided by the number of instances expected to share the
//! traffic.
//!
//! - **Pair and username** limits count *failures*, as in Redis: an allowed
//!   attempt is held as a failure until its verdict, a success clears the
//!   pair and takes the attempt back from the username, a withdrawn attempt
//!   is taken back from both. These are small sliding-window logs (one entry
//!   per unresolved or failed attempt, at most the limit per key), so a user
//!   who signs in again and again during a Redis hiccup is never refused for
//!   it. An earlier version counted every attempt here, and the sixth
//!   successful sign-in of one user within 15 minutes was refused whenever one
//!   Redis call overran its deadline.
//! - **IP and tenant** limits count attempts, which is what they mean, with
//!   `governor` (GCRA) keyed limiters. GCRA allows a burst of the limit and
//!   then a steady rate, so over one window it can admit up to about twice
//!   the limit: the price of a lock-free limiter for the length of an outage.
//!
//! The username backoff is not applied here (the ceiling is). Memory: a log
//! holds at most its limit, and logs whose newest entry left the window are
//! dropped at most once a second; the number of logs is bounded by the
//! attempts the IP and tenant limits let through in a window.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_redis::Keyspace;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{Attempt, LimitKind, LoginLimits, ip_bucket};

type Limiter = Arc<DefaultKeyedRateLimiter<String>>;

/// One key's unresolved or failed attempts inside its window.
#[derive(Debug)]
struct FailureLog {
    window: Duration,
    /// (when, reservation id), oldest first.
    entries: VecDeque<(Instant, String)>,
}

impl FailureLog {
    fn prune(&mut self, now: Instant) {
        while self
            .entries
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.window)
        {
            self.entries.pop_front();
        }
    }

    fn remove(&mut self, id: &str) {
        self.entries.retain(|(_, entry)| entry != id);
    }
}

/// The failure-counted limits one attempt is checked against.
struct FailureCheck {
    kind: LimitKind,
    key: String,
    max: u32,
    window: Duration,
}

/// Per-instance fallback limits.
#[derive(Debug)]
pub struct Fallback {
    instances: u32,
    limiters: Mutex<HashMap<(LimitKind, u32, u64), Limiter>>,
    failures: Mutex<HashMap<String, FailureLog>>,
    /// When (ms since `started`) idle keys were last dropped.
    last_sweep_ms: AtomicU64,
    started: Instant,
}

impl Fallback {
    /// Fallback limits for `instances` gateway instances sharing the load.
    #[must_use]
    pub fn new(instances: u32) -> Self {
        Self {
            instances: instances.max(1),
            limiters: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            last_sweep_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn per_instance(&self, max: u32) -> u32 {
        (max / self.instances).max(1)
    }

    fn limiter(&self, kind: LimitKind, max: u32, window: Duration) -> Limiter {
        let per_instance = self.per_instance(max);
        let key = (
            kind,
            per_instance,
            u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        );
        self.limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| {
                let burst = NonZeroU32::new(per_instance).unwrap_or(NonZeroU32::MIN);
                let period = window / per_instance;
                let quota = Quota::with_period(period.max(Duration::from_millis(1)))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(burst);
                Arc::new(RateLimiter::keyed(quota))
            })
            .clone()
    }

    /// Drops idle keys, at most once a second and outside the map locks'
    /// hot path, so memory stays bounded during a long outage without every
    /// call paying for it.
    fn sweep(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1_000
            || self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let limiters: Vec<Limiter> = self
            .limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for limiter in limiters {
            limiter.retain_recent();
        }
        let instant = Instant::now();
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, log| {
                log.prune(instant);
                !log.entries.is_empty()
            });
    }

    fn pair_key(attempt: &Attempt) -> String {
        let bucket = ip_bucket(attempt.ip);
        let digest = Keyspace::digest(&format!(
            "{}\u{0}{}\u{0}{bucket}",
            attempt.tenant_id, attempt.username
        ));
        format!("pair:{digest}")
    }

    fn user_key(attempt: &Attempt) -> String {
        let digest = Keyspace::digest(&format!("{}\u{0}{}", attempt.tenant_id, attempt.username));
        format!("user:{digest}")
    }

    /// `None` to allow (the attempt is then held as a failure under `id`
    /// until [`Fallback::succeeded`] or [`Fallback::withdraw`]), or the limit
    /// that refuses and when to retry.
    pub fn check(
        &self,
        attempt: &Attempt,
        limits: &LoginLimits,
        id: &str,
    ) -> Option<(LimitKind, Duration)> {
        self.sweep();
        let clock = DefaultClock::default();
        // The IP window is shared by every tenant, as in Redis.
        let bucket = ip_bucket(attempt.ip);
        if let Err(not_until) = self
            .limiter(LimitKind::Ip, limits.ip.max, limits.ip.window())
            .check_key(&bucket)
        {
            return Some((LimitKind::Ip, not_until.wait_time_from(clock.now())));
        }
        // A known device skips the username limit and the tenant ceiling.
        let mut checks = vec![FailureCheck {
            kind: LimitKind::Pair,
            key: Self::pair_key(attempt),
            max: limits.pair.max,
            window: limits.pair.window(),
        }];
        if !attempt.known_device {
            checks.push(FailureCheck {
                kind: LimitKind::Username,
                key: Self::user_key(attempt),
                max: limits.username.max,
                window: Duration::from_secs(limits.username.window_s.max(1)),
            });
            let tenant = attempt.tenant_id.to_string();
            if let Err(not_until) = self
                .limiter(LimitKind::Tenant, limits.tenant.max, limits.tenant.window())
                .check_key(&tenant)
            {
                return Some((LimitKind::Tenant, not_until.wait_time_from(clock.now())));
            }
        }
        self.hold_failures(&checks, id)
    }

    /// Checks every failure limit and, only if all allow, records the attempt
    /// in each: under one lock, so concurrent attempts cannot overshoot.
    fn hold_failures(&self, checks: &[FailureCheck], id: &str) -> Option<(LimitKind, Duration)> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for check in checks {
            if let Some(log) = failures.get_mut(&check.key) {
                log.window = check.window;
                log.prune(now);
                let max = usize::try_from(self.per_instance(check.max)).unwrap_or(usize::MAX);
                if log.entries.len() >= max {
                    let oldest = log.entries.front().map_or(now, |(at, _)| *at);
                    let retry = check.window.saturating_sub(now.duration_since(oldest));
                    return Some((check.kind, retry.max(Duration::from_millis(1))));
                }
            }
        }
        for check in checks {
            failures
                .entry(check.key.clone())
                .or_insert_with(|| FailureLog {
                    window: check.window,
                    entries: VecDeque::new(),
                })
                .entries
                .push_back((now, id.to_owned()));
        }
        None
    }

    /// The attempt held under `id` succeeded: clear the pair, take the
    /// attempt back from the username.
    pub fn succeeded(&self, attempt: &Attempt, id: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(&Self::pair_key(attempt));
        if let Some(log) = failures.get_mut(&Self::user_key(attempt)) {
            log.remove(id);
        }
    }

    /// The attempt held under `id` ended without a verdict: take it back from
    /// the pair and the username.
    pub fn withdraw(&self, attempt: &Attempt, id: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for key in [Self::pair_key(attempt), Self::user_key(attempt)] {
            if let Some(log) = failures.get_mut(&key) {
                log.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Window;
    use uuid::Uuid;

    fn attempt(username: &str, ip: &str) -> Attempt {
        Attempt {
            tenant_id: Uuid::nil(),
            username: username.to_owned(),
            ip: ip.parse().unwrap(),
            known_device: false,
        }
    }

    #[test]
    fn signing_in_again_and_again_is_never_refused() {
        let fallback = Fallback::new(1);
        let limits = LoginLimits::default();
        let a = attempt("alice", "127.0.0.1");
        for n in 0..30 {
            let id = format!("r{n}");
            assert_eq!(fallback.check(&a, &limits, &id), None, "sign-in {n}");
            fallback.succeeded(&a, &id);
        }
    }

    #[test]
    fn failures_lock_the_pair_and_a_success_elsewhere_does_not_unlock_it() {
        let fallback = Fallback::new(1);
        let limits = LoginLimits::default();
        let a = attempt("bob", "127.0.0.1");
        for n in 0..5 {
            assert_eq!(fallback.check(&a, &limits, &format!("f{n}")), None);
        }
        let (kind, retry) = fallback.check(&a, &limits, "f5").unwrap();
        assert_eq!(kind, LimitKind::Pair);
        assert!(retry > Duration::from_secs(14 * 60), "{retry:?}");
        // Bob signing in from another address resets that pair, not this one.
        let b = attempt("bob", "192.0.2.7");
        assert_eq!(fallback.check(&b, &limits, "ok"), None);
        fallback.succeeded(&b, "ok");
        assert_eq!(
            fallback.check(&a, &limits, "f6").unwrap().0,
            LimitKind::Pair
        );
    }

    #[test]
    fn a_withdrawn_attempt_counts_nowhere() {
        let fallback = Fallback::new(1);
        let limits = LoginLimits::default();
        let a = attempt("carol", "127.0.0.1");
        for n in 0..20 {
            let id = format!("w{n}");
            assert_eq!(fallback.check(&a, &limits, &id), None);
            fallback.withdraw(&a, &id);
        }
    }

    #[test]
    fn the_username_counts_failures_from_every_address_and_divides_by_instances() {
        let fallback = Fallback::new(2);
        let limits = LoginLimits {
            pair: Window {
                max: 100,
                window_s: 60,
            },
            ..LoginLimits::default()
        };
        // 20 per hour shared by 2 instances: 10 here, from ten addresses.
        for n in 0..10 {
            let a = attempt("dave", &format!("198.51.100.{n}"));
            assert_eq!(fallback.check(&a, &limits, &format!("d{n}")), None);
        }
        let a = attempt("dave", "198.51.100.99");
        assert_eq!(
            fallback.check(&a, &limits, "d10").unwrap().0,
            LimitKind::Username
        );
        let known = Attempt {
            known_device: true,
            ..a
        };
        assert_eq!(
            fallback.check(&known, &limits, "k"),
            None,
            "a known device skips it"
        );
    }
}
