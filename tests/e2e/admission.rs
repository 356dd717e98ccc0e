//! One admission path: the attacks of the security review (issue 11, findings
//! 2, 3 and 5, and the disabled tenant of 9) through the real binary. Each
//! sequence failed on the code before admission existed.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    ADMIN_PASSWORD, DEMO_PASSWORD, client, expect_problem, introspect, json_login, refresh,
    seeded_app,
};
use gatehouse_testkit::Gateway;

async fn login(gateway: &Gateway, tenant: &str, user: &str, password: &str) -> Value {
    let response = json_login(gateway, tenant, user, password).await;
    assert_eq!(response.status(), 200, "sign-in of {user}@{tenant}");
    response.json().await.unwrap()
}

async fn create_client(gateway: &Gateway, admin_session: &str, id: &str) -> String {
    let created = client()
        .post(gateway.url("/admin/api/v1/service-clients"))
        .bearer_auth(admin_session)
        .json(&json!({ "client_id": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    body["client_secret"].as_str().unwrap().to_owned()
}

async fn active(gateway: &Gateway, id: &str, secret: &str, token: &str) -> bool {
    let response = introspect(gateway, id, secret, token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["active"].as_bool().unwrap()
}

/// Polls (at most 5 s) until introspection calls `token` inactive: an admin
/// revocation reaches the mirror through the event stream.
async fn until_inactive(gateway: &Gateway, id: &str, secret: &str, token: &str) {
    let started = Instant::now();
    while active(gateway, id, secret, token).await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "introspection still says active 5 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn revoke(gateway: &Gateway, admin_session: &str, body: Value) {
    let response = client()
        .post(gateway.url("/admin/api/v1/tenants/acme/revocations"))
        .bearer_auth(admin_session)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

async fn me(gateway: &Gateway, token: &str) -> StatusCode {
    client()
        .get(gateway.url("/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Finding 2: introspection answers `active: false` for every token an admin
/// revoked, by token or by user, like `/v1/verify` does.
#[tokio::test]
async fn introspection_honours_admin_revocations() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let admin = login(&gateway, "system", "admin", ADMIN_PASSWORD).await;
    let admin = admin["session_token"].as_str().unwrap();
    let secret = create_client(&gateway, admin, "orders-svc").await;
    let alice = login(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    let alice = alice["session_token"].as_str().unwrap();

    let first = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let jwt = first["access_token"].as_str().unwrap();
    assert!(active(&gateway, "orders-svc", &secret, jwt).await);
    revoke(&gateway, alice, json!({ "access_token": jwt })).await;
    until_inactive(&gateway, "orders-svc", &secret, jwt).await;

    let second = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let (jwt, session) = (
        second["access_token"].as_str().unwrap(),
        second["session_token"].as_str().unwrap(),
    );
    assert!(active(&gateway, "orders-svc", &secret, jwt).await);
    assert!(active(&gateway, "orders-svc", &secret, session).await);
    revoke(&gateway, alice, json!({ "user": "bob" })).await;
    until_inactive(&gateway, "orders-svc", &secret, jwt).await;
    assert!(
        !active(&gateway, "orders-svc", &secret, session).await,
        "the user's session token is inactive too"
    );
}

/// Finding 5: after an admin revokes a user, or the tenant's kill switch, or
/// the user is disabled behind the gateway's back, refresh mints nothing.
#[tokio::test]
async fn refresh_mints_nothing_for_a_revoked_disabled_or_killed_user() {
    let (gateway, db, _) = seeded_app(&[]).await;
    let alice = login(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    let alice = alice["session_token"].as_str().unwrap().to_owned();

    // Revoked by an admin: the refresh a second later is refused.
    let bob = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    revoke(&gateway, &alice, json!({ "user": "bob" })).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let refused = refresh(&gateway, bob["refresh_token"].as_str().unwrap()).await;
    expect_problem(refused, 401).await;
    assert_eq!(
        me(&gateway, bob["session_token"].as_str().unwrap()).await,
        401
    );

    // Disabled in the database without any session being ended (another
    // tool, a restore): admission reads the user's status.
    let bob_again = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let control = refresh(&gateway, bob_again["refresh_token"].as_str().unwrap()).await;
    assert_eq!(control.status(), 200, "a live user refreshes (control)");
    let control: Value = control.json().await.unwrap();
    sqlx::query("UPDATE users SET status = 'disabled' WHERE username_normalized = 'bob'")
        .execute(&db.pool)
        .await
        .unwrap();
    let jwt = control["access_token"].as_str().unwrap();
    crate::until_in_force("bob disabled by hand", || async {
        crate::forward_auth(&gateway, "acme")
            .bearer_auth(jwt)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    expect_problem(
        refresh(&gateway, control["refresh_token"].as_str().unwrap()).await,
        401,
    )
    .await;
    assert_eq!(
        me(&gateway, bob_again["session_token"].as_str().unwrap()).await,
        401
    );
    let verify = crate::forward_auth(&gateway, "acme")
        .bearer_auth(control["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    expect_problem(verify, 401).await;
    sqlx::query("UPDATE users SET status = 'active' WHERE username_normalized = 'bob'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        me(&gateway, bob_again["session_token"].as_str().unwrap()).await,
        401,
        "the disabled user's session was ended, not just refused"
    );

    // The kill switch: refresh refused at once.
    let bob_last = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    revoke(&gateway, &alice, json!({ "all_tokens": true })).await;
    expect_problem(
        refresh(&gateway, bob_last["refresh_token"].as_str().unwrap()).await,
        401,
    )
    .await;
}

/// A disabled tenant is refused on every way in: JSON API, admin API, forward
/// auth, authz checks, refresh and introspection.
#[tokio::test]
async fn a_disabled_tenant_is_refused_everywhere() {
    let (gateway, db, _) = seeded_app(&[]).await;
    let admin = login(&gateway, "system", "admin", ADMIN_PASSWORD).await;
    let secret = create_client(
        &gateway,
        admin["session_token"].as_str().unwrap(),
        "audit-svc",
    )
    .await;
    let alice = login(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    let bob = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let alice_session = alice["session_token"].as_str().unwrap();
    let bob_jwt = bob["access_token"].as_str().unwrap();
    assert_eq!(me(&gateway, bob_jwt).await, 200, "control");
    sqlx::query("UPDATE tenants SET status = 'disabled' WHERE slug = 'acme'")
        .execute(&db.pool)
        .await
        .unwrap();

    crate::until_in_force("the tenant disabled by hand", || async {
        me(&gateway, bob_jwt).await == 401
    })
    .await;
    assert_eq!(me(&gateway, alice_session).await, 401);
    let admin_api = client()
        .get(gateway.url("/admin/api/v1/tenants/acme/roles"))
        .bearer_auth(alice_session)
        .send()
        .await
        .unwrap();
    expect_problem(admin_api, 401).await;
    let check = client()
        .post(gateway.url("/v1/authz/check"))
        .bearer_auth(bob_jwt)
        .json(&json!({"resource": "orders:1", "action": "read"}))
        .send()
        .await
        .unwrap();
    expect_problem(check, 401).await;
    let verify = crate::forward_auth(&gateway, "acme")
        .bearer_auth(bob_jwt)
        .send()
        .await
        .unwrap();
    expect_problem(verify, 401).await;
    expect_problem(
        refresh(&gateway, bob["refresh_token"].as_str().unwrap()).await,
        401,
    )
    .await;
    assert!(!active(&gateway, "audit-svc", &secret, bob_jwt).await);
    // The platform tenant is untouched.
    assert_eq!(
        me(&gateway, admin["access_token"].as_str().unwrap()).await,
        200
    );
}

/// Finding 3: random client credentials cost a hash, not argon2, and are
/// throttled per address, so they cannot starve logins or a known client.
#[tokio::test]
async fn random_client_credentials_cannot_starve_logins_or_known_clients() {
    let (gateway, db, _) = seeded_app(&[]).await;
    let admin = login(&gateway, "system", "admin", ADMIN_PASSWORD).await;
    let secret = create_client(
        &gateway,
        admin["session_token"].as_str().unwrap(),
        "orders-svc",
    )
    .await;
    let stored: String = sqlx::query_scalar(
        "SELECT secret_hash FROM service_clients WHERE client_id = 'orders-svc'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        stored.starts_with("sha256:") && !stored.contains(&secret),
        "stored as SHA-256: {stored}"
    );
    let bob = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let jwt = bob["access_token"].as_str().unwrap().to_owned();
    assert!(active(&gateway, "orders-svc", &secret, &jwt).await);

    // 300 concurrent requests with random credentials from one address.
    let flood: Vec<_> = (0..300)
        .map(|i| {
            let url = gateway.url("/oauth2/introspect");
            let jwt = jwt.clone();
            tokio::spawn(async move {
                client()
                    .post(url)
                    .basic_auth(format!("random-{i}"), Some(format!("guess-{i}")))
                    .form(&[("token", jwt.as_str())])
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    // A login and the known client are answered while the flood runs.
    let during = json_login(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    assert_eq!(during.status(), 200);
    assert!(active(&gateway, "orders-svc", &secret, &jwt).await);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for request in flood {
        let response = request.await.unwrap();
        let status = response.status().as_u16();
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![401, 429],
        "bad credentials are refused, then throttled: {statuses:?}"
    );
    assert!(
        statuses[&401] <= 30,
        "at most the per-address allowance is checked: {statuses:?}"
    );
    // The throttled address still gets nothing with a wrong secret for the
    // real client id, and the throttle never hands out an answer.
    let wrong = introspect(&gateway, "orders-svc", "ghc1_wrong", &jwt).await;
    assert_eq!(wrong.status(), 429);
}

/// Finding 6: refresh is rate-limited per session (the limit answers 429 with
/// `Retry-After` and leaves the token valid), and other sessions are not
/// held back by one that hammers refresh.
#[tokio::test]
async fn refresh_is_rate_limited_per_session() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let hammer = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let mut token = hammer["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..10 {
        let response = refresh(&gateway, &token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        token = body["refresh_token"].as_str().unwrap().to_owned();
    }
    let throttled = refresh(&gateway, &token).await;
    assert!(throttled.headers().contains_key("retry-after"));
    let problem = expect_problem(throttled, 429).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("stays valid"),
        "{problem}"
    );
    // Not reuse: the session is alive and the family not revoked.
    assert_eq!(
        me(&gateway, hammer["session_token"].as_str().unwrap()).await,
        200
    );
    let calm = login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    assert_eq!(
        refresh(&gateway, calm["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200,
        "another session of the same user refreshes"
    );
}
