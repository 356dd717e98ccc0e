//! The JSON sign-in API: `/v1/auth/*`.

use serde_json::{Value, json};

use crate::{DEMO_PASSWORD, client, expect_problem, json_login, seeded_app, session_token};
use gatehouse_testkit::{Gateway, run_gatehouse};

async fn login(gateway: &Gateway, username: &str, password: &str) -> reqwest::Response {
    json_login(gateway, "acme", username, password).await
}

async fn token_for(gateway: &Gateway, username: &str) -> String {
    session_token(gateway, "acme", username, DEMO_PASSWORD).await
}

async fn me(gateway: &Gateway, token: &str) -> reqwest::Response {
    client()
        .get(gateway.url("/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn login_returns_a_session_that_me_recognises() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let response = login(&gateway, "alice", DEMO_PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["session_id"].as_str().unwrap().len(), 64);
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    let token = body["session_token"].as_str().unwrap();
    let me: Value = me(&gateway, token).await.json().await.unwrap();
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["username"], "alice");
    // "roles" means one thing everywhere: the effective roles, as the
    // access token carries them; the assigned ones are named as such.
    assert_eq!(me["roles"], json!(["member", "tenant-admin"]));
    assert_eq!(me["direct_roles"], json!(["tenant-admin"]));
    let access = body["access_token"].as_str().unwrap();
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    let mut token_roles: Vec<String> = serde_json::from_value(claims["roles"].clone()).unwrap();
    token_roles.sort();
    assert_eq!(me["roles"], json!(token_roles));
    assert_eq!(me["session_id"], body["session_id"]);
    assert!(me["sub"].is_string());
}

#[tokio::test]
async fn username_variants_sign_into_the_same_account() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    for variant in ["ALICE", "  Alice ", "\u{ff41}lice"] {
        let response = login(&gateway, variant, DEMO_PASSWORD).await;
        assert_eq!(response.status(), 200, "{variant:?}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_identical_answers() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let wrong = login(&gateway, "alice", "not-her-password").await;
    let unknown = login(&gateway, "nobody-here", "not-her-password").await;
    let malformed = login(&gateway, "   ", "x").await;
    let bodies: Vec<(u16, String)> = futures_bodies(vec![wrong, unknown, malformed]).await;
    assert_eq!(bodies[0].0, 401);
    assert_eq!(
        bodies[0], bodies[1],
        "unknown user must look like a wrong password"
    );
    assert_eq!(bodies[0], bodies[2]);
}

async fn futures_bodies(responses: Vec<reqwest::Response>) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for r in responses {
        let status = r.status().as_u16();
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        out.push((status, r.text().await.unwrap()));
    }
    out
}

#[tokio::test]
async fn unknown_and_disabled_tenants_are_the_same_404() {
    let (gateway, db, _) = seeded_app(&[]).await;
    sqlx::query("INSERT INTO tenants (id, slug, display_name, status) VALUES (gen_random_uuid(), 'frozen', 'Frozen', 'disabled')")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for tenant in ["nope", "frozen"] {
        let response = client()
            .post(gateway.url("/v1/auth/login"))
            .json(&json!({ "tenant": tenant, "username": "alice", "password": DEMO_PASSWORD }))
            .send()
            .await
            .unwrap();
        bodies.push(expect_problem(response, 404).await);
        let page = client()
            .get(gateway.url(&format!("/t/{tenant}/login")))
            .send()
            .await
            .unwrap();
        bodies.push(expect_problem(page, 404).await);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
}

#[tokio::test]
async fn malformed_oversized_and_wrongly_typed_bodies_are_problems() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let http = client();
    let url = gateway.url("/v1/auth/login");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "JSON",
        ),
        (
            http.post(&url)
                .json(&json!({ "tenant": "acme", "username": "alice" })),
            422,
            "password",
        ),
        (
            http.post(&url).json(
                &json!({ "tenant": "acme", "username": "alice", "password": "x", "admin": true }),
            ),
            422,
            "admin",
        ),
        (
            http.post(&url)
                .json(&json!({ "tenant": 7, "username": "a", "password": "b" })),
            422,
            "tenant",
        ),
        (http.post(&url).body("tenant=acme"), 415, "Content-Type"),
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body(vec![b' '; 70 * 1024]),
            413,
            "limit",
        ),
    ];
    for (request, status, mentions) in cases {
        let body = expect_problem(request.send().await.unwrap(), status).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(mentions),
            "status {status}: detail {detail:?} should mention {mentions:?}"
        );
    }
}

