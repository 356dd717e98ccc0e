//! Selection in the gateway's memory: the fast path for strategies that need
//! no state shared between gateways (health-weighted random and rendezvous
//! hashing by user), and the fallback for every strategy while Redis is away.
//!
//! It chooses exactly as the Lua scripts do from the same inputs: the same
//! weight × health shares, the same rendezvous scores over the same SHA-1, the
//! same panic rule. Its inputs are the mirrored configuration and a
//! [`HealthView`] (which instances are live, which breakers are open, their
//! health) that the gateway reads from Redis a few times a second, so a
//! breaker opened by another gateway is seen here within that interval.
//! Without a view (Redis away), every configured instance counts as live,
//! closed and fully healthy.

use sha1::{Digest as _, Sha1};

use crate::select::{HealthView, MirroredInstance, Strategy};

/// One local pick's inputs.
#[derive(Debug, Clone, Copy)]
pub struct LocalRequest<'a> {
    /// The strategy (only [`Strategy::Random`] and [`Strategy::UserHash`]
    /// have a local form; any other is served as weighted random).
    pub strategy: Strategy,
    /// The version whose instances are candidates.
    pub version: &'a str,
    /// The sticky key for user hashing (the user id, else the tenant id).
    pub key: &'a str,
    /// An instance to leave out (a retry).
    pub exclude: Option<&'a str>,
    /// Now (ms), against breaker deadlines.
    pub now_ms: u64,
    /// Randomness in `[0, 2^32)`.
    pub random: u32,
    /// The panic threshold (%).
    pub panic_percent: u8,
}

/// The chosen instance and whether panic mode chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChoice<'a> {
    /// The instance.
    pub instance: &'a MirroredInstance,
    /// Most instances were unhealthy: every live one was a candidate.
    pub panic: bool,
}

/// Chooses an instance of `request.version` among `instances` as the Lua
/// scripts would (see the module doc); `None` when no instance can take it.
#[must_use]
pub fn choose<'a>(
    instances: &'a [MirroredInstance],
    view: Option<&HealthView>,
    request: &LocalRequest<'_>,
) -> Option<LocalChoice<'a>> {
    let mut alive: Vec<&MirroredInstance> = instances
        .iter()
        .filter(|i| i.version == request.version && i.weight > 0)
        .filter(|i| Some(i.id.as_str()) != request.exclude)
        .filter(|i| view.is_none_or(|v| v.alive.contains(&i.id)))
        .collect();
    alive.sort_by(|a, b| a.id.cmp(&b.id));
    let healthy: Vec<&MirroredInstance> = alive
        .iter()
        .copied()
        .filter(|i| {
            view.and_then(|v| v.open_until.get(&i.id))
                .is_none_or(|until| request.now_ms >= *until)
        })
        .collect();
    let panic =
        !alive.is_empty() && healthy.len() * 100 < alive.len() * usize::from(request.panic_percent);
    let pool = if panic { alive } else { healthy };
    if pool.is_empty() {
        return None;
    }
    let instance = if request.strategy == Strategy::UserHash {
        rendezvous(&pool, request.key)
    } else {
        weighted_by_health(&pool, view, request.random)
    };
    Some(LocalChoice { instance, panic })
}

/// Weighted random by weight × health (1-100), as `lua/route_pick_random.lua`.
fn weighted_by_health<'a>(
    pool: &[&'a MirroredInstance],
    view: Option<&HealthView>,
    random: u32,
) -> &'a MirroredInstance {
    let health = |id: &str| view.and_then(|v| v.health.get(id).copied()).unwrap_or(100);
    let shares: Vec<u64> = pool
        .iter()
        .map(|i| u64::from(i.weight) * u64::from(health(&i.id).max(1)))
        .collect();
    let total: u64 = shares.iter().sum();
    let mut ticket = u64::from(random) % total.max(1);
    for (instance, share) in pool.iter().zip(&shares) {
        if ticket < *share {
            return instance;
        }
        ticket -= share;
    }
    pool[pool.len() - 1]
}

