//! Measures what sessions cost in Redis memory: `MEMORY USAGE` of one session
//! record and of one user's index, and the server's used-memory growth over
//! 10 000 sessions (which includes the active-sessions set and key overhead),
//! then what a refresh-token family adds per session, at issue and after one
//! rotation (the spent token is kept for reuse detection).
//! Run by `scripts/bench` against a private Redis.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "measurement tool"
)]

use std::sync::Arc;

use gatehouse_core::SystemClock;
use gatehouse_redis::{Keyspace, RedisPool, RedisSettings, redis};
use gatehouse_session::{NewSession, RefreshStore, SessionConfig, SessionStore};
use uuid::Uuid;

const SESSIONS: u32 = 10_000;

async fn used_memory(pool: &RedisPool) -> i64 {
    let info: String = pool
        .run(|mut c| async move { redis::cmd("INFO").arg("memory").query_async(&mut c).await })
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL").expect("GATEHOUSE_BENCH_REDIS_URL");
    let mut settings = RedisSettings::new(url);
    settings.command_timeout = std::time::Duration::from_secs(5);
    let pool = RedisPool::new(&settings).unwrap();
    let prefix = format!("mem{}:", &Uuid::new_v4().simple().to_string()[..8]);
    let store = SessionStore::new(
        pool.clone(),
        Keyspace::new(prefix.clone()),
        Arc::new(SystemClock),
        SessionConfig::default(),
    );
    let tenant = Uuid::new_v4();
    let new = |user: Uuid| NewSession {
        tenant_id: tenant,
        tenant_slug: "acme".into(),
        user_id: user,
        username: "alice.example".into(),
        ip: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into(),
    };
    let user = Uuid::new_v4();
    let (token, _) = store.create(new(user)).await.unwrap();
    let session_key = format!("{prefix}{{t:{}}}:s:{}", tenant.simple(), token.id());
    let index_key = format!("{prefix}{{t:{}}}:us:{}", tenant.simple(), user.simple());
    let usage = |key: String| {
        let pool = pool.clone();
        async move {
            pool.run(|mut c| async move {
                redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .unwrap()
        }
    };
    let record = usage(session_key).await;
    let index = usage(index_key).await;

    let before = used_memory(&pool).await;
    let mut sessions = Vec::with_capacity(SESSIONS as usize);
    for _ in 0..SESSIONS {
        sessions.push(store.create(new(Uuid::new_v4())).await.unwrap().1);
    }
    let after = used_memory(&pool).await;
    let per_session = (after - before) / i64::from(SESSIONS);

    let refresh = RefreshStore::new(
        pool.clone(),
        Keyspace::new(prefix.clone()),
        Arc::new(SystemClock),
        gatehouse_session::RefreshKey::derive(&[1u8; 32]),
        gatehouse_session::RefreshLimits::default(),
    );
    let mut tokens = Vec::with_capacity(sessions.len());
    for session in &sessions {
        tokens.push(refresh.issue(session).await.unwrap());
    }
    let issued = used_memory(&pool).await;
    for token in &tokens {
        refresh.rotate(token).await.unwrap();
    }
    let rotated = used_memory(&pool).await;
    let per_family = (issued - after) / i64::from(SESSIONS);
    let per_rotation = (rotated - issued) / i64::from(SESSIONS);
    println!("session record (MEMORY USAGE):         {record} bytes");
    println!("user session index, one member:        {index} bytes");
    println!(
        "used_memory growth per session ({SESSIONS} sessions, one user each, incl. active set): {per_session} bytes"
    );
    #[allow(clippy::cast_precision_loss, reason = "display")]
    let gib = per_session as f64 * 1_000_000.0 / f64::from(1u32 << 30);
    println!("extrapolated for 1M sessions:          {gib:.2} GiB");
    println!("refresh family at issue (family + first token), per session: {per_family} bytes");
    println!(
        "after one rotation, added per session (the family hash only; no key per token): {per_rotation} bytes"
    );
}
