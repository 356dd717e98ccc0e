//! The in-process limiter used while Redis is unreachable: `governor` (GCRA)
//! keyed limiters, one per limit kind and quota, each limit divided by the
//! number of instances expected to share the traffic. It counts attempts
//! rather than failures (it cannot refund in-flight reservations cheaply), so
//! it is stricter than the Redis path, never looser.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl Fallback {
    /// Fallback limits for `instances` gateway instances sharing the load.
    #[must_use]
    pub fn new(instances: u32) -> Self {
        Self {
            instances: instances.max(1),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    fn limiter(&self, kind: LimitKind, max: u32, window: Duration) -> Limiter {
        let per_instance = (max / self.instances).max(1);
        let key = (
            kind,
            per_instance,
            u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        );
        let mut limiters = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bound the memory of stale keys: each limiter forgets idle keys.
        for limiter in limiters.values() {
            if limiter.len() > 100_000 {
                limiter.retain_recent();
            }
        }
        limiters
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

    /// `None` to allow, or the limit that refuses and when to retry.
    pub fn check(&self, attempt: &Attempt, limits: &LoginLimits) -> Option<(LimitKind, Duration)> {
        let user = Keyspace::digest(&format!("{}\u{0}{}", attempt.tenant_id, attempt.username));
        let pair = Keyspace::digest(&format!(
            "{}\u{0}{}\u{0}{}",
            attempt.tenant_id, attempt.username, attempt.ip
        ));
        let mut checks = vec![
            (
                LimitKind::Ip,
                limits.ip.max,
                limits.ip.window(),
                ip_bucket(attempt.ip),
            ),
            (LimitKind::Pair, limits.pair.max, limits.pair.window(), pair),
        ];
        if !attempt.known_device {
            let window = Duration::from_secs(limits.username.window_s.max(1));
            checks.push((LimitKind::Username, limits.username.max, window, user));
        }
        checks.push((
            LimitKind::Tenant,
            limits.tenant.max,
            limits.tenant.window(),
            attempt.tenant_id.to_string(),
        ));
        let clock = DefaultClock::default();
        for (kind, max, window, key) in checks {
            if let Err(not_until) = self.limiter(kind, max, window).check_key(&key) {
                return Some((kind, not_until.wait_time_from(clock.now())));
            }
        }
        None
    }
}
