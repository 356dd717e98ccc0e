//! Login throttling against a real Redis, with a manual clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_pass_by_value,
    reason = "tests"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::ManualClock;
use gatehouse_ratelimit::{
    Attempt, Decision, LimitKind, LoginLimits, Throttle, ThrottleSettings, Ticket,
};
use gatehouse_redis::{Keyspace, RedisPool};
use gatehouse_testkit::{PrivateRedis, TestRedis};
use uuid::Uuid;

fn clock() -> ManualClock {
    ManualClock::at(time::macros::datetime!(2026-03-01 09:00 UTC))
}

fn throttle_on(url: &str, prefix: &str, clock: &ManualClock) -> Throttle {
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(url)).unwrap();
    let settings = ThrottleSettings {
        // Generous for a loaded CI machine; production default is 50 ms.
        redis_timeout: Duration::from_millis(500),
        breaker_open_for: Duration::from_millis(200),
        expected_instances: 1,
    };
    Throttle::new(
        pool,
        Keyspace::new(prefix),
        Arc::new(clock.clone()),
        settings,
    )
}

fn throttle(clock: &ManualClock) -> Throttle {
    let redis = TestRedis::shared();
    throttle_on(&redis.url, &redis.prefix, clock)
}

fn attempt(tenant: Uuid, username: &str, ip: &str) -> Attempt {
    Attempt {
        tenant_id: tenant,
        username: username.into(),
        ip: ip.parse::<IpAddr>().unwrap(),
        known_device: false,
    }
}

fn allowed(decision: Decision) -> Ticket {
    match decision {
        Decision::Allowed(ticket) => ticket,
        Decision::Throttled { limit, retry_after } => {
            panic!("throttled by {limit:?} for {retry_after:?}")
        }
    }
}

fn refused(decision: Decision) -> (LimitKind, Duration) {
    match decision {
        Decision::Throttled { limit, retry_after } => (limit, retry_after),
        Decision::Allowed(_) => panic!("expected a refusal"),
    }
}

#[tokio::test]
async fn the_sixth_failure_of_a_pair_is_throttled_until_the_window_slides() {
    let clock = clock();
    let t = throttle(&clock);
    let limits = LoginLimits::default();
    let a = attempt(Uuid::new_v4(), "alice", "198.51.100.1");
    for _ in 0..5 {
        allowed(t.begin(&a, &limits).await); // each counts as a failure
        clock.advance(time::Duration::minutes(1));
    }
    let (limit, retry) = refused(t.begin(&a, &limits).await);
    assert_eq!(limit, LimitKind::Pair);
    assert_eq!(
        retry,
        Duration::from_secs(10 * 60),
        "oldest failure (t=0) leaves the 15 min window at t=15"
    );
    clock.advance(time::Duration::minutes(10) - time::Duration::seconds(1));
    refused(t.begin(&a, &limits).await);
    // Sliding, not fixed: one slot frees when the oldest failure ages out,
    // not a whole new window's worth.
    clock.advance(time::Duration::seconds(1));
    allowed(t.begin(&a, &limits).await);
    assert_eq!(refused(t.begin(&a, &limits).await).0, LimitKind::Pair);
}

#[tokio::test]
async fn concurrent_attempts_are_never_granted_more_than_the_limit() {
    let clock = clock();
    let t = throttle(&clock);
    let limits = LoginLimits::default();
    let a = attempt(Uuid::new_v4(), "alice", "198.51.100.2");
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (t, a) = (t.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            matches!(t.begin(&a, &limits).await, Decision::Allowed(_))
        }));
    }
    let mut granted = 0;
    for task in tasks {
        if task.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 5, "exactly the pair limit, never more");
}

#[tokio::test]
async fn one_ip_cycling_usernames_is_stopped_by_the_ip_limit() {
    let clock = clock();
    let t = throttle(&clock);
    let limits = LoginLimits::default();
    let tenant = Uuid::new_v4();
    for i in 0..100 {
        allowed(
            t.begin(
                &attempt(tenant, &format!("user{i}"), "203.0.113.5"),
                &limits,
            )
            .await,
        );
    }
    let (limit, _) = refused(
        t.begin(&attempt(tenant, "user-next", "203.0.113.5"), &limits)
            .await,
    );
    assert_eq!(limit, LimitKind::Ip);
    // Another address in the same IPv6 /64 shares a bucket; another /64 does not.
    for i in 0..100 {
        allowed(
            t.begin(
                &attempt(tenant, &format!("v6user{i}"), "2001:db8:1:2::1"),
                &limits,
            )
            .await,
        );
    }
    assert_eq!(
        refused(
            t.begin(&attempt(tenant, "x", "2001:db8:1:2:ffff::9"), &limits)
                .await
        )
        .0,
        LimitKind::Ip
    );
    allowed(
        t.begin(&attempt(tenant, "x", "2001:db8:1:3::1"), &limits)
            .await,
    );
}

