//! Start-up and the revocation mirror do not scale with the keyspace (issue
//! 11, finding 7): with a million unrelated keys in Redis, `serve` starts and
//! its mirror holds the revocations made before it started.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::{ADMIN_PASSWORD, DEMO_PASSWORD, cheap_argon2, client, json_login};
use gatehouse_testkit::{Gateway, PrivateRedis, TestDatabase, gateway_env, run_gatehouse};

/// Writes `count` unrelated keys (one server-side loop per 100 000).
async fn populate(redis: &PrivateRedis, count: u32) {
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    let cli = std::env::var("GATEHOUSE_TEST_REDIS_SERVER").map_or_else(
        |_| "redis-cli".to_owned(),
        |server| server.replace("redis-server", "redis-cli"),
    );
    for start in (0..count).step_by(100_000) {
        let script = format!(
            "for i = {start}, {} do redis.call('SET', 'unrelated:' .. i, 'x') end return 1",
            (start + 100_000).min(count) - 1
        );
        let status = Command::new(&cli)
            .args(["-p", &port, "EVAL", &script, "0"])
            .stdout(Stdio::null())
            .status()
            .await
            .expect("run redis-cli");
        assert!(status.success(), "populating Redis failed");
    }
}

#[tokio::test]
async fn serve_starts_and_loads_its_mirror_with_a_million_unrelated_keys() {
    let db = TestDatabase::new().await;
    let redis = PrivateRedis::start().await;
    let mut vars = gateway_env(&db, &redis.url(), "gh:");
    vars.extend(cheap_argon2());
    vars.push((
        "GATEHOUSE_TRUSTED_PROXIES".to_owned(),
        "127.0.0.1/32".to_owned(),
    ));
    vars.push((
        "GATEHOUSE_ADMIN_PASSWORD".to_owned(),
        ADMIN_PASSWORD.to_owned(),
    ));
    vars.push((
        "GATEHOUSE_DEMO_PASSWORD".to_owned(),
        DEMO_PASSWORD.to_owned(),
    ));
    assert!(
        run_gatehouse(&["bootstrap", "--demo"], &vars)
            .await
            .status
            .success()
    );
    let first = Gateway::spawn(&vars).await;
    let login = |user: &'static str| {
        let first = &first;
        async move {
            let response = json_login(first, "acme", user, DEMO_PASSWORD).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let alice = login("alice").await;
    let bob = login("bob").await;
    let jwt = bob["access_token"].as_str().unwrap().to_owned();
    let revoked = client()
        .post(first.url("/admin/api/v1/tenants/acme/revocations"))
        .bearer_auth(alice["session_token"].as_str().unwrap())
        .json(&json!({ "access_token": jwt }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 202);
    drop(first);

    populate(&redis, 1_000_000).await;
    // Before the index, this start SCANned the keyspace under one 250 ms
    // deadline and exited 2 ("cannot reach Redis ... timed out").
    let second = Gateway::spawn(&vars).await;
    let verdict = crate::forward_auth(&second, "acme")
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(
        verdict.status(),
        401,
        "the revocation made before start-up is in the new instance's mirror at once"
    );
    let fresh = json_login(&second, "acme", "bob", DEMO_PASSWORD).await;
    let fresh: Value = fresh.json().await.unwrap();
    let allowed = crate::forward_auth(&second, "acme")
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200, "control: an unrevoked token passes");
}
