//! What every response has: problem+json errors, request ids, security
//! headers, size limits, metrics and structured logs.

use crate::{client, expect_problem, spawn_app};

#[tokio::test]
async fn unknown_paths_are_problem_json_404() {
    let (gateway, _db) = spawn_app().await;
    let body = expect_problem(
        client()
            .get(gateway.url("/no/such/thing"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(body["type"], "urn:gatehouse:problem:not-found");
}

#[tokio::test]
async fn wrong_method_is_problem_json_405_with_allow() {
    let (gateway, _db) = spawn_app().await;
    let response = client()
        .delete(gateway.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers().get("allow").is_some(),
        "405 keeps the Allow header"
    );
    expect_problem(response, 405).await;
}

#[tokio::test]
async fn oversized_body_is_refused_with_413_before_it_is_read() {
    let (gateway, _db) = spawn_app().await;
    let body = vec![b'x'; 65 * 1024];
    let response = client()
        .post(gateway.url("/healthz"))
        .body(body)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 413).await;
    assert!(problem["detail"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let (gateway, _db) = spawn_app().await;
    let response = client()
        .get(gateway.url("/healthz"))
        .header("x-padding", "y".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    expect_problem(response, 431).await;
}

#[tokio::test]
async fn responses_carry_security_headers_and_no_store() {
    let (gateway, _db) = spawn_app().await;
    for (path, padding) in [("/healthz", 0), ("/missing", 0), ("/healthz", 17 * 1024)] {
        let response = client()
            .get(gateway.url(path))
            .header("x-padding", "y".repeat(padding))
            .send()
            .await
            .unwrap();
        let h = response.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}

#[tokio::test]
async fn request_id_is_generated_or_propagated_and_appears_in_logs() {
    let (gateway, _db) = spawn_app().await;
    let http = client();
    let generated = http.get(gateway.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID is generated: {id}");

    let given = "e2e-trace-7f3a";
    let echoed = http
        .get(gateway.url("/missing"))
        .header("x-request-id", given)
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], given);

    // The access log line for that request is JSON with stable field names
    // and carries the request id.
    let mut found = None;
    for _ in 0..50 {
        found = gateway
            .logs()
            .into_iter()
            .find(|line| line.to_string().contains(given));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = found.expect("a log line carries the request id");
    assert!(
        line["timestamp"].is_string() && line["level"].is_string() && line["message"].is_string()
    );
    assert_eq!(line["request_id"], given, "{line}");
}

#[tokio::test]
async fn metrics_are_prometheus_text_counting_requests_by_route() {
    let (gateway, _db) = spawn_app().await;
    let http = client();
    http.get(gateway.url("/healthz")).send().await.unwrap();
    http.get(gateway.url("/readyz")).send().await.unwrap();
    let odd = reqwest::Method::from_bytes(b"XYZZY").unwrap();
    http.request(odd, gateway.url("/healthz"))
        .send()
        .await
        .unwrap();
    // Not on the public listener: internal figures have their own.
    let public = http.get(gateway.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let response = http.get(gateway.metrics("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("gatehouse_http_requests_total{")
                && l.contains("route=\"/healthz\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(text.contains("gatehouse_http_request_duration_seconds_bucket"));
    // Client-chosen methods never become label values.
    assert!(!text.contains("XYZZY"), "{text}");
    assert!(text.contains("method=\"OTHER\""), "{text}");
    assert!(text.contains("gatehouse_dependency_up{dependency=\"redis\"} 1"));
}

#[tokio::test]
async fn the_bench_floor_endpoint_exists_only_when_enabled() {
    let (gateway, _db) = spawn_app().await;
    expect_problem(
        client()
            .get(gateway.url("/_bench/floor"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    let (bench, _db2, _) = crate::seeded_app(&[("GATEHOUSE_BENCH_ENDPOINTS", "true")]).await;
    let response = client()
        .get(bench.url("/_bench/floor"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Behind the same layers as every other route.
    assert!(response.headers().get("x-request-id").is_some());
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.text().await.unwrap(), "ok");
}