#[tokio::test]
async fn a_flood_from_many_ips_backs_off_the_username_but_a_known_device_gets_through() {
    let clock = clock();
    let t = throttle(&clock);
    let limits = LoginLimits::default();
    let tenant = Uuid::new_v4();
    // 8 attackers, one guess each, one second apart.
    let mut refusals = 0;
    for i in 0..8 {
        if matches!(
            t.begin(&attempt(tenant, "victim", &format!("192.0.2.{i}")), &limits)
                .await,
            Decision::Throttled { .. }
        ) {
            refusals += 1;
        }
        clock.advance(time::Duration::seconds(1));
    }
    assert!(
        refusals > 0,
        "username backoff kicked in after the free failures"
    );
    let (limit, retry) = refused(
        t.begin(&attempt(tenant, "victim", "198.51.100.77"), &limits)
            .await,
    );
    assert_eq!(limit, LimitKind::Username);
    assert!(retry <= Duration::from_secs(15 * 60), "backoff is capped");
    let mut known = attempt(tenant, "victim", "198.51.100.77");
    known.known_device = true;
    allowed(t.begin(&known, &limits).await);
}

#[tokio::test]
async fn username_backoff_grows_and_stays_capped_never_permanent() {
    let clock = clock();
    let t = throttle(&clock);
    let limits = LoginLimits::default();
    let tenant = Uuid::new_v4();
    let mut gaps = Vec::new();
    for i in 0..12u32 {
        let a = attempt(tenant, "bob", &format!("10.1.0.{i}"));
        loop {
            match t.begin(&a, &limits).await {
                Decision::Allowed(_) => break,
                Decision::Throttled { retry_after, limit } => {
                    assert_eq!(limit, LimitKind::Username);
                    gaps.push(retry_after);
                    clock.advance(time::Duration::try_from(retry_after).unwrap());
                }
            }
        }
    }
    let secs: Vec<u64> = gaps.iter().map(Duration::as_secs).collect();
    assert_eq!(
        &secs[..4],
        &[1, 2, 4, 8],
        "doubling from 1 s after 5 free failures: {secs:?}"
    );
    assert!(gaps.iter().all(|g| *g <= Duration::from_secs(15 * 60)));
}

#[tokio::test]
async fn success_resets_the_pair_counter_but_not_the_ip_counter() {
    let clock = clock();
    let t = throttle(&clock);
    let mut limits = LoginLimits::default();
    limits.ip.max = 6;
    let a = attempt(Uuid::new_v4(), "carol", "198.51.100.9");
    for _ in 0..4 {
        allowed(t.begin(&a, &limits).await);
    }
    let ticket = allowed(t.begin(&a, &limits).await);
    t.succeeded(&a, &ticket).await;
    // Pair is clear again...
    allowed(t.begin(&a, &limits).await);
    // ...but the IP has used its 6 attempts.
    assert_eq!(refused(t.begin(&a, &limits).await).0, LimitKind::Ip);
}

#[tokio::test]
async fn lockouts_are_listed_per_tenant_and_can_be_cleared() {
    let clock = clock();
    let t = throttle(&clock);
    let limits = LoginLimits::default();
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    let a = attempt(tenant, "dave", "198.51.100.10");
    for _ in 0..5 {
        allowed(t.begin(&a, &limits).await);
    }
    refused(t.begin(&a, &limits).await);
    let lockouts = t.lockouts(tenant).await.unwrap();
    assert_eq!(lockouts.len(), 1);
    assert_eq!(
        (lockouts[0].kind.as_str(), lockouts[0].username.as_str()),
        ("pair", "dave")
    );
    assert_eq!(lockouts[0].ip.as_deref(), Some("198.51.100.10"));
    assert!(
        t.lockouts(other).await.unwrap().is_empty(),
        "another tenant sees nothing"
    );
    assert!(
        !t.clear(other, &lockouts[0].id).await.unwrap(),
        "nor can it clear it"
    );
    assert!(t.clear(tenant, &lockouts[0].id).await.unwrap());
    assert!(t.lockouts(tenant).await.unwrap().is_empty());
    allowed(t.begin(&a, &limits).await);
    assert!(!t.clear(tenant, "bogus").await.unwrap());
}

