//! The in-process limiter used while Redis is unreachable: `governor` (GCRA)
//! keyed limiters, one per limit kind and quota, each limit divided by the
//! number of instances expected to share the traffic. It counts attempts
//! rather than failures (it cannot refund in-flight reservations) and every
//! attempt counts towards the username. GCRA is not a sliding log: it allows a
//! burst of the limit and then a steady rate of limit-per-window, so over one
//! window it can admit up to about twice the limit. That is the price of a
//! lock-free, per-process limiter for the length of an outage.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_redis::Keyspace;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{Attempt, LimitKind, LoginLimits, ip_bucket};

type Limiter = Arc<DefaultKeyedRateLimiter<String>>;

/// Per-instance fallback limits.
#[derive(Debug)]
pub struct Fallback {
    instances: u32,
    limiters: Mutex<HashMap<(LimitKind, u32, u64), Limiter>>,
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
            last_sweep_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn limiter(&self, kind: LimitKind, max: u32, window: Duration) -> Limiter {
        let per_instance = (max / self.instances).max(1);
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

    /// Drops keys whose limiters are back to full, at most once a second and
    /// outside the map lock, so memory stays bounded during a long outage
    /// without every call paying for it.
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
    }

    /// `None` to allow, or the limit that refuses and when to retry.
    pub fn check(&self, attempt: &Attempt, limits: &LoginLimits) -> Option<(LimitKind, Duration)> {
        self.sweep();
        let bucket = ip_bucket(attempt.ip);
        let tenant = attempt.tenant_id;
        let user = Keyspace::digest(&format!("{tenant}\u{0}{}", attempt.username));
        let pair = Keyspace::digest(&format!("{tenant}\u{0}{}\u{0}{bucket}", attempt.username));
        // The IP window is shared by every tenant, as in Redis; a known
        // device skips the username limit and the tenant ceiling.
        let mut checks = vec![
            (LimitKind::Ip, limits.ip.max, limits.ip.window(), bucket),
            (LimitKind::Pair, limits.pair.max, limits.pair.window(), pair),
        ];
        if !attempt.known_device {
            let window = Duration::from_secs(limits.username.window_s.max(1));
            checks.push((LimitKind::Username, limits.username.max, window, user));
            checks.push((
                LimitKind::Tenant,
                limits.tenant.max,
                limits.tenant.window(),
                tenant.to_string(),
            ));
        }
        let clock = DefaultClock::default();
        for (kind, max, window, key) in checks {
            if let Err(not_until) = self.limiter(kind, max, window).check_key(&key) {
                return Some((kind, not_until.wait_time_from(clock.now())));
            }
        }
        None
    }
}
