//! One login-throttle decision: the pipelined round trip carrying the IP
//! window script and the tenant login script, beside a PING floor through the
//! same pool. Needs `GATEHOUSE_BENCH_REDIS_URL` (`scripts/bench` starts Redis).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark"
)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_core::SystemClock;
use gatehouse_ratelimit::{Attempt, Decision, LoginLimits, Throttle, ThrottleSettings, Window};
use gatehouse_redis::{Keyspace, RedisPool, RedisSettings};
use uuid::Uuid;

fn throttle_decision(c: &mut Criterion) {
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL")
        .expect("GATEHOUSE_BENCH_REDIS_URL (run scripts/bench)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _context = runtime.enter();
    let pool = RedisPool::new(&RedisSettings::new(url)).unwrap();
    let throttle = Throttle::new(
        pool.clone(),
        Keyspace::new("bench:"),
        Arc::new(SystemClock),
        ThrottleSettings {
            redis_timeout: Duration::from_secs(1),
            ..ThrottleSettings::default()
        },
    );
    // Limits high enough that every decision is "allowed" (the full path:
    // count, decide, reserve), with a 1 s window so the sets stay small.
    let wide = Window {
        max: 1_000_000_000,
        window_s: 1,
    };
    let mut limits = LoginLimits {
        pair: wide,
        ip: wide,
        tenant: wide,
        ..LoginLimits::default()
    };
    limits.username.max = 1_000_000_000;
    limits.username.free_failures = 1_000_000_000;
    limits.username.window_s = 1;
    let attempt = Attempt {
        tenant_id: Uuid::new_v4(),
        username: "alice".into(),
        ip: "198.51.100.7".parse().unwrap(),
        known_device: false,
    };
    let mut group = c.benchmark_group("throttle");
    group.bench_function("redis_ping_floor", |b| {
        b.to_async(&runtime)
            .iter(|| async { pool.ping().await.unwrap() });
    });
    group.bench_function("login_decision", |b| {
        b.to_async(&runtime).iter(|| async {
            match throttle.begin(&attempt, &limits).await {
                Decision::Allowed(ticket) => {
                    assert!(!ticket.fallback, "Redis must decide in the benchmark");
                }
                Decision::Throttled { .. } => unreachable!("limits are wide open"),
            }
        });
    });
    group.finish();
}

criterion_group!(benches, throttle_decision);
criterion_main!(benches);
