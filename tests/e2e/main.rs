//! End-to-end tests: the real `gatehouse` binary against the real Postgres and
//! Redis started by `scripts/test`, each test with its own database and Redis
//! key prefix (or its own redis-server when it must stop it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::missing_panics_doc,
    reason = "tests: a failed expectation is a test failure with its location"
)]

mod admission;
mod authz;
mod cache;
mod cli;
mod forward_auth;
mod http_basics;
mod login_api;
mod login_browser;
mod proxy;
mod proxy_security;
mod readiness;
mod revocation_load;
mod routing;
mod throttle;
mod tokens;
mod verify_layer;

use gatehouse_testkit::{Gateway, TestDatabase, TestRedis, gateway_env, run_gatehouse};

/// Password of `admin` in seeded test apps.
pub(crate) const ADMIN_PASSWORD: &str = "admin-password-e2e";
/// Password of `alice` and `bob` in seeded test apps.
pub(crate) const DEMO_PASSWORD: &str = "demo-password-e2e";

/// Cheap argon2 for tests (the cost itself is measured by the benchmarks).
pub(crate) fn cheap_argon2() -> Vec<(String, String)> {
    vec![
        ("GATEHOUSE_ARGON2__MEMORY_KIB".to_owned(), "1024".to_owned()),
        ("GATEHOUSE_ARGON2__ITERATIONS".to_owned(), "1".to_owned()),
    ]
}

