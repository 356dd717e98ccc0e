//! One pick per strategy on a loopback Redis: the version resolved and an
//! instance chosen in one script call, over a version with four instances.
//! Needs `GATEHOUSE_BENCH_REDIS_URL` (`scripts/bench` starts a Redis). The
//! percentiles are in `examples/select_latency.rs`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark"
)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_redis::{Keyspace, RedisPool, RedisSettings};
use gatehouse_routing::{PickRequest, Picked, RoutingStore, Rule, SelectSettings, Strategy};

const NOW: u64 = 1_000_000_000;

fn select(c: &mut Criterion) {
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL")
        .expect("GATEHOUSE_BENCH_REDIS_URL (run scripts/bench)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _context = runtime.enter();
    let pool = RedisPool::new(&RedisSettings::new(url)).unwrap();
    let store = RoutingStore::new(
        pool,
        Keyspace::new("bench:routing:"),
        SelectSettings::default(),
    );
    runtime.block_on(async {
        for i in 0..4_u32 {
            let id = format!("i{i}");
            store
                .put_instance(
                    "orders",
                    &id,
                    "v2",
                    100 + i * 50,
                    &format!("127.0.0.1:{}", 9100 + i),
                )
                .await
                .unwrap();
            store
                .heartbeat("orders", &id, Duration::from_secs(3600), NOW)
                .await
                .unwrap();
        }
        let split = Rule::split("v1", "v2", 10_000, "bench", false).unwrap();
        store.set_rule("orders", None, &split).await.unwrap();
    });
    let mut group = c.benchmark_group("routing");
    for strategy in Strategy::ALL {
        group.bench_function(format!("pick_{}", strategy.as_str()), |b| {
            b.iter(|| {
                let request = PickRequest {
                    service: "orders",
                    strategy,
                    tenant: "acme",
                    user: Some("bob"),
                    forced_version: None,
                    now_ms: NOW,
                    lease: true,
                    exclude: None,
                };
                let picked = runtime.block_on(store.pick(&request)).unwrap();
                if let Picked::Instance(pick) = &picked
                    && pick.lease.is_some()
                {
                    runtime
                        .block_on(store.record(
                            "orders",
                            &pick.instance,
                            true,
                            pick.lease.as_deref(),
                            NOW,
                        ))
                        .unwrap();
                }
                picked
            });
        });
    }
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
