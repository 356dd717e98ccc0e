//! Redis memory of the throttle's keys when full: a pair window at its limit
//! (5 members), a username window (20 client addresses), an IP window (100).
//! Run by `scripts/bench`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::too_many_lines,
    reason = "measurement tool"
)]

use std::sync::Arc;

use gatehouse_core::SystemClock;
use gatehouse_ratelimit::{Attempt, LoginLimits, Throttle, ThrottleSettings};
use gatehouse_redis::{Keyspace, RedisPool, RedisSettings, redis};
use uuid::Uuid;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL").expect("GATEHOUSE_BENCH_REDIS_URL");
    let pool = RedisPool::new(&RedisSettings::new(url)).unwrap();
    let prefix = format!("mem{}:", &Uuid::new_v4().simple().to_string()[..8]);
    let settings = ThrottleSettings {
        redis_timeout: std::time::Duration::from_secs(1),
        ..ThrottleSettings::default()
    };
    let throttle = Throttle::new(
        pool.clone(),
        Keyspace::new(prefix.clone()),
        Arc::new(SystemClock),
        settings,
    );
    let mut limits = LoginLimits::default();
    limits.username.free_failures = 100;
    let tenant = Uuid::new_v4();
    // 100 attempts from one IP: 5 for one username (fills its pair), then
    // 95 spread over other usernames; the first username then fails from 15
    // more addresses (20 in its window: one member per address).
    for _ in 0..5 {
        let _ = throttle
            .begin(
                &Attempt {
                    tenant_id: tenant,
                    username: "victim".into(),
                    ip: "198.51.100.1".parse().unwrap(),
                    known_device: false,
                },
                &limits,
            )
            .await;
    }
    for i in 0..95 {
        let _ = throttle
            .begin(
                &Attempt {
                    tenant_id: tenant,
                    username: format!("user{i}"),
                    ip: "198.51.100.1".parse().unwrap(),
                    known_device: false,
                },
                &limits,
            )
            .await;
    }
    for i in 0..15 {
        let ip = format!("198.51.100.{}", 2 + i);
        let _ = throttle
            .begin(
                &Attempt {
                    tenant_id: tenant,
                    username: "victim".into(),
                    ip: ip.parse().unwrap(),
                    known_device: false,
                },
                &limits,
            )
            .await;
    }
    let pattern = format!("{prefix}*");
    let keys: Vec<String> = pool
        .run(|mut c| async move { redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await })
        .await
        .unwrap();
    let mut report = Vec::new();
    for key in keys {
        let (card, bytes): (i64, i64) = pool
            .run(|mut c| {
                let key = key.clone();
                async move {
                    let card: i64 = redis::cmd("ZCARD")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .unwrap_or(0);
                    let bytes: i64 = redis::cmd("MEMORY")
                        .arg("USAGE")
                        .arg(&key)
                        .query_async(&mut c)
                        .await?;
                    Ok((card, bytes))
                }
            })
            .await
            .unwrap();
        let kind = if key.contains(":rl:pair:") {
            "pair"
        } else if key.contains(":rl:user:") {
            "username"
        } else if key.contains(":rl:ip:") {
            "ip"
        } else if key.ends_with("rl:all") {
            "tenant"
        } else {
            "lockout index"
        };
        report.push((kind, card, bytes));
    }
    for kind in ["ip", "tenant", "username", "pair"] {
        if let Some(&(_, card, bytes)) = report.iter().filter(|r| r.0 == kind).max_by_key(|r| r.1) {
            println!(
                "{kind:>8} window with {card:>3} attempts: {bytes} bytes ({} bytes/attempt)",
                bytes / card.max(1)
            );
        }
    }
}
