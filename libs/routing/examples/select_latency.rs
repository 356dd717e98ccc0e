//! Selection latency percentiles per strategy on a loopback Redis: 20 000
//! sequential picks each (least connections also closes its lease, as the
//! proxy does). Prints p50 / p99 / max in microseconds.
//!
//!     GATEHOUSE_BENCH_REDIS_URL=redis://127.0.0.1:PORT \
//!       cargo run --release -p gatehouse-routing --example select_latency
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool"
)]

use std::time::{Duration, Instant};

use gatehouse_redis::{Keyspace, RedisPool, RedisSettings};
use gatehouse_routing::{PickRequest, Picked, RoutingStore, Rule, SelectSettings, Strategy};

const NOW: u64 = 1_000_000_000;
const PICKS: usize = 20_000;

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL")
        .expect("GATEHOUSE_BENCH_REDIS_URL (run scripts/bench)");
    let pool = RedisPool::new(&RedisSettings::new(url)).unwrap();
    let store = RoutingStore::new(
        pool,
        Keyspace::new("bench:latency:"),
        SelectSettings::default(),
    );
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
    println!("| strategy | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|");
    for strategy in Strategy::ALL {
        let mut took = Vec::with_capacity(PICKS);
        for n in 0..PICKS + 1000 {
            let user = format!("user-{}", n % 500);
            let request = PickRequest {
                service: "orders",
                strategy,
                tenant: "acme",
                user: Some(&user),
                forced_version: None,
                now_ms: NOW,
                lease: true,
                exclude: None,
            };
            let started = Instant::now();
            let picked = store.pick(&request).await.unwrap();
            let elapsed = started.elapsed();
            let Picked::Instance(pick) = picked else {
                eprintln!("no instance picked: {picked:?}");
                std::process::exit(1);
            };
            if pick.lease.is_some() {
                store
                    .record("orders", &pick.instance, true, pick.lease.as_deref(), NOW)
                    .await
                    .unwrap();
            }
            if n >= 1000 {
                took.push(elapsed);
            }
        }
        took.sort_unstable();
        // Percentile `per_mille` / 1000 of the sorted samples.
        let at =
            |per_mille: usize| micros(took[(took.len() * per_mille / 1000).min(took.len() - 1)]);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            strategy.as_str(),
            at(500),
            at(990),
            micros(took[took.len() - 1])
        );
    }
}
