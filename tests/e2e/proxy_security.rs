//! The proxy tried as an attacker would (security round 2), through the real
//! binary, against a raw upstream that records every request head it gets
//! and tries to set our cookies in every answer:
//! - encoded dot segments and slashes cannot move the decision;
//! - our credentials never reach an upstream, our cookies are never set by one;
//! - only allowed upgrades pass, a cookie upgrade needs our origin, a tunnel
//!   closes when its session ends;
//! - a client's broken body is not the instance's failure;
//! - half-sent heads are cut and connections are capped per address;
//! - apps on their own origin: the handshake, host-scoped sessions that end
//!   with the user's, and an admin API closed to other origins.

#![allow(
    clippy::too_many_lines,
    reason = "end-to-end scenarios read best as one story each"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::{SAME_ORIGIN, access_token, alice, port_of, read_head, register};
use crate::{DEMO_PASSWORD, client, expect_problem, seeded_app, until_in_force};
use gatehouse_testkit::{Gateway, TestDatabase, free_port};

/// A raw HTTP/1.1 upstream on loopback. Every request head it reads is kept
/// (lower-cased). It answers 200 with `Set-Cookie` for every cookie name of
/// ours plus one of its own; `101` when asked to upgrade (then echoes); and
/// `101` unasked for the path `/switch`.
struct RawUpstream {
    address: String,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_raw(stream, Arc::clone(&seen)));
            }
        });
        Self {
            address,
            heads,
            task,
        }
    }

    /// Every head seen so far, joined.
    fn seen(&self) -> String {
        self.heads.lock().unwrap().join("\n----\n")
    }

    fn count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

