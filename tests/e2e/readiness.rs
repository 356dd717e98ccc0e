//! Liveness, readiness and recovery without a restart.

use std::time::Duration;

use gatehouse_testkit::{Gateway, PrivateRedis, TestDatabase, gateway_env};

use crate::{client, expect_problem, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_dependencies_are_up() {
    let (gateway, _db) = spawn_app().await;
    let http = client();
    let health = http.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
}

async fn readyz_status(http: &reqwest::Client, gateway: &Gateway) -> reqwest::Response {
    http.get(gateway.url("/readyz")).send().await.unwrap()
}

#[tokio::test]
async fn readyz_names_redis_while_it_is_down_and_recovers_without_restart() {
    let db = TestDatabase::new().await;
    let mut redis = PrivateRedis::start().await;
    let gateway = Gateway::spawn(&gateway_env(&db, &redis.url(), "gh:")).await;
    let http = client();
    assert_eq!(readyz_status(&http, &gateway).await.status(), 200);

    redis.stop().await;
    // The answer is at most a second old (bounded: 30 x 100 ms).
    let mut down = None;
    for _ in 0..30 {
        let response = readyz_status(&http, &gateway).await;
        if response.status() == 503 {
            down = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = expect_problem(down.expect("readyz turned 503"), 503).await;
    assert_eq!(body["failing"], serde_json::json!(["redis"]));
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "unavailable");
    assert!(body["detail"].as_str().unwrap().contains("redis"));

    redis.resume().await;
    // The pool reconnects on demand; allow a few probes for the dead
    // connections to be recycled (bounded: 50 x 100 ms).
    let mut recovered = false;
    for _ in 0..50 {
        if readyz_status(&http, &gateway).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "readyz did not return to 200 after Redis came back"
    );
}

#[tokio::test]
async fn readyz_answers_quickly_enough_to_be_a_probe_when_redis_is_down() {
    // Not a timing assertion: the probe must answer at all (no hang) while
    // Redis refuses connections; the client's own timeout is the bound.
    let db = TestDatabase::new().await;
    let mut redis = PrivateRedis::start().await;
    let gateway = Gateway::spawn(&gateway_env(&db, &redis.url(), "gh:")).await;
    redis.stop().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = http
            .get(gateway.url("/readyz"))
            .send()
            .await
            .expect("readyz answered");
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
    }
}

#[tokio::test]
async fn sigterm_stops_the_gateway_cleanly() {
    let (gateway, _db) = spawn_app().await;
    assert_eq!(
        client()
            .get(gateway.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let status = gateway.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_flood_of_readiness_probes_asks_the_stores_about_once_a_second() {
    let db = TestDatabase::new().await;
    let redis = PrivateRedis::start().await;
    let gateway = Gateway::spawn(&gateway_env(&db, &redis.url(), "gh:")).await;
    let http = client();
    let pings = || async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = pings().await;
    let started = std::time::Instant::now();
    for _ in 0..200 {
        assert_eq!(readyz_status(&http, &gateway).await.status(), 200);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let asked = pings().await - before;
    // One ping per second of the flood (plus one in flight at each edge),
    // where each probe used to cost one.
    assert!(
        asked <= seconds + 2,
        "{asked} pings for 200 probes in {seconds} s"
    );
}