/// A gateway over a database seeded with `bootstrap --demo` (known passwords),
/// plus `extra` settings. Returns the environment too, for CLI calls.
pub(crate) async fn seeded_app(
    extra: &[(&str, &str)],
) -> (Gateway, TestDatabase, Vec<(String, String)>) {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let mut vars = gateway_env(&db, &redis.url, &redis.prefix);
    vars.extend(cheap_argon2());
    // The tests stand where a loopback nginx would: a trusted proxy.
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
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    let seeded = run_gatehouse(&["bootstrap", "--demo"], &vars).await;
    assert!(
        seeded.status.success(),
        "bootstrap: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let gateway = Gateway::spawn(&vars).await;
    (gateway, db, vars)
}

/// A gateway on a fresh database and the shared Redis under a fresh prefix.
pub(crate) async fn spawn_app() -> (Gateway, TestDatabase) {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let gateway = Gateway::spawn(&gateway_env(&db, &redis.url, &redis.prefix)).await;
    (gateway, db)
}

/// Forward auth as a loopback nginx asks it (the default nginx mode, from a
/// trusted address): may the caller `GET /orders/1` of `tenant`'s app?
pub(crate) fn forward_auth(gateway: &Gateway, tenant: &str) -> reqwest::RequestBuilder {
    client()
        .get(gateway.url(&format!("/v1/verify?tenant={tenant}")))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/orders/1")
}

/// The tenant slug (`tid` claim) of an access token, read without checking it.
pub(crate) fn tid_of(jwt: &str) -> String {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["tid"].as_str().expect("tid claim").to_owned()
}

/// Polls `probe` every 5 ms until it holds, for at most 5 s, and returns how
/// long that took. For changes made behind the gateway's back (SQL by hand):
/// the outbox trigger, relay and stream carry them to the caches within
/// milliseconds; 5 s is a generous bound that never depends on timing.
pub(crate) async fn until_in_force<F, Fut>(what: &str, mut probe: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !probe().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "not in force after 5 s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// A loopback TCP proxy that a test can cut (every connection closed, new
/// ones refused) and restore: one instance loses Redis or Postgres while the
/// rest of the world keeps it, or a server "restarts" under a running pool.
pub(crate) struct CuttableLink {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl CuttableLink {
    pub(crate) async fn to(upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let (open, live) = (open.clone(), live.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: refused
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    live.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        Self {
            port,
            open,
            live,
            _accept: accept,
        }
    }

    pub(crate) fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub(crate) fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The gateway's Prometheus exposition text (its metrics listener).
pub(crate) async fn metrics_text(gateway: &Gateway) -> String {
    client()
        .get(gateway.metrics("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An HTTP client that never follows redirects (tests look at them).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build the HTTP client")
}

/// Asserts a problem+json response with `status` and returns its body.
pub(crate) async fn expect_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem lacks {member}: {body}");
    }
    body
}

/// `POST /v1/auth/login` as JSON.
pub(crate) async fn json_login(
    gateway: &Gateway,
    tenant: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/auth/login"))
        .json(&serde_json::json!({ "tenant": tenant, "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Signs in through the JSON API and returns the session token (asserts 200).
pub(crate) async fn session_token(
    gateway: &Gateway,
    tenant: &str,
    username: &str,
    password: &str,
) -> String {
    let response = json_login(gateway, tenant, username, password).await;
    assert_eq!(response.status(), 200, "sign-in of {username}@{tenant}");
    let body: serde_json::Value = response.json().await.unwrap();
    body["session_token"].as_str().unwrap().to_owned()
}

/// Makes `service` available to `tenant` through the admin API, as the
/// platform admin (asserts 201 or 200), and returns once the gateway's
/// mirror has it: `probe` (a request that needs it) says so.
pub(crate) async fn make_available<F, Fut>(gateway: &Gateway, service: &str, tenant: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let admin = session_token(gateway, "system", "admin", ADMIN_PASSWORD).await;
    let response = client()
        .put(gateway.url(&format!(
            "/admin/api/v1/services/{service}/tenants/{tenant}"
        )))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(response.status().as_u16(), 200 | 201),
        "{service} available to {tenant}: {}",
        response.status()
    );
    until_in_force(&format!("{service} available to {tenant}"), probe).await;
}

/// A service client created by the platform admin (bound to `tenant` when
/// given); returns its secret.
pub(crate) async fn service_client(gateway: &Gateway, id: &str, tenant: Option<&str>) -> String {
    let admin = session_token(gateway, "system", "admin", ADMIN_PASSWORD).await;
    let created = client()
        .post(gateway.url("/admin/api/v1/service-clients"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "client_id": id, "tenant": tenant }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body: serde_json::Value = created.json().await.unwrap();
    body["client_secret"].as_str().unwrap().to_owned()
}

/// `POST /v1/auth/refresh` with `token`.
pub(crate) async fn refresh(gateway: &Gateway, token: &str) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap()
}

/// `POST /oauth2/introspect` of `token`, authenticated as service client `id`.
pub(crate) async fn introspect(
    gateway: &Gateway,
    id: &str,
    secret: &str,
    token: &str,
) -> reqwest::Response {
    client()
        .post(gateway.url("/oauth2/introspect"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

/// The value of the hidden form field `name` in a rendered page.
pub(crate) fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

/// A child process killed when dropped. (nginx runs with `master_process
/// off`, one process, so killing it leaves no orphaned worker behind.)
pub(crate) struct Process(pub(crate) tokio::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Waits (at most 5 s) until something listens on the loopback `port`.
pub(crate) async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port} after 5 s");
}

/// A `demo-upstream` reporting `version`, on a free port.
pub(crate) fn demo_upstream(version: &str) -> (Process, u16) {
    demo_upstream_on(version, gatehouse_testkit::free_port(), &[])
}

/// A `demo-upstream` reporting `version` on `port`, with extra flags
/// (`--error-percent`, `--latency-ms`).
pub(crate) fn demo_upstream_on(version: &str, port: u16, flags: &[&str]) -> (Process, u16) {
    let process = Process(
        tokio::process::Command::new(gatehouse_testkit::binary("demo-upstream"))
            .args(["--name", version, "--listen", &format!("127.0.0.1:{port}")])
            .args(flags)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn demo-upstream"),
    );
    (process, port)
}