async fn serve_raw(mut stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buffer = Vec::new();
    loop {
        // One head.
        let head_end = loop {
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        buffer.drain(..head_end);
        seen.lock().unwrap().push(head.clone());
        // Its body: a length, or chunks up to the last one.
        if let Some(length) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while buffer.len() < length {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            buffer.drain(..length);
        } else if head.contains("transfer-encoding: chunked") {
            loop {
                if let Some(end) = find(&buffer, b"0\r\n\r\n") {
                    buffer.drain(..end + 5);
                    break;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
        }
        let asked_upgrade = head.contains("\r\nupgrade:");
        let first_line = head.lines().next().unwrap_or_default().to_owned();
        if asked_upgrade || first_line.contains(" /switch ") {
            let answer = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nset-cookie: gh_session=planted\r\n\r\n";
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            // Echo whatever comes, until either side closes.
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            return;
        }
        let body = format!("{{\"line\":{first_line:?}}}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             set-cookie: gh_session=planted; Path=/\r\n\
             set-cookie: __Host-gh_session=planted; Path=/; Secure\r\n\
             set-cookie: gh_device=planted; Path=/\r\n\
             set-cookie: gh_app=planted; Path=/\r\n\
             set-cookie: GH_LOGIN_NONCE=planted; Path=/\r\n\
             set-cookie: app_pref=kept; Path=/\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A seeded gateway whose `orders` versions are both the raw upstream.
struct Attacked {
    gateway: Gateway,
    db: TestDatabase,
    upstream: RawUpstream,
    bob: String,
}

async fn attacked(extra: &[(&str, &str)]) -> Attacked {
    let (gateway, db, _) = seeded_app(extra).await;
    let upstream = RawUpstream::start().await;
    register(&db.pool, "v1", &upstream.address).await;
    register(&db.pool, "v2", &upstream.address).await;
    let bob = access_token(&gateway, "acme", "bob").await;
    Attacked {
        gateway,
        db,
        upstream,
        bob,
    }
}

/// Sends `head` (with `\r\n\r\n` added) on a fresh connection; the answer's head.
async fn raw_request(port: u16, head: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(&mut stream).await
}

async fn mirrored(a: &Attacked) {
    until_in_force("orders is mirrored", || async {
        client()
            .get(a.gateway.url("/svc/orders/items"))
            .bearer_auth(&a.bob)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}

#[tokio::test]
async fn encoded_dot_segments_and_slashes_cannot_move_the_decision() {
    let a = attacked(&[SAME_ORIGIN]).await;
    mirrored(&a).await;
    let port = port_of(&a.gateway);
    let admin = access_token(&a.gateway, "system", "admin").await;
    let tenant_admin = access_token(&a.gateway, "acme", "alice").await;
    // The platform's own tenant may use orders (as when the finding was
    // seen), so what refuses the admin below is the decision.
    crate::make_available(&a.gateway, "orders", "system", || async {
        client()
            .get(a.gateway.url("/svc/orders/items"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status()
            == 403
    })
    .await;
    let before = a.upstream.count();
    // The three requests seen live, and their relatives.
    for (method, path, token) in [
        ("GET", "/svc/orders/..%2Fadmin:x", &admin),
        ("GET", "/svc/billing/..%2Forders%2F1", &a.bob),
        ("DELETE", "/svc/orders/..%2Fadmin:acme:x", &tenant_admin),
        ("GET", "/svc/orders/..%2fadmin:x", &admin),
        ("GET", "/svc/orders/x/%2e%2E%2F%2e%2e%2Fadmin", &admin),
        ("GET", "/svc/orders/.%2E/admin", &admin),
        ("GET", "/svc/orders/a%5C..%5Cadmin", &admin),
        ("GET", "/svc/orders/a\\..\\admin", &admin),
        ("GET", "/svc/orders/items%2F7", &a.bob),
    ] {
        let answer = raw_request(
            port,
            &format!(
                "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\nconnection: close"
            ),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{method} {path}: {answer}"
        );
    }
    assert_eq!(
        a.upstream.count(),
        before,
        "no refused request reached the upstream:\n{}",
        a.upstream.seen()
    );
    // The platform admin has no grant on orders however the path is spelt,
    // and the tenant admin's delete meets the same decision as a plain one.
    expect_problem(
        client()
            .get(a.gateway.url("/svc/orders/admin:x"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    // bob's ordinary reads still pass, with encoded characters that are not
    // separators kept for the upstream as sent.
    let ok = client()
        .get(a.gateway.url("/svc/orders/items/a%20b"))
        .bearer_auth(&a.bob)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(a.upstream.seen().contains("get /items/a%20b http/1.1"));
}

#[tokio::test]
async fn a_service_that_opts_in_keeps_encoded_slashes_inside_their_segment() {
    let a = attacked(&[SAME_ORIGIN, ("GATEHOUSE_PROXY__ENCODED_SLASHES", "orders")]).await;
    mirrored(&a).await;
    let port = port_of(&a.gateway);
    let admin = access_token(&a.gateway, "system", "admin").await;
    // The decision sees `orders:a/b`, inside orders: bob may read it, and the
    // upstream gets the path as sent.
    let answer = raw_request(
        port,
        &format!(
            "GET /svc/orders/items%2F7 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\nconnection: close",
            a.bob
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(a.upstream.seen().contains("get /items%2f7 http/1.1"));
    // Dot segments stay refused around an encoded slash.
    let answer = raw_request(
        port,
        &format!(
            "GET /svc/orders/..%2Fadmin:x HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {admin}\r\nconnection: close"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn our_credentials_never_reach_an_upstream_and_it_sets_none_of_our_cookies() {
    let a = attacked(&[SAME_ORIGIN]).await;
    mirrored(&a).await;
    let session = crate::session_token(&a.gateway, "acme", "bob", DEMO_PASSWORD).await;
    // An access token, a session token as Bearer, a session cookie.
    for (name, request) in [
        (
            "access token",
            client()
                .get(a.gateway.url("/svc/orders/a"))
                .bearer_auth(&a.bob),
        ),
        (
            "session token",
            client()
                .get(a.gateway.url("/svc/orders/b"))
                .bearer_auth(&session),
        ),
        (
            "session cookie",
            client()
                .get(a.gateway.url("/svc/orders/c"))
                .header("cookie", format!("gh_session={session}; theme=dark"))
                .header("authorization", "Basic YXBwOnNlY3JldA=="),
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            cookies,
            ["app_pref=kept; Path=/"],
            "{name}: only the app's own cookie"
        );
    }
    let seen = a.upstream.seen();
    assert!(!seen.contains(&a.bob.to_ascii_lowercase()), "{seen}");
    assert!(!seen.contains(&session.to_ascii_lowercase()), "{seen}");
    assert!(!seen.contains("bearer"), "{seen}");
    assert!(seen.contains("x-gatehouse-user: bob"), "{seen}");
    // Not ours, and admitted by the cookie: the app's own Basic credential passes.
    assert!(
        seen.contains("authorization: basic yxbwonnly3jlda=="),
        "{seen}"
    );
    assert!(seen.contains("cookie: theme=dark"), "{seen}");
}

#[tokio::test]
async fn only_allowed_upgrades_pass_cookie_upgrades_need_our_origin_and_tunnels_end_with_sessions()
{
    let a = attacked(&[SAME_ORIGIN, ("GATEHOUSE_PROXY__TUNNEL_RECHECK_MS", "200")]).await;
    mirrored(&a).await;
    let port = port_of(&a.gateway);
    // h2c is not allowed: the request goes on as a plain one, no tunnel.
    let before = a.upstream.count();
    let answer = raw_request(
        port,
        &format!(
            "GET /svc/orders/h2 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA",
            a.bob
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let head = a.upstream.heads.lock().unwrap()[before].clone();
    assert!(!head.contains("upgrade"), "{head}");
    assert!(!head.contains("http2-settings"), "{head}");
    // An instance that switches protocols unasked gets no tunnel.
    let answer = raw_request(
        port,
        &format!(
            "GET /svc/orders/switch HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\nconnection: close",
            a.bob
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

    let session = crate::session_token(&a.gateway, "acme", "bob", DEMO_PASSWORD).await;
    let websocket = |origin: &str, credential: &str| {
        format!(
            "GET /svc/orders/ws HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{credential}\r\norigin: {origin}\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ=="
        )
    };
    let cookie = format!("cookie: gh_session={session}");
    // A WebSocket from another site, riding the cookie: refused like a POST.
    let answer = raw_request(port, &websocket("https://evil.example", &cookie)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // From our own origin it opens, and the upstream never sets our cookie.
    let own = format!("http://127.0.0.1:{port}");
    let answer = raw_request(port, &websocket(&own, &cookie)).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("set-cookie"),
        "{answer}"
    );

    // A tunnel opened with a session token ends when the session does.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = websocket(&own, &format!("authorization: Bearer {session}"));
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    let out = client()
        .post(a.gateway.url("/v1/auth/logout-all"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success(), "{}", out.status());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the tunnel is closed after its session ended"
    );
}

#[tokio::test]
async fn a_clients_broken_body_is_not_the_instances_failure() {
    // One instance for both versions, whose breaker opens after 3 failures.
    let a = attacked(&[SAME_ORIGIN, ("GATEHOUSE_ROUTING__BREAKER_FAILURES", "3")]).await;
    mirrored(&a).await;
    let port = port_of(&a.gateway);
    for round in 0..6 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!(
            "POST /svc/orders/items HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n5\r\nhello\r\nzz-not-a-size\r\n\r\n",
            a.bob
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.is_empty(),
            "round {round}: {answer}"
        );
    }
    // The instance is still in service: no breaker opened on the client's faults.
    for _ in 0..3 {
        let ok = client()
            .get(a.gateway.url("/svc/orders/items"))
            .bearer_auth(&a.bob)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let metrics = crate::metrics_text(&a.gateway).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gatehouse_proxy_client_faults_total ") && !l.ends_with(" 0")),
        "client faults are counted as such"
    );
}

#[tokio::test]
async fn half_sent_heads_are_cut_and_connections_are_capped_per_address() {
    let (gateway, _db, _) = seeded_app(&[
        ("GATEHOUSE_CONNECTIONS__HEADER_READ_TIMEOUT_MS", "500"),
        ("GATEHOUSE_CONNECTIONS__IDLE_TIMEOUT_MS", "500"),
        ("GATEHOUSE_CONNECTIONS__MAX_PER_ADDRESS", "20"),
    ])
    .await;
    let port = port_of(&gateway);
    // A whole head, then a body that stops coming: the idle timeout ends it
    // (the head deadline no longer applies, the request deadline is 30 s).
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled
        .write_all(b"POST /v1/auth/login HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"tenant\":")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a stalled body is cut by the idle timeout");
    drop(stalled);
    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Every one of them is closed: the 10 past the cap at once, the others
    // when their head deadline passes.
    for (i, stream) in slow.iter_mut().enumerate() {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "connection {i} is still open");
    }
    // A well-behaved client is served.
    let ok = client().get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let metrics = crate::metrics_text(&gateway).await;
    for wanted in [
        "gatehouse_connections_refused_total{listener=\"main\",reason=\"address_full\"}",
        "gatehouse_connections_closed_total{listener=\"main\",reason=\"header_timeout\"}",
        "gatehouse_connections_closed_total{listener=\"main\",reason=\"idle\"}",
    ] {
        assert!(metrics.contains(wanted), "{wanted} in\n{metrics}");
    }
}

/// A gateway whose apps listener serves `orders` at `orders.localhost` (and
/// names `billing.localhost` too), without the same-origin mode.
async fn own_origin() -> (Attacked, u16) {
    let apps_port = free_port();
    let listen = format!("127.0.0.1:{apps_port}");
    // The console's public origin must be known: the apps send browsers there.
    let console_port = free_port();
    let console = format!("127.0.0.1:{console_port}");
    let issuer = format!("http://{console}");
    let a = attacked(&[
        ("GATEHOUSE_LISTEN", console.as_str()),
        ("GATEHOUSE_ISSUER", issuer.as_str()),
        ("GATEHOUSE_PROXY_LISTEN", listen.as_str()),
        (
            "GATEHOUSE_PROXY__HOSTS",
            "orders.localhost=orders,billing.localhost=billing",
        ),
        ("GATEHOUSE_PROXY__LOGIN_TENANT", "acme"),
    ])
    .await;
    (a, apps_port)
}

fn apps_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// `GET /v1/proxy/handshake?to=…` on the console, with the console's cookie if any.
async fn handshake(gateway: &Gateway, to: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!(
        "{}/v1/proxy/handshake?to={}",
        gateway.base_url,
        url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
    ));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// Redeems a handshake `code` on the apps listener, as the app at `host`.
async fn redeem(port: u16, host: &str, code: &str) -> reqwest::Response {
    app_request(
        reqwest::Method::GET,
        port,
        host,
        format!("/.gatehouse/callback?code={code}"),
    )
    .send()
    .await
    .unwrap()
}

/// A request to the apps listener on `port`, for the app at `host`.
fn app_request(
    method: reqwest::Method,
    port: u16,
    host: impl AsRef<str>,
    path: impl AsRef<str>,
) -> reqwest::RequestBuilder {
    client()
        .request(method, apps_url(port, path.as_ref()))
        .header("host", host.as_ref())
}

#[tokio::test]
async fn an_app_on_its_own_origin_gets_a_host_scoped_session_through_the_handshake() {
    let (a, apps) = own_origin().await;
    let host = format!("orders.localhost:{apps}");
    until_in_force("orders is mirrored", || async {
        app_request(reqwest::Method::GET, apps, &host, "/items")
            .bearer_auth(&a.bob)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    // The same-origin mode is off: /svc is not served next to the console.
    expect_problem(
        client()
            .get(a.gateway.url("/svc/orders/items"))
            .bearer_auth(&a.bob)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    // A host nobody configured gets nothing.
    expect_problem(
        app_request(reqwest::Method::GET, apps, "evil.localhost", "/items")
            .bearer_auth(&a.bob)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    // 1. A signed-out browser goes to the console's handshake.
    let page = app_request(reqwest::Method::GET, apps, &host, "/items?x=1")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    let to = format!("http://{host}/items?x=1");
    let start = format!(
        "{}/v1/proxy/handshake?to={}",
        a.gateway.base_url,
        url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
    );
    assert_eq!(page.headers()["location"], start.as_str());
    // 2. Signed out there too: the tenant's sign-in, and back to the handshake.
    let signed_out = handshake(&a.gateway, &to, None).await;
    assert_eq!(signed_out.status(), 303);
    let login = signed_out.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        login.starts_with("/t/acme/login?return_to=%2Fv1%2Fproxy%2Fhandshake"),
        "{login}"
    );
    // Signed in: a one-time code for this host only.
    let session = crate::session_token(&a.gateway, "acme", "bob", DEMO_PASSWORD).await;
    let console_cookie = format!("gh_session={session}");
    let code_for = |to: String| {
        let console_cookie = console_cookie.clone();
        let gateway = &a.gateway;
        async move {
            let answer = handshake(gateway, &to, Some(&console_cookie)).await;
            assert_eq!(answer.status(), 303);
            answer.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let callback = code_for(to.clone()).await;
    let prefix = format!("http://{host}/.gatehouse/callback?code=");
    assert!(callback.starts_with(&prefix), "{callback}");
    let code = callback[prefix.len()..].to_owned();
    // The handshake hands codes only to apps this gateway serves.
    for bad in [
        "https://evil.example/x".to_owned(),
        format!("http://orders.localhost.evil.example:{apps}/"),
        format!("http://bob@orders.localhost:{apps}/"),
        "/relative".to_owned(),
    ] {
        expect_problem(
            handshake(&a.gateway, &bad, Some(&console_cookie)).await,
            400,
        )
        .await;
    }
    // A protocol-relative path cannot turn the return into a redirect elsewhere.
    let sneaky = code_for(format!("http://{host}//evil.example/x")).await;
    let sneaky_code = &sneaky[prefix.len()..];
    let landed = redeem(apps, &host, sneaky_code).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(landed.headers()["location"], "/");
    // The rest of /.gatehouse/ is ours too, never the app's.
    let before_reserved = a.upstream.count();
    let reserved = app_request(reqwest::Method::GET, apps, &host, "/.gatehouse/anything")
        .bearer_auth(&a.bob)
        .send()
        .await
        .unwrap();
    expect_problem(reserved, 404).await;
    assert_eq!(a.upstream.count(), before_reserved);
    // A code taken to another app's host is spent and refused.
    let stolen = code_for(to.clone()).await;
    let stolen_code = &stolen[prefix.len()..];
    let elsewhere = redeem(apps, &format!("billing.localhost:{apps}"), stolen_code).await;
    expect_problem(elsewhere, 400).await;
    expect_problem(redeem(apps, &host, stolen_code).await, 400).await;
    // 3. Redeemed on the app's host: its own cookie, and back to the page.
    let landed = redeem(apps, &host, &code).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(landed.headers()["location"], "/items?x=1");
    let set = landed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("gh_app=ga1."), "{set}");
    assert!(set.contains("HttpOnly") && !set.contains("Domain"), "{set}");
    let app_cookie = set.split(';').next().unwrap().to_owned();
    // A code works once.
    let replay = redeem(apps, &host, &code).await;
    expect_problem(replay, 400).await;

    let before = a.upstream.count();
    let page = app_request(reqwest::Method::GET, apps, &host, "/items")
        .header("cookie", format!("{app_cookie}; theme=dark"))
        .header("x-gatehouse-user", "admin")
        .header("x-gatehouse-tenant", "system")
        .header("x-forwarded-prefix", "/elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let head = a.upstream.heads.lock().unwrap()[before].clone();
    assert!(head.contains("x-gatehouse-user: bob"), "{head}");
    assert!(head.contains("x-gatehouse-tenant: acme"), "{head}");
    assert!(
        !head.contains("admin") && !head.contains("system"),
        "{head}"
    );
    assert!(head.contains("cookie: theme=dark"), "{head}");
    assert!(!head.contains("ga1."), "{head}");
    assert!(!head.contains("x-forwarded-prefix"), "{head}");
    // The app's cookie is good for nothing else: not another app's host,
    // not the console.
    let moved = app_request(
        reqwest::Method::GET,
        apps,
        format!("billing.localhost:{apps}"),
        "/items",
    )
    .header("cookie", &app_cookie)
    .send()
    .await
    .unwrap();
    assert_eq!(moved.status(), 401);
    let console = client()
        .get(a.gateway.url("/v1/auth/me"))
        .header("cookie", app_cookie.replace("gh_app", "gh_session"))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 401);
    // A cookie POST from another origin is refused; from the app's own, it passes.
    let cross = app_request(reqwest::Method::POST, apps, &host, "/items")
        .header("cookie", &app_cookie)
        .header("origin", a.gateway.base_url.as_str())
        .send()
        .await
        .unwrap();
    expect_problem(cross, 403).await;
    let same = app_request(reqwest::Method::POST, apps, &host, "/items")
        .header("cookie", &app_cookie)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    // The app's session ends when the user's does.
    let out = client()
        .post(a.gateway.url("/v1/auth/logout-all"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success());
    let ended = app_request(reqwest::Method::GET, apps, &host, "/items")
        .header("cookie", &app_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 401);
}

#[tokio::test]
async fn the_admin_api_refuses_cookie_requests_from_any_other_origin() {
    let (a, apps) = own_origin().await;
    let session = alice(&a.gateway).await;
    let cookie = format!("gh_session={session}");
    let roles = a.gateway.url("/admin/api/v1/tenants/acme/roles");
    // A script on the app's origin (same site as the console in most
    // deployments, so the browser sends the cookie).
    let app_origin = format!("http://orders.localhost:{apps}");
    for (origin, fetch_site) in [
        (Some(app_origin.as_str()), Some("same-site")),
        (Some(app_origin.as_str()), None),
        (None, Some("same-site")),
        (Some("https://evil.example"), Some("cross-site")),
    ] {
        let mut read = client().get(&roles).header("cookie", &cookie);
        if let Some(origin) = origin {
            read = read.header("origin", origin);
        }
        if let Some(site) = fetch_site {
            read = read.header("sec-fetch-site", site);
        }
        let problem = expect_problem(read.send().await.unwrap(), 403).await;
        assert_eq!(problem["type"], "urn:gatehouse:problem:cross-origin");
    }
    let write = client()
        .post(&roles)
        .header("cookie", &cookie)
        .header("origin", &app_origin)
        .header("sec-fetch-site", "same-site")
        .json(&serde_json::json!({"name": "planted"}))
        .send()
        .await
        .unwrap();
    expect_problem(write, 403).await;
    let planted: i64 = sqlx::query_scalar("SELECT count(*) FROM roles WHERE name = 'planted'")
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(planted, 0);
    // The console itself, and API clients with a Bearer token, still work.
    let own = client()
        .get(&roles)
        .header("cookie", &cookie)
        .header("origin", a.gateway.base_url.as_str())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let bearer = client()
        .get(&roles)
        .bearer_auth(&session)
        .header("origin", &app_origin)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
}

#[tokio::test]
async fn a_flood_of_refused_credentials_from_one_address_is_cut_before_admission() {
    let a = attacked(&[SAME_ORIGIN]).await;
    mirrored(&a).await;
    let session = crate::session_token(&a.gateway, "acme", "bob", DEMO_PASSWORD).await;
    // Tokens of the right shape that name no session (each would cost a
    // Redis round trip), and access tokens with a broken signature.
    // Six characters in the middle of the random part or the signature are
    // replaced, so every token still decodes and is refused for what it is.
    let forge = |real: &str, i: usize| {
        let at = real.len() - 16;
        format!("{}{:06}{}", &real[..at], i % 1_000_000, &real[at + 6..])
    };
    let forged_session = |i: usize| forge(&session, i);
    let forged_jwt = |i: usize| forge(&a.bob, i);
    let mut first_429 = None;
    for i in 0..200 {
        let token = if i % 2 == 0 {
            forged_session(i)
        } else {
            forged_jwt(i)
        };
        let response = client()
            .get(a.gateway.url("/svc/orders/items"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            401 => {}
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                first_429.get_or_insert(i);
            }
            other => panic!("attempt {i}: {other}"),
        }
    }
    let first = first_429.expect("the flood was cut");
    assert!((110..=130).contains(&first), "cut after {first} refusals");
    // Forward auth shares the allowance.
    let verify = client()
        .get(a.gateway.url("/v1/verify?tenant=acme"))
        .bearer_auth(forged_jwt(999))
        .header("x-original-uri", "/orders/1")
        .header("x-original-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 429);
}

#[tokio::test]
async fn a_forged_refresh_token_never_reaches_the_victims_session() {
    // Sessions end after 2 s unused (written back on every use).
    let (gateway, _db, _) = seeded_app(&[
        ("GATEHOUSE_SESSION__IDLE_TIMEOUT_S", "2"),
        ("GATEHOUSE_SESSION__TOUCH_INTERVAL_S", "0"),
    ])
    .await;
    let login = crate::json_login(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let bob: serde_json::Value = login.json().await.unwrap();
    let session = bob["session_token"].as_str().unwrap().to_owned();
    let refresh = bob["refresh_token"].as_str().unwrap();
    // The attacker knows the victim's session id (it is in the refresh
    // token's clear part) but not the MAC.
    let keep = refresh.len() - 43;
    let forged = format!("{}{}", &refresh[..keep], "A".repeat(43));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let answer = client()
            .post(gateway.url("/v1/auth/refresh"))
            .json(&serde_json::json!({ "refresh_token": forged }))
            .send()
            .await
            .unwrap();
        expect_problem(answer, 401).await;
    }
    // 3.2 s without a real use: the session ended on time (before the fix,
    // every forged refresh slid its idle deadline).
    let me = client()
        .get(gateway.url("/v1/auth/me"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
}

#[tokio::test]
async fn deleting_a_service_client_is_audited_with_it() {
    let (gateway, db, _) = seeded_app(&[]).await;
    let admin = access_token(&gateway, "system", "admin").await;
    let created = client()
        .post(gateway.url("/admin/api/v1/service-clients"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "client_id": "billing-svc" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let deleted = client()
        .delete(gateway.url("/admin/api/v1/service-clients/billing-svc"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = client()
        .delete(gateway.url("/admin/api/v1/service-clients/billing-svc"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_problem(gone, 404).await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, outcome FROM audit_events WHERE target = 'billing-svc' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("service_client.create".to_owned(), "success".to_owned()),
            ("service_client.delete".to_owned(), "success".to_owned())
        ],
        "one delete row, none for the delete that found nothing"
    );
}

#[tokio::test]
async fn instances_cannot_point_at_the_gateway_or_loopback_unless_allowed() {
    // The default: no networks listed, so loopback is refused.
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let (gateway, _db, _) = seeded_app(&[
        ("GATEHOUSE_ROUTING__INSTANCE_NETWORKS", ""),
        ("GATEHOUSE_METRICS_LISTEN", metrics.as_str()),
    ])
    .await;
    let admin = access_token(&gateway, "system", "admin").await;
    let register = |address: String| {
        let admin = admin.clone();
        let url = gateway.url("/admin/api/v1/services/orders/instances");
        async move {
            client()
                .post(url)
                .bearer_auth(admin)
                .json(&serde_json::json!({ "version": "v1", "address": address }))
                .send()
                .await
                .unwrap()
        }
    };
    for (address, says) in [
        (metrics.clone(), "own listeners"),
        (format!("127.0.0.1:{}", port_of(&gateway)), "own listeners"),
        ("127.0.0.1:9101".to_owned(), "loopback"),
        ("[::1]:9101".to_owned(), "loopback"),
        ("169.254.169.254:80".to_owned(), "link-local"),
        ("0.0.0.0:9101".to_owned(), "unspecified"),
        ("localhost:9101".to_owned(), "loopback"),
    ] {
        let problem = expect_problem(register(address.clone()).await, 422).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{address}: {problem}"
        );
    }
    assert_eq!(register("10.1.2.3:9101".to_owned()).await.status(), 201);

    // Networks listed: only those, and never the gateway itself.
    let metrics = format!("127.0.0.1:{}", free_port());
    let (gateway, _db, _) = seeded_app(&[
        ("GATEHOUSE_ROUTING__INSTANCE_NETWORKS", "127.0.0.0/8"),
        ("GATEHOUSE_METRICS_LISTEN", metrics.as_str()),
    ])
    .await;
    let admin = access_token(&gateway, "system", "admin").await;
    let register = |address: &str| {
        client()
            .post(gateway.url("/admin/api/v1/services/orders/instances"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "version": "v1", "address": address }))
            .send()
    };
    assert_eq!(register("127.0.0.1:9101").await.unwrap().status(), 201);
    expect_problem(register("10.1.2.3:9101").await.unwrap(), 422).await;
    expect_problem(register(&metrics).await.unwrap(), 422).await;
}

#[tokio::test]
async fn a_member_hammering_the_admin_api_writes_a_bounded_number_of_audit_rows() {
    let (gateway, db, _) = seeded_app(&[]).await;
    let bob = access_token(&gateway, "acme", "bob").await;
    for _ in 0..60 {
        let denied = client()
            .get(gateway.url("/admin/api/v1/tenants/acme/roles"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 403);
    }
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events e JOIN users u ON u.id = e.actor_id
          WHERE u.username_normalized = 'bob' AND e.outcome = 'denied'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!((1..=10).contains(&rows), "{rows} rows for 60 denials");
    let metrics = crate::metrics_text(&gateway).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("gatehouse_audit_denials_suppressed_total ")
                && l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) >= Some(50.0)
        ),
        "the left-out denials are counted"
    );
}

#[tokio::test]
async fn with_redis_away_the_handshake_answers_503_and_issues_nothing() {
    let mut redis = gatehouse_testkit::PrivateRedis::start().await;
    let apps = free_port();
    let listen = format!("127.0.0.1:{apps}");
    let (gateway, _db, _) = crate::cache::private_app(
        &redis,
        &[
            ("GATEHOUSE_PROXY_LISTEN", listen.as_str()),
            ("GATEHOUSE_PROXY__HOSTS", "orders.localhost=orders"),
        ],
    )
    .await;
    let session = crate::session_token(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let cookie = format!("gh_session={session}");
    let to = format!("http://orders.localhost:{apps}/items");
    let issued = handshake(&gateway, &to, Some(&cookie)).await;
    assert_eq!(issued.status(), 303);
    let location = issued.headers()["location"].to_str().unwrap().to_owned();
    let code = location.split_once("code=").unwrap().1.to_owned();
    redis.stop().await;
    expect_problem(handshake(&gateway, &to, Some(&cookie)).await, 503).await;
    // A code issued before cannot be redeemed while Redis is away: 503 and
    // no cookie. (A Redis restarted without persistence has lost the code:
    // the browser then starts over from the app.)
    let host = format!("orders.localhost:{apps}");
    let redeemed = redeem(apps, &host, &code).await;
    assert!(redeemed.headers().get("set-cookie").is_none());
    expect_problem(redeemed, 503).await;
}

/// Finding 12b: any tenant could route to any service. Now a tenant reaches
/// only the services the platform made available to it: `billing` exists,
/// has a default version and an instance, and acme's members even hold a
/// grant on it, yet until the platform makes it available to acme the proxy
/// answers 404 (as for a service that does not exist) and forward auth with
/// `service=billing` answers 403, and nothing reaches the upstream.
#[tokio::test]
async fn a_tenant_reaches_only_the_services_made_available_to_it() {
    use reqwest::Method;
    let a = attacked(&[SAME_ORIGIN]).await;
    mirrored(&a).await;
    let platform = crate::session_token(&a.gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    let tenant_admin = alice(&a.gateway).await;
    let call = |token: &str, method: Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = client()
            .request(method, a.gateway.url(&format!("/admin/api/v1{path}")))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    for (path, body) in [
        ("/services", serde_json::json!({"name": "billing"})),
        (
            "/services/billing/versions",
            serde_json::json!({"version": "v1"}),
        ),
        (
            "/services/billing/instances",
            serde_json::json!({"version": "v1", "address": a.upstream.address}),
        ),
    ] {
        let response = call(&platform, Method::POST, path, Some(body))
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{path}");
    }
    // acme's administrator grants her members billing (she may: it is her
    // tenant's role), so only availability stands in the way.
    let granted = call(
        &tenant_admin,
        Method::POST,
        "/tenants/acme/roles/member/permissions",
        Some(serde_json::json!({"resource": "billing:*", "action": "read"})),
    )
    .await
    .unwrap();
    assert!(granted.status().is_success(), "{}", granted.status());
    // billing is mirrored here (the system tenant, to which it is available,
    // meets the decision: 403), so acme's 404 below is availability.
    let admin = access_token(&a.gateway, "system", "admin").await;
    crate::make_available(&a.gateway, "billing", "system", || async {
        client()
            .get(a.gateway.url("/svc/billing/invoices"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status()
            == 403
    })
    .await;
    let before = a.upstream.count();
    let bob_gets = || async {
        client()
            .get(a.gateway.url("/svc/billing/invoices"))
            .bearer_auth(&a.bob)
            .send()
            .await
            .unwrap()
    };
    let problem = expect_problem(bob_gets().await, 404).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no service billing"),
        "{problem}"
    );
    let verify = || async {
        client()
            .get(a.gateway.url("/v1/verify?tenant=acme&service=billing"))
            .bearer_auth(&a.bob)
            .header("x-original-method", "GET")
            .header("x-original-uri", "/billing/invoices")
            .send()
            .await
            .unwrap()
    };
    let problem = expect_problem(verify().await, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not available to tenant acme"),
        "{problem}"
    );
    // The tenant admin cannot open the door herself (a platform call is 404
    // to her, as another tenant's are), nor route to it.
    let own = call(
        &tenant_admin,
        Method::PUT,
        "/services/billing/tenants/acme",
        None,
    )
    .await
    .unwrap();
    expect_problem(own, 404).await;
    let rollout = call(
        &tenant_admin,
        Method::PUT,
        "/tenants/acme/rollouts/billing",
        Some(serde_json::json!({"stable": "v1"})),
    )
    .await
    .unwrap();
    expect_problem(rollout, 404).await;
    assert_eq!(
        a.upstream.count(),
        before,
        "nothing reached the upstream:\n{}",
        a.upstream.seen()
    );
    // Made available by the platform: the same requests pass.
    crate::make_available(&a.gateway, "billing", "acme", || async {
        bob_gets().await.status() == 200
    })
    .await;
    assert_eq!(verify().await.status(), 200);
    // Withdrawn: closed again.
    let withdrawn = call(
        &platform,
        Method::DELETE,
        "/services/billing/tenants/acme",
        None,
    )
    .await
    .unwrap();
    assert_eq!(withdrawn.status(), 200);
    until_in_force("billing withdrawn from acme", || async {
        bob_gets().await.status() == 404
    })
    .await;
    assert_eq!(verify().await.status(), 403);
}

/// A signed-in browser cannot fill Redis with handshake codes: one session
/// starts at most `ISSUES_PER_WINDOW` app sign-ins a minute (429 with
/// Retry-After beyond, no code issued); another session is not held back by
/// it, and a code issued within the share still works.
#[tokio::test]
async fn one_session_cannot_mint_handshake_codes_at_request_rate() {
    let (a, apps) = own_origin().await;
    let to = format!("http://orders.localhost:{apps}/items");
    let session = crate::session_token(&a.gateway, "acme", "bob", DEMO_PASSWORD).await;
    let cookie = format!("gh_session={session}");
    let mut codes = Vec::new();
    for _ in 0..gatehouse_session::ISSUES_PER_WINDOW {
        let issued = handshake(&a.gateway, &to, Some(&cookie)).await;
        assert_eq!(issued.status(), 303);
        let location = issued.headers()["location"].to_str().unwrap().to_owned();
        codes.push(location.split_once("code=").unwrap().1.to_owned());
    }
    let refused = handshake(&a.gateway, &to, Some(&cookie)).await;
    assert_eq!(
        refused.headers()["retry-after"],
        gatehouse_session::ISSUE_WINDOW.as_secs().to_string()
    );
    assert!(refused.headers().get("location").is_none());
    let problem = expect_problem(refused, 429).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("app sign-ins"),
        "{problem}"
    );
    // Another session (the same user's, elsewhere) has its own share.
    let other = crate::session_token(&a.gateway, "acme", "bob", DEMO_PASSWORD).await;
    let issued = handshake(&a.gateway, &to, Some(&format!("gh_session={other}"))).await;
    assert_eq!(issued.status(), 303);
    // A code issued within the share is redeemed as usual.
    let host = format!("orders.localhost:{apps}");
    let redeemed = redeem(apps, &host, codes.last().unwrap()).await;
    assert_eq!(redeemed.status(), 303);
    assert!(redeemed.headers().get("set-cookie").is_some());
}
