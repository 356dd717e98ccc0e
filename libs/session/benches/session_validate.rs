//! Session validation (token → live session) including its Redis round trip,
//! beside a bare Redis PING through the same pool: the floor it is measured
//! against. Needs `GATEHOUSE_BENCH_REDIS_URL` (`scripts/bench` starts a Redis).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark"
)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_core::SystemClock;
use gatehouse_redis::{Keyspace, RedisPool, RedisSettings};
use gatehouse_session::{NewSession, SessionConfig, SessionStore};
use uuid::Uuid;

fn session_validate(c: &mut Criterion) {
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL")
        .expect("GATEHOUSE_BENCH_REDIS_URL (run scripts/bench)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime_context = runtime.enter();
    let pool = RedisPool::new(&RedisSettings::new(url)).unwrap();
    let store = SessionStore::new(
        pool.clone(),
        Keyspace::new("bench:"),
        Arc::new(SystemClock),
        SessionConfig::default(),
    );
    let (token, _) = runtime
        .block_on(store.create(NewSession {
            tenant_id: Uuid::new_v4(),
            tenant_slug: "acme".into(),
            user_id: Uuid::new_v4(),
            username: "alice".into(),
            ip: "203.0.113.7".into(),
            user_agent:
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into(),
        }))
        .unwrap();
    let mut group = c.benchmark_group("session");
    group.bench_function("redis_ping_floor", |b| {
        b.to_async(&runtime)
            .iter(|| async { pool.ping().await.unwrap() });
    });
    group.bench_function("validate_cookie_to_session", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.validate(&token).await.unwrap().unwrap() });
    });
    group.finish();
}

criterion_group!(benches, session_validate);
criterion_main!(benches);