/// Weighted rendezvous hashing: the instance with the highest
/// `-weight / ln(h / 2^32)` for `h` from SHA-1 of `key|id` (the same score as
/// `lua/route_pick_hash.lua`, so both paths send a user to the same place).
fn rendezvous<'a>(pool: &[&'a MirroredInstance], key: &str) -> &'a MirroredInstance {
    let mut best = pool[0];
    let mut best_score = f64::NEG_INFINITY;
    for instance in pool {
        let digest = Sha1::digest(format!("{key}|{}", instance.id).as_bytes());
        let h = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let score = -f64::from(instance.weight) / ((f64::from(h) + 1.0) / 4_294_967_297.0).ln();
        if score > best_score {
            best = instance;
            best_score = score;
        }
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn instance(id: &str, weight: u32) -> MirroredInstance {
        MirroredInstance {
            id: id.to_owned(),
            version: "v1".to_owned(),
            weight,
            address: format!("127.0.0.1:{}", 9000 + weight),
            is_static: true,
        }
    }

    fn request(strategy: Strategy, random: u32) -> LocalRequest<'static> {
        LocalRequest {
            strategy,
            version: "v1",
            key: "user-1",
            exclude: None,
            now_ms: 1_000,
            random,
            panic_percent: 50,
        }
    }

    #[test]
    fn an_open_breaker_or_a_lapsed_heartbeat_leaves_an_instance_out() {
        let all = [instance("a", 1), instance("b", 1), instance("c", 1)];
        let view = HealthView {
            alive: ["a", "b"].into_iter().map(str::to_owned).collect(),
            open_until: [("a".to_owned(), 5_000)].into_iter().collect(),
            health: HashMap::new(),
        };
        for n in 0..50 {
            let choice = choose(&all, Some(&view), &request(Strategy::Random, n)).unwrap();
            assert_eq!(choice.instance.id, "b");
            assert!(!choice.panic);
        }
        // Past its deadline the breaker lets requests through again.
        let later = LocalRequest {
            now_ms: 6_000,
            ..request(Strategy::Random, 0)
        };
        assert_eq!(choose(&all, Some(&view), &later).unwrap().instance.id, "a");
    }

    #[test]
    fn most_breakers_open_means_panic_over_every_live_instance() {
        let all = [instance("a", 1), instance("b", 1), instance("c", 1)];
        let view = HealthView {
            alive: ["a", "b", "c"].into_iter().map(str::to_owned).collect(),
            open_until: [("a".to_owned(), 5_000), ("b".to_owned(), 5_000)]
                .into_iter()
                .collect(),
            health: HashMap::new(),
        };
        let choice = choose(&all, Some(&view), &request(Strategy::Random, 0)).unwrap();
        assert!(choice.panic);
        let none = HealthView::default();
        assert!(choose(&all, Some(&none), &request(Strategy::Random, 0)).is_none());
    }

    #[test]
    fn weighted_random_follows_weight_times_health() {
        let all = [instance("a", 1), instance("b", 1)];
        let view = HealthView {
            alive: ["a", "b"].into_iter().map(str::to_owned).collect(),
            open_until: HashMap::new(),
            health: [("b".to_owned(), 25)].into_iter().collect(),
        };
        let mut b = 0;
        for n in 0..12_500u32 {
            let r = n.wrapping_mul(2_654_435_761);
            if choose(&all, Some(&view), &request(Strategy::Random, r))
                .unwrap()
                .instance
                .id
                == "b"
            {
                b += 1;
            }
        }
        // b's share: 25 / 125 = 20%.
        assert!((2_200..=2_800).contains(&b), "{b}");
    }

    #[test]
    fn user_hashing_is_sticky_and_spreads_users() {
        let all = [instance("a", 1), instance("b", 1), instance("c", 1)];
        let mut seen = HashSet::new();
        for user in 0..60 {
            let key = format!("user-{user}");
            let at = |random| {
                let r = LocalRequest {
                    key: &key,
                    ..request(Strategy::UserHash, random)
                };
                choose(&all, None, &r).unwrap().instance.id.clone()
            };
            let first = at(1);
            assert_eq!(first, at(999), "sticky whatever the randomness");
            seen.insert(first);
        }
        assert_eq!(seen.len(), 3);
    }
}
