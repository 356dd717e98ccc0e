//! Log lines written while a request is served carry its id; others do not.
//! Through the real subscriber and queue, as `gatehouse serve` installs them.
#![allow(clippy::unwrap_used, reason = "test")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use gatehouse_telemetry::{init_logging_into, with_request_id};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn lines_logged_inside_a_request_name_it_and_others_do_not() {
    let captured = Captured::default();
    let guard = init_logging_into("info", captured.clone()).unwrap();
    with_request_id("req-\"7\"", async {
        tracing::warn!(user = "bob", "inside the request");
        tokio::task::yield_now().await;
        tracing::info!("still inside, after a suspension");
    })
    .await;
    tracing::warn!("between requests");
    drop(guard); // stops the writer thread after it wrote everything queued
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no line {message:?} in {text}"))
            .clone()
    };
    let inside = find("inside the request");
    assert_eq!(inside["request_id"], "req-\"7\"");
    assert_eq!(inside["user"], "bob");
    assert_eq!(inside["level"], "WARN");
    assert_eq!(
        find("still inside, after a suspension")["request_id"],
        "req-\"7\""
    );
    assert!(find("between requests").get("request_id").is_none());
}
