//! The server-rendered sign-in flow as a browser without JavaScript sees it.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::{DEMO_PASSWORD, client, expect_problem, hidden_field, seeded_app};
use gatehouse_testkit::Gateway;

/// What a browser keeps between requests.
#[derive(Default, Debug, Clone)]
struct Browser {
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn absorb(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Loads the login form; returns its CSRF token.
async fn open_login(gateway: &Gateway, browser: &mut Browser, query: &str) -> String {
    let response = client()
        .get(gateway.url(&format!("/t/acme/login{query}")))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    browser.absorb(&response);
    let html = response.text().await.unwrap();
    hidden_field(&html, "csrf")
}

async fn submit_login(
    gateway: &Gateway,
    browser: &mut Browser,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .post(gateway.url("/t/acme/login"))
        .header(COOKIE, browser.cookie_header())
        .form(form);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    browser.absorb(&response);
    response
}

async fn sign_in(
    gateway: &Gateway,
    browser: &mut Browser,
    username: &str,
    return_to: &str,
) -> reqwest::Response {
    let csrf = open_login(gateway, browser, "").await;
    let origin = gateway.base_url.clone();
    submit_login(
        gateway,
        browser,
        &[
            ("username", username),
            ("password", DEMO_PASSWORD),
            ("csrf", &csrf),
            ("return_to", return_to),
        ],
        Some(&origin),
    )
    .await
}

#[tokio::test]
async fn sign_in_sets_a_hardened_cookie_and_shows_the_account_page() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let mut browser = Browser::default();
    let response = sign_in(&gateway, &mut browser, "alice", "").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/t/acme/account");
    let set_cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("gh_session="))
        .expect("session cookie set");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(!set_cookie.contains("Domain"), "host-only: {set_cookie}");

    let account = client()
        .get(gateway.url("/t/acme/account"))
        .header(COOKIE, browser.cookie_header())
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), 200);
    let html = account.text().await.unwrap();
    for expected in [
        "Signed in as alice",
        "tenant-admin",
        "Active sessions",
        "this device",
        "Sign out everywhere",
        "Sign out this one",
    ] {
        assert!(html.contains(expected), "account page lacks {expected:?}");
    }
}

#[tokio::test]
async fn the_account_page_redirects_to_sign_in_without_a_session() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let response = client()
        .get(gateway.url("/t/acme/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert!(
        response.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/t/acme/login?return_to=")
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_show_the_same_form_with_401() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let mut pages = Vec::new();
    for username in ["alice", "nobody"] {
        let mut browser = Browser::default();
        let csrf = open_login(&gateway, &mut browser, "").await;
        let response = submit_login(
            &gateway,
            &mut browser,
            &[
                ("username", username),
                ("password", "wrong-password"),
                ("csrf", &csrf),
                ("return_to", ""),
            ],
            None,
        )
        .await;
        assert_eq!(response.status(), 401);
        assert!(browser.get("gh_session").is_none(), "no session on failure");
        let html = response.text().await.unwrap();
        assert!(html.contains("Incorrect username or password."));
        // Strip the per-render parts (username echo, CSRF token) before comparing.
        let normalized = html
            .replace(username, "USER")
            .replace(&hidden_field(&html, "csrf"), "CSRF");
        pages.push(normalized);
    }
    assert_eq!(pages[0], pages[1]);
}

#[tokio::test]
async fn a_planted_session_cookie_is_never_adopted() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    // The attacker signs in as bob and plants that cookie in the victim's browser.
    let mut attacker = Browser::default();
    sign_in(&gateway, &mut attacker, "bob", "").await;
    let planted = attacker.get("gh_session").unwrap();
    let mut victim = Browser {
        cookies: vec![("gh_session".into(), planted.clone())],
    };
    let response = sign_in(&gateway, &mut victim, "alice", "").await;
    assert_eq!(response.status(), 303);
    let issued = victim.get("gh_session").unwrap();
    assert_ne!(issued, planted, "a fresh session id is issued at sign-in");
    let planted_me = client()
        .get(gateway.url("/v1/auth/me"))
        .bearer_auth(&planted)
        .send()
        .await
        .unwrap();
    expect_problem(planted_me, 401).await;
    let me: serde_json::Value = client()
        .get(gateway.url("/v1/auth/me"))
        .bearer_auth(&issued)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");
}

