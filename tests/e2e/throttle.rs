//! Login throttling through the real gateway.

use serde_json::{Value, json};

use crate::{DEMO_PASSWORD, client, expect_problem, hidden_field, seeded_app, session_token};
use gatehouse_testkit::Gateway;

async fn login_from(
    gateway: &Gateway,
    username: &str,
    password: &str,
    xff: Option<&str>,
    device: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({ "tenant": "acme", "username": username, "password": password });
    if let Some(device) = device {
        body["device_token"] = json!(device);
    }
    let mut request = client().post(gateway.url("/v1/auth/login")).json(&body);
    if let Some(xff) = xff {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap()
}

async fn login(gateway: &Gateway, username: &str, password: &str) -> reqwest::Response {
    login_from(gateway, username, password, None, None).await
}

/// Sets acme's `login_throttle` settings (partial: the rest keep defaults).
async fn set_limits(db: &gatehouse_testkit::TestDatabase, limits: Value) {
    sqlx::query(
        "UPDATE tenants SET settings = settings || jsonb_build_object('login_throttle', $1::jsonb) WHERE slug = 'acme'",
    )
    .bind(limits)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn fail_times(gateway: &Gateway, username: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(
            login(gateway, username, "wrong-password").await.status(),
            401
        );
    }
}

#[tokio::test]
async fn the_sixth_failure_is_429_with_retry_after_for_known_and_unknown_users_alike() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let mut answers = Vec::new();
    for username in ["alice", "ghost-user"] {
        fail_times(&gateway, username, 5).await;
        let response = login(&gateway, username, "wrong-password").await;
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after > 0 && retry_after <= 15 * 60);
        let body = expect_problem(response, 429).await;
        answers.push(body["type"].clone());
        // Even the right password is refused while throttled.
        assert_eq!(login(&gateway, username, DEMO_PASSWORD).await.status(), 429);
    }
    assert_eq!(
        answers[0], answers[1],
        "no difference between existing and unknown usernames"
    );
}

