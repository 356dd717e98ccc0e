//! Forward auth with explicit trust: the attacks of the security review
//! (issue 11, findings 1 and 4) through the real binary, and the documented
//! nginx set-up through a real nginx.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{
    ADMIN_PASSWORD, DEMO_PASSWORD, client, expect_problem, json_login, seeded_app, session_token,
};
use gatehouse_testkit::{Gateway, binary, free_port};

/// Forward auth from the test (a loopback peer) with `headers`.
async fn ask(
    gateway: &Gateway,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client().get(gateway.url(path)).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn access_token(gateway: &Gateway, tenant: &str, user: &str, password: &str) -> String {
    let response = json_login(gateway, tenant, user, password).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Finding 1: a client-sent header of another family cannot change the
/// request that is decided, in either mode.
#[tokio::test]
async fn a_spoofed_header_of_another_family_cannot_turn_a_denied_delete_into_a_read() {
    let (nginx_mode, _db, _) = seeded_app(&[]).await;
    let bob = access_token(&nginx_mode, "acme", "bob", DEMO_PASSWORD).await;
    let spoofed = [
        ("x-original-method", "DELETE"),
        ("x-original-uri", "/orders/42"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/orders/1"),
    ];
    let denied = ask(&nginx_mode, "/v1/verify?tenant=acme", &bob, &spoofed).await;
    let problem = expect_problem(denied, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("delete on orders:42"),
        "{problem}"
    );
    // Only X-Forwarded-* (a Traefik header) and no X-Original-*: not a read.
    let only_other_family = ask(
        &nginx_mode,
        "/v1/verify?tenant=acme",
        &bob,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orders/1"),
        ],
    )
    .await;
    let problem = expect_problem(only_other_family, 400).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("x-original-method is required"),
        "{problem}"
    );

    let (traefik_mode, _db2, _) = seeded_app(&[("GATEHOUSE_FORWARD_AUTH", "traefik")]).await;
    let bob = access_token(&traefik_mode, "acme", "bob", DEMO_PASSWORD).await;
    let reversed = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/orders/42"),
        ("x-original-method", "GET"),
        ("x-original-uri", "/orders/1"),
    ];
    expect_problem(
        ask(&traefik_mode, "/v1/verify?tenant=acme", &bob, &reversed).await,
        403,
    )
    .await;
    let read = ask(
        &traefik_mode,
        "/v1/verify?tenant=acme",
        &bob,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orders/1"),
        ],
    )
    .await;
    assert_eq!(read.status(), 200);
}

/// Only trusted proxies are answered: a client that reaches the gateway
/// directly cannot ask about any request, however well it forges headers.
#[tokio::test]
async fn forward_auth_answers_only_trusted_proxies() {
    let (gateway, _db, _) = seeded_app(&[("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    let bob = access_token(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let response = ask(
        &gateway,
        "/v1/verify?tenant=acme",
        &bob,
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/orders/1"),
        ],
    )
    .await;
    let problem = expect_problem(response, 403).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:untrusted-proxy");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("GATEHOUSE_TRUSTED_PROXIES"),
        "{problem}"
    );
    let (no_proxies, _db2, _) = seeded_app(&[("GATEHOUSE_TRUSTED_PROXIES", "")]).await;
    let bob = access_token(&no_proxies, "acme", "bob", DEMO_PASSWORD).await;
    expect_problem(
        ask(
            &no_proxies,
            "/v1/verify?tenant=acme",
            &bob,
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/orders/1"),
            ],
        )
        .await,
        403,
    )
    .await;
}