#[tokio::test]
async fn logout_ends_the_session() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let token = token_for(&gateway, "bob").await;
    let response = client()
        .post(gateway.url("/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    expect_problem(me(&gateway, &token).await, 401).await;
}

#[tokio::test]
async fn logout_all_ends_every_session_on_every_device() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let devices = [
        token_for(&gateway, "bob").await,
        token_for(&gateway, "bob").await,
        token_for(&gateway, "bob").await,
    ];
    let alice = token_for(&gateway, "alice").await;
    let response = client()
        .post(gateway.url("/v1/auth/logout-all"))
        .bearer_auth(&devices[1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ended_sessions"], 3);
    for token in &devices {
        expect_problem(me(&gateway, token).await, 401).await;
    }
    assert_eq!(
        me(&gateway, &alice).await.status(),
        200,
        "other users keep their sessions"
    );
}

#[tokio::test]
async fn sessions_are_listed_and_ended_by_id_but_never_another_users() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let phone = token_for(&gateway, "bob").await;
    let laptop = token_for(&gateway, "bob").await;
    let alice = token_for(&gateway, "alice").await;
    let listed: Value = client()
        .get(gateway.url("/v1/auth/sessions"))
        .bearer_auth(&laptop)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let phone_id = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Alice cannot end Bob's session, and learns nothing (404).
    let foreign = client()
        .delete(gateway.url(&format!("/v1/auth/sessions/{phone_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    expect_problem(foreign, 404).await;
    assert_eq!(me(&gateway, &phone).await.status(), 200);

    let own = client()
        .delete(gateway.url(&format!("/v1/auth/sessions/{phone_id}")))
        .bearer_auth(&laptop)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 204);
    expect_problem(me(&gateway, &phone).await, 401).await;
    assert_eq!(me(&gateway, &laptop).await.status(), 200);
    let bogus = client()
        .delete(gateway.url("/v1/auth/sessions/not-an-id"))
        .bearer_auth(&laptop)
        .send()
        .await
        .unwrap();
    expect_problem(bogus, 404).await;
}

#[tokio::test]
async fn requests_without_a_valid_session_are_401() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    for token in [
        "",
        "garbage",
        "gs1_00000000000000000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        expect_problem(me(&gateway, token).await, 401).await;
    }
    expect_problem(
        client()
            .get(gateway.url("/v1/auth/me"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
}

// Session idle and absolute timeouts are tested in process with a manual
// clock (services/gateway/tests/in_process.rs), not with real sleeps here.

#[tokio::test]
async fn password_change_keeps_this_session_and_ends_the_others() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let current = token_for(&gateway, "bob").await;
    let other = token_for(&gateway, "bob").await;
    let http = client();
    let wrong = http
        .post(gateway.url("/v1/auth/password"))
        .bearer_auth(&current)
        .json(&json!({ "current_password": "nope", "new_password": "brand-new-password" }))
        .send()
        .await
        .unwrap();
    expect_problem(wrong, 403).await;
    let short = http
        .post(gateway.url("/v1/auth/password"))
        .bearer_auth(&current)
        .json(&json!({ "current_password": DEMO_PASSWORD, "new_password": "short" }))
        .send()
        .await
        .unwrap();
    expect_problem(short, 400).await;
    let changed = http
        .post(gateway.url("/v1/auth/password"))
        .bearer_auth(&current)
        .json(&json!({ "current_password": DEMO_PASSWORD, "new_password": "brand-new-password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(me(&gateway, &current).await.status(), 200);
    expect_problem(me(&gateway, &other).await, 401).await;
    assert_eq!(login(&gateway, "bob", DEMO_PASSWORD).await.status(), 401);
    assert_eq!(
        login(&gateway, "bob", "brand-new-password").await.status(),
        200
    );
}

#[tokio::test]
async fn a_disabled_user_loses_every_session_and_cannot_sign_in() {
    let (gateway, _db, vars) = seeded_app(&[]).await;
    let token = token_for(&gateway, "bob").await;
    let output = run_gatehouse(&["user", "disable", "--tenant", "acme", "bob"], &vars).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 session(s) ended"));
    expect_problem(me(&gateway, &token).await, 401).await;
    let refused = login(&gateway, "bob", DEMO_PASSWORD).await;
    let unknown = login(&gateway, "nobody", DEMO_PASSWORD).await;
    let (a, b) = (refused.status(), unknown.status());
    assert_eq!((a.as_u16(), b.as_u16()), (401, 401));
    assert_eq!(
        refused.text().await.unwrap(),
        unknown.text().await.unwrap(),
        "disabled looks like bad credentials"
    );
    let output = run_gatehouse(&["user", "enable", "--tenant", "acme", "bob"], &vars).await;
    assert!(output.status.success());
    assert_eq!(login(&gateway, "bob", DEMO_PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn logins_are_audited_without_the_password() {
    let (gateway, db, _) = seeded_app(&[]).await;
    token_for(&gateway, "alice").await;
    login(&gateway, "alice", "wrong-password-xyz").await;
    login(&gateway, "ghost", "ghost-password-xyz").await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT outcome, coalesce(target, ''), details::text FROM audit_events WHERE action = 'login' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("success", "alice")
    );
    assert_eq!(rows[1].0, "failure");
    assert!(rows[1].2.contains("wrong_password"));
    assert!(rows[2].2.contains("unknown_user"));
    let all: String = sqlx::query_scalar(
        "SELECT string_agg(details::text || coalesce(target,''), ' ') FROM audit_events",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    for secret in [DEMO_PASSWORD, "wrong-password-xyz", "ghost-password-xyz"] {
        assert!(!all.contains(secret), "audit leaked a password");
    }
}

#[tokio::test]
async fn login_metrics_count_outcomes() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let token = token_for(&gateway, "alice").await;
    login(&gateway, "alice", "wrong-password-xyz").await;
    assert_eq!(me(&gateway, &token).await.status(), 200);
    let text = crate::metrics_text(&gateway).await;
    assert!(
        text.contains("gatehouse_logins_total{result=\"success\"} 1"),
        "{text}"
    );
    assert!(text.contains("gatehouse_logins_total{result=\"invalid_credentials\"} 1"));
    assert!(
        text.contains("gatehouse_session_validation_duration_seconds_count 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_login_answers_503_with_retry_after_when_redis_is_down() {
    let db = gatehouse_testkit::TestDatabase::new().await;
    let mut redis = gatehouse_testkit::PrivateRedis::start().await;
    let mut vars = gatehouse_testkit::gateway_env(&db, &redis.url(), "gh:");
    vars.extend(crate::cheap_argon2());
    vars.push((
        "GATEHOUSE_DEMO_PASSWORD".to_owned(),
        DEMO_PASSWORD.to_owned(),
    ));
    vars.push((
        "GATEHOUSE_ADMIN_PASSWORD".to_owned(),
        DEMO_PASSWORD.to_owned(),
    ));
    assert!(
        run_gatehouse(&["bootstrap", "--demo"], &vars)
            .await
            .status
            .success()
    );
    let gateway = Gateway::spawn(&vars).await;
    let token = token_for(&gateway, "alice").await;
    redis.stop().await;
    // A signed-in request cannot be validated either: 503, not 401 (the
    // session is not known to be bad) and not 500.
    let me_down = me(&gateway, &token).await;
    assert!(me_down.headers().contains_key("retry-after"));
    expect_problem(me_down, 503).await;
    let response = login(&gateway, "alice", DEMO_PASSWORD).await;
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(response, 503).await;
    redis.resume().await;
    let mut ok = false;
    for _ in 0..50 {
        if login(&gateway, "alice", DEMO_PASSWORD).await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "logins work again once Redis is back");
}