#[tokio::test]
async fn missing_or_wrong_csrf_token_is_403_and_creates_no_session() {
    let (gateway, db, _) = seeded_app(&[]).await;
    let origin = gateway.base_url.clone();
    // No token at all.
    let mut browser = Browser::default();
    open_login(&gateway, &mut browser, "").await;
    let response = submit_login(
        &gateway,
        &mut browser,
        &[("username", "alice"), ("password", DEMO_PASSWORD)],
        Some(&origin),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert!(browser.get("gh_session").is_none());
    // A token from another browser's form (bound to another nonce).
    let mut other = Browser::default();
    let foreign = open_login(&gateway, &mut other, "").await;
    let response = submit_login(
        &gateway,
        &mut browser,
        &[
            ("username", "alice"),
            ("password", DEMO_PASSWORD),
            ("csrf", &foreign),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert!(browser.get("gh_session").is_none());
    // A valid token, but posted from another site.
    let csrf = open_login(&gateway, &mut browser, "").await;
    let response = submit_login(
        &gateway,
        &mut browser,
        &[
            ("username", "alice"),
            ("password", DEMO_PASSWORD),
            ("csrf", &csrf),
        ],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert!(browser.get("gh_session").is_none());
    let logins: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'login'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(logins, 0, "refused forms never reach the password check");
}

#[tokio::test]
async fn return_to_is_honoured_only_for_same_site_paths_and_allowed_origins() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let cases = [
        (
            "/t/acme/account?tab=sessions",
            "/t/acme/account?tab=sessions",
        ),
        (
            "http://127.0.0.1:8080/orders",
            "http://127.0.0.1:8080/orders",
        ),
        ("https://evil.example/phish", "/t/acme/account"),
        ("//evil.example/phish", "/t/acme/account"),
        ("/\\evil.example", "/t/acme/account"),
        ("javascript:alert(1)", "/t/acme/account"),
        ("http://127.0.0.1:8080@evil.example/", "/t/acme/account"),
    ];
    for (return_to, expected) in cases {
        let mut browser = Browser::default();
        let response = sign_in(&gateway, &mut browser, "bob", return_to).await;
        assert_eq!(response.status(), 303);
        assert_eq!(
            response.headers()[LOCATION],
            expected,
            "return_to={return_to:?}"
        );
    }
}

async fn account_csrf(gateway: &Gateway, browser: &Browser) -> String {
    let html = client()
        .get(gateway.url("/t/acme/account"))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    hidden_field(&html, "csrf")
}

async fn post_form(
    gateway: &Gateway,
    browser: &mut Browser,
    path: &str,
    csrf: &str,
) -> reqwest::Response {
    let response = client()
        .post(gateway.url(path))
        .header(COOKIE, browser.cookie_header())
        .header("origin", gateway.base_url.clone())
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    browser.absorb(&response);
    response
}

#[tokio::test]
async fn sign_out_everywhere_from_the_account_page_ends_every_device() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let mut laptop = Browser::default();
    let mut phone = Browser::default();
    sign_in(&gateway, &mut laptop, "bob", "").await;
    sign_in(&gateway, &mut phone, "bob", "").await;
    let csrf = account_csrf(&gateway, &laptop).await;
    let response = post_form(
        &gateway,
        &mut laptop,
        "/t/acme/account/sessions/end-all",
        &csrf,
    )
    .await;
    assert_eq!(response.status(), 303);
    assert!(laptop.get("gh_session").is_none(), "cookie cleared");
    for device in [&laptop, &phone] {
        let page = client()
            .get(gateway.url("/t/acme/account"))
            .header(COOKIE, device.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 303, "signed out");
    }
}

#[tokio::test]
async fn logout_form_needs_its_csrf_token() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let mut browser = Browser::default();
    sign_in(&gateway, &mut browser, "bob", "").await;
    let refused = post_form(&gateway, &mut browser, "/t/acme/logout", "forged").await;
    assert_eq!(refused.status(), 403);
    let still = client()
        .get(gateway.url("/t/acme/account"))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200, "a forged logout changed nothing");
    let csrf = account_csrf(&gateway, &browser).await;
    let done = post_form(&gateway, &mut browser, "/t/acme/logout", &csrf).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()[LOCATION], "/t/acme/login?signed_out=1");
}

#[tokio::test]
async fn cookie_sessions_cannot_be_used_cross_origin_on_the_json_api() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let mut browser = Browser::default();
    sign_in(&gateway, &mut browser, "bob", "").await;
    let cross = client()
        .post(gateway.url("/v1/auth/logout-all"))
        .header(COOKIE, browser.cookie_header())
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    expect_problem(cross, 403).await;
    let me = client()
        .get(gateway.url("/v1/auth/me"))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

#[tokio::test]
async fn a_session_of_one_tenant_does_not_open_another_tenants_pages() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let mut browser = Browser::default();
    sign_in(&gateway, &mut browser, "bob", "").await;
    let other = client()
        .get(gateway.url("/t/system/account"))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 303, "must sign in to system separately");
}

#[tokio::test]
async fn pages_link_only_same_origin_styles() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let css = client()
        .get(gateway.url("/static/gatehouse.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let page = client()
        .get(gateway.url("/t/acme/login"))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    // Browsers apply form-action to the post-login redirect: allowed return
    // origins must be listed.
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:8080"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script"), "pages work without JavaScript");
    assert!(!html.contains("style=\""), "no inline styles (CSP)");
}
