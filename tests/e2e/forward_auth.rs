//! Forward auth with explicit trust: the attacks of the security review
//! (issue 11, findings 1 and 4) through the real binary, and the documented
//! nginx set-up through a real nginx.

use std::process::Stdio;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::{
    ADMIN_PASSWORD, DEMO_PASSWORD, Process, client, demo_upstream, expect_problem, json_login,
    seeded_app, session_token, wait_for_port,
};
use gatehouse_testkit::{Gateway, free_port};

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

/// A documented nginx snippet (`docs/<file>`) with the test's addresses
/// substituted (`replacements`: documented text → test text), wrapped in a
/// minimal nginx configuration.
fn nginx_config(dir: &std::path::Path, file: &str, replacements: &[(&str, String)]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/{file}"));
    let mut server = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    for (documented, actual) in replacements {
        assert!(
            server.contains(documented),
            "{file} no longer has {documented:?}"
        );
        server = server.replace(documented, actual);
    }
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {server}\n}}\n"
    )
}

/// A real nginx (`GATEHOUSE_TEST_NGINX`) serving `config` on a free port;
/// returns it, its port and its directory (removed by the caller).
fn nginx(
    config: impl FnOnce(&std::path::Path, u16) -> String,
) -> (Process, u16, std::path::PathBuf) {
    let nginx_bin = std::env::var("GATEHOUSE_TEST_NGINX").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_NGINX is not set: run the suite with scripts/test (it installs nginx)"
        )
    });
    let dir = std::env::temp_dir().join(format!("gh-nginx-{}", gatehouse_testkit::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config(&dir, port)).unwrap();
    let process = Process(
        Command::new(&nginx_bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&file)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nginx"),
    );
    (process, port, dir)
}

/// The documented nginx `auth_request` set-up, in a real nginx: bob's DELETE
/// with spoofed `X-Forwarded-Method: GET` (and `X-Original-Method: GET`)
/// never reaches the upstream, and client-sent identity headers are replaced.
#[tokio::test]
async fn through_a_real_nginx_spoofed_headers_change_nothing() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let (_upstream, upstream_port) = demo_upstream("v1");
    let (_nginx, nginx_port, dir) = nginx(|dir, port| {
        nginx_config(
            dir,
            "nginx-forward-auth.conf",
            &[
                ("listen 80;", format!("listen 127.0.0.1:{port};")),
                ("http://gatehouse:8080", gateway.base_url.clone()),
                (
                    "http://orders:9101",
                    format!("http://127.0.0.1:{upstream_port}"),
                ),
            ],
        )
    });
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

/// Grey routing without our proxy: the documented nginx set-up routes on the
/// `X-Gatehouse-Upstream-Version` that verify answers, in a real nginx with
/// two real upstream versions. Each change to acme's rollout (made in Postgres)
/// is in force at nginx within the bound: the canary grows to 100%, then the
/// rollout is removed and acme falls back to the default version.
#[tokio::test]
async fn through_a_real_nginx_each_tenant_reaches_its_rollouts_version() {
    let (gateway, db, _) = seeded_app(&[]).await;
    let (_v1, v1_port) = demo_upstream("v1");
    let (_v2, v2_port) = demo_upstream("v2");
    let (_nginx, nginx_port, dir) = nginx(|dir, port| {
        nginx_config(
            dir,
            "nginx-grey-routing.conf",
            &[
                ("listen 80;", format!("listen 127.0.0.1:{port};")),
                ("http://gatehouse:8080", gateway.base_url.clone()),
                ("orders-v1:9101", format!("127.0.0.1:{v1_port}")),
                ("orders-v2:9102", format!("127.0.0.1:{v2_port}")),
            ],
        )
    });
    wait_for_port(v1_port).await;
    wait_for_port(v2_port).await;
    wait_for_port(nginx_port).await;
    let bob = access_token(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let version_served = || async {
        let response = client()
            .get(format!("http://127.0.0.1:{nginx_port}/orders/7"))
            .bearer_auth(&bob)
            .header("x-gatehouse-upstream-version", "v9")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echoed: Value = response.json().await.unwrap();
        assert_eq!(
            echoed["headers"]["x-gatehouse-upstream-version"], echoed["version"],
            "the upstream is told its version by the gateway, never by the client: {echoed}"
        );
        echoed["version"].as_str().unwrap().to_owned()
    };
    // The demo rollout (v1 → v2 for 20% of tenants): acme's side is its bucket's.
    let acme: String = sqlx::query_scalar("SELECT id::text FROM tenants WHERE slug = 'acme'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let demo = gatehouse_routing::Rule::split("v1", "v2", 2000, "r1", false).unwrap();
    let expected = demo.version_for("orders", &acme, None).0.to_owned();
    crate::until_in_force("nginx follows the demo rollout", || async {
        version_served().await == expected
    })
    .await;
    sqlx::query("UPDATE tenant_rollouts SET canary_buckets = 10000")
        .execute(&db.pool)
        .await
        .unwrap();
    crate::until_in_force("the canary at 100%", || async {
        version_served().await == "v2"
    })
    .await;
    sqlx::query("DELETE FROM tenant_rollouts")
        .execute(&db.pool)
        .await
        .unwrap();
    crate::until_in_force("rolled back to the default", || async {
        version_served().await == "v1"
    })
    .await;
    // A bad service name on the verify URL is the proxy's mistake: 400, not a silent default.
    let bad = forward_auth_with(
        &gateway,
        "/v1/verify?tenant=acme&service=Not%20A%20Name",
        &bob,
    )
    .await;
    let problem = expect_problem(bad, 400).await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("service"),
        "{problem}"
    );
    let anonymous = client()
        .get(format!("http://127.0.0.1:{nginx_port}/orders/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Forward auth as nginx asks it, for `path`.
async fn forward_auth_with(gateway: &Gateway, path: &str, token: &str) -> reqwest::Response {
    ask(
        gateway,
        path,
        token,
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/orders/7"),
        ],
    )
    .await
}