/// Finding 4: the protected app's tenant comes from the proxy
/// configuration, so a tenant admin's self-granted `*`/`*` opens nothing
/// outside their tenant, and a credential of another tenant is refused.
#[tokio::test]
async fn forward_auth_is_pinned_to_the_protected_apps_tenant() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let alice_session = session_token(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    let granted = client()
        .post(gateway.url("/admin/api/v1/tenants/acme/roles/tenant-admin/permissions"))
        .bearer_auth(&alice_session)
        .json(&json!({"resource": "*", "action": "*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    let alice = access_token(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    let read = [
        ("x-original-method", "DELETE"),
        ("x-original-uri", "/anything/1"),
    ];
    assert_eq!(
        ask(&gateway, "/v1/verify?tenant=acme", &alice, &read)
            .await
            .status(),
        200,
        "alice may do anything in acme"
    );
    for credential in [alice.clone(), alice_session.clone()] {
        let other = ask(&gateway, "/v1/verify?tenant=system", &credential, &read).await;
        let problem = expect_problem(other, 401).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("tenant system"),
            "{problem}"
        );
    }
    // The platform admin's token does not open acme's apps either.
    let admin = access_token(&gateway, "system", "admin", ADMIN_PASSWORD).await;
    expect_problem(
        ask(&gateway, "/v1/verify?tenant=acme", &admin, &read).await,
        401,
    )
    .await;
    // No tenant named and no default: 400 naming the parameter.
    let unnamed = expect_problem(ask(&gateway, "/v1/verify", &alice, &read).await, 400).await;
    assert!(
        unnamed["detail"]
            .as_str()
            .unwrap()
            .contains("missing query parameter tenant"),
        "{unnamed}"
    );

    // With a default tenant, the proxy may leave the parameter out.
    let (pinned, _db2, _) = seeded_app(&[("GATEHOUSE_FORWARD_AUTH_TENANT", "acme")]).await;
    let bob = access_token(&pinned, "acme", "bob", DEMO_PASSWORD).await;
    let admin = access_token(&pinned, "system", "admin", ADMIN_PASSWORD).await;
    let get = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/orders/1"),
    ];
    assert_eq!(ask(&pinned, "/v1/verify", &bob, &get).await.status(), 200);
    expect_problem(ask(&pinned, "/v1/verify", &admin, &get).await, 401).await;
}

/// A child process killed when dropped. (nginx runs with `master_process
/// off`, one process, so killing it leaves no orphaned worker behind.)
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port} after 5 s");
}

/// The nginx snippet of `docs/forward-auth.md`, with the test's ports.
fn nginx_config(dir: &std::path::Path, listen: u16, gateway: &str, upstream: u16) -> String {
    let snippet = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/nginx-forward-auth.conf"),
    )
    .expect("docs/nginx-forward-auth.conf");
    let server = snippet
        .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"))
        .replace("http://gatehouse:8080", gateway)
        .replace(
            "http://orders:9101",
            &format!("http://127.0.0.1:{upstream}"),
        );
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {server}\n}}\n"
    )
}

/// The documented nginx `auth_request` set-up, in a real nginx: bob's DELETE
/// with spoofed `X-Forwarded-Method: GET` (and `X-Original-Method: GET`)
/// never reaches the upstream, and client-sent identity headers are replaced.
#[tokio::test]
async fn through_a_real_nginx_spoofed_headers_change_nothing() {
    let nginx_bin = std::env::var("GATEHOUSE_TEST_NGINX").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_NGINX is not set: run the suite with scripts/test (it installs nginx)"
        )
    });
    let (gateway, _db, _) = seeded_app(&[]).await;
    let upstream_port = free_port();
    let _upstream = Process(
        Command::new(binary("demo-upstream"))
            .args([
                "--name",
                "v1",
                "--listen",
                &format!("127.0.0.1:{upstream_port}"),
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn demo-upstream"),
    );
    let dir = std::env::temp_dir().join(format!("gh-nginx-{}", gatehouse_testkit::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nginx_port = free_port();
    let config = dir.join("nginx.conf");
    std::fs::write(
        &config,
        nginx_config(&dir, nginx_port, &gateway.base_url, upstream_port),
    )
    .unwrap();
    let _nginx = Process(
        Command::new(&nginx_bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nginx"),
    );
    wait_for_port(upstream_port).await;
    wait_for_port(nginx_port).await;
    let bob = access_token(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let via_nginx = |method: Method, path: &str| {
        client()
            .request(method, format!("http://127.0.0.1:{nginx_port}{path}"))
            .bearer_auth(&bob)
    };

    let read = via_nginx(Method::GET, "/orders/42")
        .header("x-gatehouse-user", "admin")
        .header("x-gatehouse-tenant", "system")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let echoed: Value = read.json().await.unwrap();
    assert_eq!(echoed["method"], "GET");
    assert_eq!(
        echoed["headers"]["x-gatehouse-user"], "bob",
        "the gateway's answer replaces the client's: {echoed}"
    );
    assert_eq!(echoed["headers"]["x-gatehouse-tenant"], "acme", "{echoed}");

    for spoof in [
        [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orders/1"),
        ],
        [
            ("x-original-method", "GET"),
            ("x-original-uri", "/orders/1"),
        ],
    ] {
        let mut request = via_nginx(Method::DELETE, "/orders/42");
        for (name, value) in spoof {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            403,
            "the DELETE with {spoof:?} must be refused by nginx"
        );
    }
    let anonymous = client()
        .get(format!("http://127.0.0.1:{nginx_port}/orders/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let _ = std::fs::remove_dir_all(&dir);
}