#[tokio::test]
async fn with_redis_down_the_fallback_still_throttles_and_redis_resumes_after() {
    let clock = clock();
    let mut redis = PrivateRedis::start().await;
    let t = throttle_on(&redis.url(), "gh:", &clock);
    let limits = LoginLimits::default();
    let a = attempt(Uuid::new_v4(), "erin", "198.51.100.11");
    assert!(!allowed(t.begin(&a, &limits).await).fallback);
    redis.stop().await;
    let mut granted = 0;
    for _ in 0..10 {
        match t.begin(&a, &limits).await {
            Decision::Allowed(ticket) => {
                assert!(ticket.fallback);
                granted += 1;
            }
            Decision::Throttled { limit, .. } => assert_eq!(limit, LimitKind::Pair),
        }
    }
    assert_eq!(
        granted, 5,
        "the in-process limiter applies the pair limit (one instance)"
    );
    redis.resume().await;
    let mut back = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let other = attempt(a.tenant_id, "frank", "198.51.100.12");
        if let Decision::Allowed(ticket) = t.begin(&other, &limits).await
            && !ticket.fallback
        {
            back = true;
            break;
        }
    }
    assert!(back, "decisions come from Redis again once it is back");
}

/// A Redis hiccup must not turn a user's repeated sign-ins into a lockout:
/// the fallback counts failures as Redis does, so successes reset the pair.
/// (Before, the sixth sign-in of one user from one address within 15 minutes
/// was refused whenever the fallback decided: the browser suite saw it.)
#[tokio::test]
async fn with_redis_down_a_user_signing_in_again_and_again_is_not_refused() {
    let clock = clock();
    let mut redis = PrivateRedis::start().await;
    let t = throttle_on(&redis.url(), "gh:", &clock);
    let limits = LoginLimits::default();
    let a = attempt(Uuid::new_v4(), "hana", "198.51.100.14");
    redis.stop().await;
    for n in 0..12 {
        match t.reserve(&a, &limits).await {
            Ok(reservation) => reservation.succeeded().await,
            Err((limit, _)) => panic!("sign-in {n} refused by the {} limit", limit.as_str()),
        }
    }
    // Failures still lock the pair after its five.
    for _ in 0..5 {
        t.reserve(&a, &limits)
            .await
            .expect("within the pair budget")
            .failed();
    }
    let (limit, _) = t.reserve(&a, &limits).await.expect_err("the sixth failure");
    assert_eq!(limit, LimitKind::Pair);
}

#[tokio::test]
async fn decisions_survive_a_flushed_script_cache() {
    let clock = clock();
    let redis = PrivateRedis::start().await;
    let t = throttle_on(&redis.url(), "gh:", &clock);
    let limits = LoginLimits::default();
    let a = attempt(Uuid::new_v4(), "gina", "198.51.100.13");
    assert!(!allowed(t.begin(&a, &limits).await).fallback);
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(redis.url())).unwrap();
    pool.run(|mut c| async move {
        gatehouse_redis::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut c)
            .await
    })
    .await
    .unwrap();
    assert!(
        !allowed(t.begin(&a, &limits).await).fallback,
        "scripts are reloaded, not bypassed"
    );
}

/// The username counts failures, not addresses: four addresses that each
/// stay inside their pair budget (5) still add up, so the username backs off
/// after its free failures instead of allowing 4 x 5 guesses without pause.
/// The real user on a known device is not held back.
#[tokio::test]
async fn failures_from_any_number_of_addresses_count_against_the_username() {
    let clock = clock();
    let t = throttle(&clock);
    let mut limits = LoginLimits::default();
    limits.username.backoff_base_ms = 60_000;
    let tenant = Uuid::new_v4();
    for i in 0..5 {
        allowed(
            t.begin(
                &attempt(tenant, "victim", &format!("192.0.2.{}", i % 4)),
                &limits,
            )
            .await,
        );
        clock.advance(time::Duration::seconds(1));
    }
    // The sixth failure, from a fourth address with its pair budget intact.
    let (limit, retry) = refused(
        t.begin(&attempt(tenant, "victim", "192.0.2.3"), &limits)
            .await,
    );
    assert_eq!(limit, LimitKind::Username);
    assert!(retry > Duration::from_secs(50), "{retry:?}");
    let mut known = attempt(tenant, "victim", "198.51.100.200");
    known.known_device = true;
    allowed(t.begin(&known, &limits).await);
}