#[tokio::test]
async fn case_and_unicode_variants_share_one_counter() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    for variant in ["Alice", "ALICE", "\u{ff41}lice", " alice ", "alice"] {
        assert_eq!(
            login(&gateway, variant, "wrong-password").await.status(),
            401
        );
    }
    expect_problem(login(&gateway, "aLiCe", "wrong-password").await, 429).await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    for i in 0..5 {
        let xff = format!("198.51.100.{i}");
        assert_eq!(
            login_from(&gateway, "bob", "wrong-password", Some(&xff), None)
                .await
                .status(),
            401
        );
    }
    let response = login_from(
        &gateway,
        "bob",
        "wrong-password",
        Some("198.51.100.99"),
        None,
    )
    .await;
    expect_problem(response, 429).await;
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let (gateway, db, _) = seeded_app(&[("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    // Every failure counts against the username: leave room after A's five so
    // this test sees the pair limit alone.
    set_limits(&db, json!({"username": {"free_failures": 10}})).await;
    // Client A behind the proxy exhausts its pair limit...
    for _ in 0..5 {
        assert_eq!(
            login_from(
                &gateway,
                "bob",
                "wrong-password",
                Some("198.51.100.1"),
                None
            )
            .await
            .status(),
            401
        );
    }
    expect_problem(
        login_from(&gateway, "bob", DEMO_PASSWORD, Some("198.51.100.1"), None).await,
        429,
    )
    .await;
    // ...while client B, a different address behind the same proxy, is a
    // different pair.
    assert_eq!(
        login_from(&gateway, "bob", DEMO_PASSWORD, Some("198.51.100.2"), None)
            .await
            .status(),
        200
    );
    // The recorded session IP is the client's, not the proxy's.
    let response = login_from(&gateway, "alice", DEMO_PASSWORD, Some("203.0.113.50"), None).await;
    let token = response.json::<Value>().await.unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sessions: Value = client()
        .get(gateway.url("/v1/auth/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"][0]["ip"], "203.0.113.50");
}

#[tokio::test]
async fn success_resets_the_pair_counter() {
    let (gateway, db, _) = seeded_app(&[]).await;
    // Keep the username backoff out of the way: this is about the pair.
    sqlx::query("UPDATE tenants SET settings = '{\"login_throttle\": {\"username\": {\"free_failures\": 20}}}' WHERE slug = 'acme'")
        .execute(&db.pool)
        .await
        .unwrap();
    fail_times(&gateway, "bob", 4).await;
    assert_eq!(login(&gateway, "bob", DEMO_PASSWORD).await.status(), 200);
    fail_times(&gateway, "bob", 4).await;
    assert_eq!(
        login(&gateway, "bob", DEMO_PASSWORD).await.status(),
        200,
        "the counter started again after the success"
    );
}

#[tokio::test]
async fn a_known_device_gets_through_a_username_lockout_caused_by_others() {
    let (gateway, _db, _) = seeded_app(&[("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let first = login_from(&gateway, "alice", DEMO_PASSWORD, Some("203.0.113.1"), None).await;
    let device = first.json::<Value>().await.unwrap()["device_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Attackers from many addresses push the username into backoff.
    let mut throttled = false;
    for i in 0..30 {
        let xff = format!("192.0.2.{i}");
        if login_from(&gateway, "alice", "guess", Some(&xff), None)
            .await
            .status()
            == 429
        {
            throttled = true;
        }
    }
    assert!(throttled, "the username is in backoff");
    let stranger = login_from(&gateway, "alice", DEMO_PASSWORD, Some("203.0.113.1"), None).await;
    expect_problem(stranger, 429).await;
    let known = login_from(
        &gateway,
        "alice",
        DEMO_PASSWORD,
        Some("203.0.113.1"),
        Some(&device),
    )
    .await;
    assert_eq!(known.status(), 200, "the known device gets through");
    let forged = login_from(
        &gateway,
        "alice",
        DEMO_PASSWORD,
        Some("203.0.113.1"),
        Some("forged.token"),
    )
    .await;
    expect_problem(forged, 429).await;
}

#[tokio::test]
async fn the_browser_form_answers_429_with_retry_after() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    fail_times(&gateway, "bob", 5).await;
    let page = client()
        .get(gateway.url("/t/acme/login"))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let csrf = hidden_field(&html, "csrf");
    let form = [
        ("username", "bob"),
        ("password", DEMO_PASSWORD),
        ("csrf", csrf.as_str()),
    ];
    let browser = client()
        .post(gateway.url("/t/acme/login"))
        .header("cookie", cookie.clone())
        .header("accept", "text/html,application/xhtml+xml")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 429);
    assert!(browser.headers().contains_key("retry-after"));
    assert!(
        browser
            .text()
            .await
            .unwrap()
            .contains("Too many sign-in attempts")
    );
    // The same form posted by a script (no text/html in Accept) gets problem+json.
    let scripted = client()
        .post(gateway.url("/t/acme/login"))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(scripted.headers().contains_key("retry-after"));
    expect_problem(scripted, 429).await;
}

#[tokio::test]
async fn tenant_limits_change_without_a_restart() {
    let (gateway, db, _) = seeded_app(&[]).await;
    sqlx::query("UPDATE tenants SET settings = '{\"login_throttle\": {\"pair\": {\"max\": 2, \"window_s\": 60}}}' WHERE slug = 'acme'")
        .execute(&db.pool)
        .await
        .unwrap();
    fail_times(&gateway, "bob", 2).await;
    expect_problem(login(&gateway, "bob", "wrong-password").await, 429).await;
}

#[tokio::test]
async fn admins_list_and_clear_lockouts_of_their_tenant_only() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let alice = session_token(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    let admin = session_token(&gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    fail_times(&gateway, "bob", 5).await;
    expect_problem(login(&gateway, "bob", DEMO_PASSWORD).await, 429).await;

    let http = client();
    let listed: Value = http
        .get(gateway.url("/admin/api/v1/tenants/acme/lockouts"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lockouts = listed["lockouts"].as_array().unwrap();
    assert_eq!(lockouts.len(), 1, "{listed}");
    assert_eq!(lockouts[0]["username"], "bob");
    let id = lockouts[0]["id"].as_str().unwrap().to_owned();

    // The platform admin sees it too; bob (a member) may not; acme's admin cannot look at system.
    let as_admin = http
        .get(gateway.url("/admin/api/v1/tenants/acme/lockouts"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(as_admin.status(), 200);
    let other_tenant = http
        .get(gateway.url("/admin/api/v1/tenants/system/lockouts"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    expect_problem(other_tenant, 404).await;

    let cleared = http
        .delete(gateway.url(&format!("/admin/api/v1/tenants/acme/lockouts/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(
        login(&gateway, "bob", DEMO_PASSWORD).await.status(),
        200,
        "bob can sign in again"
    );
    let again = http
        .delete(gateway.url(&format!("/admin/api/v1/tenants/acme/lockouts/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    expect_problem(again, 404).await;
    let bob = session_token(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let forbidden = http
        .get(gateway.url("/admin/api/v1/tenants/acme/lockouts"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    expect_problem(forbidden, 403).await;
}

/// Finding 8: the username counts failures, not addresses. Five failures
/// spread over four addresses (each inside its pair budget) put the username
/// into backoff; before, they counted as four and guessing went on unslowed.
#[tokio::test]
async fn failures_from_several_addresses_back_off_the_username() {
    let (gateway, db, _) = seeded_app(&[]).await;
    set_limits(&db, json!({"username": {"backoff_base_ms": 600_000}})).await;
    for i in 0..5 {
        let address = format!("198.51.100.{}", i % 4);
        let response = login_from(&gateway, "bob", "wrong-password", Some(&address), None).await;
        assert_eq!(response.status(), 401);
    }
    let held = login_from(&gateway, "bob", DEMO_PASSWORD, Some("198.51.100.99"), None).await;
    assert!(held.headers().contains_key("retry-after"));
    expect_problem(held, 429).await;
}

/// Finding 8: one IP window for every tenant. An address that used its
/// attempts on acme gets none on another tenant.
#[tokio::test]
async fn the_ip_limit_is_shared_by_every_tenant() {
    let (gateway, db, _) = seeded_app(&[]).await;
    sqlx::query(
        "UPDATE tenants SET settings = settings || '{\"login_throttle\": {\"ip\": {\"max\": 4, \"window_s\": 300}}}'::jsonb",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for i in 0..4 {
        let body = if i % 2 == 0 {
            json!({"tenant": "acme", "username": format!("u{i}"), "password": "wrong-password"})
        } else {
            json!({"tenant": "system", "username": format!("u{i}"), "password": "wrong-password"})
        };
        let response = client()
            .post(gateway.url("/v1/auth/login"))
            .header("x-forwarded-for", "203.0.113.77")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "attempt {i}");
    }
    let on_system = client()
        .post(gateway.url("/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.77")
        .json(&json!({"tenant": "system", "username": "admin", "password": crate::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_problem(on_system, 429).await;
    let elsewhere = client()
        .post(gateway.url("/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.78")
        .json(&json!({"tenant": "system", "username": "admin", "password": crate::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 200, "another address is not held");
}

/// Finding 8: a flood of random usernames from many IPv6 /64s fills the
/// tenant's ceiling, yet a known device still signs in.
#[tokio::test]
async fn a_tenant_flood_cannot_lock_out_a_known_device() {
    let (gateway, db, _) = seeded_app(&[]).await;
    set_limits(&db, json!({"tenant": {"max": 20, "window_s": 600}})).await;
    let first = login_from(&gateway, "alice", DEMO_PASSWORD, Some("198.51.100.5"), None).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let device = first["device_token"].as_str().unwrap().to_owned();
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let url = gateway.url("/v1/auth/login");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .header("x-forwarded-for", format!("2001:db8:{i:x}::1"))
                    .json(&json!({"tenant": "acme", "username": format!("random-{i}"), "password": "x"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut throttled = 0;
    for request in flood {
        if request.await.unwrap() == 429 {
            throttled += 1;
        }
    }
    assert!(
        throttled >= 20,
        "the ceiling held the flood: {throttled} of 40"
    );
    expect_problem(
        login_from(&gateway, "bob", DEMO_PASSWORD, Some("198.51.100.6"), None).await,
        429,
    )
    .await;
    let known = login_from(
        &gateway,
        "alice",
        DEMO_PASSWORD,
        Some("198.51.100.5"),
        Some(&device),
    )
    .await;
    assert_eq!(known.status(), 200, "the known device gets through");
}

async fn change_password(
    gateway: &Gateway,
    session: &str,
    current: &str,
    new: &str,
) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/auth/password"))
        .bearer_auth(session)
        .json(&json!({"current_password": current, "new_password": new}))
        .send()
        .await
        .unwrap()
}

/// Finding 9: device proofs are bound to the user's credential epoch, so a
/// password change (or a disable) retires the proofs issued before it.
#[tokio::test]
async fn a_password_change_retires_earlier_device_proofs() {
    let (gateway, db, _) = seeded_app(&[]).await;
    set_limits(&db, json!({"username": {"backoff_base_ms": 600_000}})).await;
    let before = login_from(&gateway, "alice", DEMO_PASSWORD, Some("198.51.100.1"), None).await;
    let before: Value = before.json().await.unwrap();
    let old_proof = before["device_token"].as_str().unwrap().to_owned();
    let session = before["session_token"].as_str().unwrap();
    let changed = change_password(&gateway, session, DEMO_PASSWORD, "a-new-password-123").await;
    assert_eq!(changed.status(), 200);
    let after = login_from(
        &gateway,
        "alice",
        "a-new-password-123",
        Some("198.51.100.1"),
        None,
    )
    .await;
    let after: Value = after.json().await.unwrap();
    let new_proof = after["device_token"].as_str().unwrap().to_owned();
    // Push the username into a long backoff from elsewhere.
    for i in 0..5 {
        let address = format!("203.0.113.{i}");
        let response = login_from(&gateway, "alice", "wrong-password", Some(&address), None).await;
        assert_eq!(response.status(), 401);
    }
    expect_problem(
        login_from(
            &gateway,
            "alice",
            "a-new-password-123",
            Some("198.51.100.1"),
            Some(&old_proof),
        )
        .await,
        429,
    )
    .await;
    let known = login_from(
        &gateway,
        "alice",
        "a-new-password-123",
        Some("198.51.100.1"),
        Some(&new_proof),
    )
    .await;
    assert_eq!(
        known.status(),
        200,
        "a proof of the current epoch still counts"
    );

    // Disabling bumps the epoch too (a trigger, whoever writes).
    let epoch = |db: &gatehouse_testkit::TestDatabase| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT credential_epoch FROM users WHERE username_normalized = 'bob'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let start = epoch(&db).await;
    sqlx::query("UPDATE users SET status = 'disabled' WHERE username_normalized = 'bob'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET status = 'active' WHERE username_normalized = 'bob'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(epoch(&db).await, start + 1);
}

/// Finding 9: checking the current password on a password change is a
/// throttled sign-in attempt, so a stolen session cannot guess faster than
/// the login form allows.
#[tokio::test]
async fn password_change_guesses_are_throttled() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let bob = session_token(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    for _ in 0..5 {
        let wrong = change_password(&gateway, &bob, "not-the-password", "whatever-new-1").await;
        expect_problem(wrong, 403).await;
    }
    let throttled = change_password(&gateway, &bob, "not-the-password", "whatever-new-1").await;
    assert!(throttled.headers().contains_key("retry-after"));
    expect_problem(throttled, 429).await;
    let right = change_password(&gateway, &bob, DEMO_PASSWORD, "whatever-new-1").await;
    expect_problem(right, 429).await;
}

/// Successful sign-ins are not failures: one user signing in over and over
/// from four clients at once (a load test, a fleet of scripts) is never held
/// by the username limit, even though every attempt in flight counts until
/// its password checks out.
#[tokio::test]
async fn concurrent_successful_sign_ins_are_not_counted_as_failures() {
    let (gateway, db, _) = seeded_app(&[]).await;
    set_limits(
        &db,
        json!({"ip": {"max": 100_000, "window_s": 10}, "tenant": {"max": 100_000, "window_s": 10}}),
    )
    .await;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = gateway.url("/v1/auth/login");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..15 {
                    let status = client()
                        .post(&url)
                        .json(&json!({"tenant": "acme", "username": "bob", "password": DEMO_PASSWORD}))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16();
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    assert!(all.iter().all(|s| *s == 200), "{all:?}");
}