/// One window per client IP, shared by every tenant: an address cannot get
/// the IP limit again by moving to another tenant.
#[tokio::test]
async fn the_ip_limit_is_shared_by_every_tenant() {
    let clock = clock();
    let t = throttle(&clock);
    let mut limits = LoginLimits::default();
    limits.ip.max = 4;
    let (acme, globex) = (Uuid::new_v4(), Uuid::new_v4());
    for i in 0..2 {
        allowed(
            t.begin(&attempt(acme, &format!("a{i}"), "203.0.113.5"), &limits)
                .await,
        );
        allowed(
            t.begin(&attempt(globex, &format!("g{i}"), "203.0.113.5"), &limits)
                .await,
        );
    }
    let (limit, _) = refused(
        t.begin(&attempt(globex, "g9", "203.0.113.5"), &limits)
            .await,
    );
    assert_eq!(limit, LimitKind::Ip);
    allowed(
        t.begin(&attempt(globex, "g9", "203.0.113.6"), &limits)
            .await,
    );
}

/// A flood of random usernames from many addresses can fill the tenant's
/// ceiling, but not for a known device.
#[tokio::test]
async fn a_tenant_flood_does_not_lock_out_known_devices() {
    let clock = clock();
    let t = throttle(&clock);
    let mut limits = LoginLimits::default();
    limits.tenant.max = 30;
    let tenant = Uuid::new_v4();
    for i in 0..30 {
        allowed(
            t.begin(
                &attempt(
                    tenant,
                    &format!("random-{i}"),
                    &format!("2001:db8:{i:x}::1"),
                ),
                &limits,
            )
            .await,
        );
    }
    let (limit, _) = refused(
        t.begin(&attempt(tenant, "alice", "198.51.100.1"), &limits)
            .await,
    );
    assert_eq!(limit, LimitKind::Tenant);
    let mut known = attempt(tenant, "alice", "198.51.100.1");
    known.known_device = true;
    allowed(t.begin(&known, &limits).await);
}

#[tokio::test]
async fn rotating_addresses_inside_one_ipv6_64_is_one_pair() {
    let clock = clock();
    let t = throttle(&clock);
    let limits = LoginLimits::default();
    let tenant = Uuid::new_v4();
    for i in 1..=5 {
        allowed(
            t.begin(
                &attempt(tenant, "victim", &format!("2001:db8:9:9::{i}")),
                &limits,
            )
            .await,
        );
    }
    let (limit, _) = refused(
        t.begin(&attempt(tenant, "victim", "2001:db8:9:9::ffff"), &limits)
            .await,
    );
    assert_eq!(limit, LimitKind::Pair);
}

/// A reservation dropped without a verdict (the client went away and its
/// request was cancelled mid-hash) is withdrawn: it leaves no phantom
/// failure that would push the username into backoff.
#[tokio::test]
async fn a_reservation_dropped_without_a_verdict_is_withdrawn() {
    let clock = clock();
    let t = throttle(&clock);
    let mut limits = LoginLimits::default();
    limits.username.free_failures = 1;
    limits.username.backoff_base_ms = 600_000;
    let tenant = Uuid::new_v4();
    let first = t
        .reserve(&attempt(tenant, "carol", "192.0.2.1"), &limits)
        .await
        .unwrap();
    drop(first);
    // The withdrawal runs in the background; once it has, another address
    // finds the username free of failures (with one free failure, a phantom
    // would mean a ten-minute backoff).
    let started = std::time::Instant::now();
    loop {
        match t
            .reserve(&attempt(tenant, "carol", "192.0.2.2"), &limits)
            .await
        {
            Ok(reservation) => {
                reservation.succeeded().await;
                break;
            }
            Err((limit, _)) => {
                assert_eq!(limit, LimitKind::Username);
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the dropped reservation was never withdrawn"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // A wrong password, reported as such, does count.
    t.reserve(&attempt(tenant, "carol", "192.0.2.3"), &limits)
        .await
        .unwrap()
        .failed();
    let (limit, _) = t
        .reserve(&attempt(tenant, "carol", "192.0.2.4"), &limits)
        .await
        .unwrap_err();
    assert_eq!(limit, LimitKind::Username);
}
