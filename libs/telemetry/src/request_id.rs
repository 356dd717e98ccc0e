//! The request id every log line of a request carries, without a `tracing`
//! span per request.
//!
//! A span per request cost the gateway a fifth of its floor throughput under
//! load (the registry entry, the filter, and the formatter writing the span's
//! fields into a string at creation, for every request, whether or not
//! anything is logged). Instead the edge runs each request inside
//! [`with_request_id`] (a task-local: a pointer swap per poll), and
//! [`WithRequestId`] adds the id to the lines that are actually written:
//! `"request_id"` as a top-level JSON field, or `request_id=` in pretty lines.

use std::fmt::Write as _;
use std::future::Future;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static REQUEST_ID: Box<str>;
}

/// Runs `work` as the request `id`: every line it logs (on this task) carries it.
pub fn with_request_id<F: Future>(id: &str, work: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id.into(), work)
}

/// The id of the request being served on this task, if any.
#[must_use]
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(ToString::to_string).ok()
}

/// Wraps an event formatter so lines written while serving a request name it.
#[derive(Debug)]
pub struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequestId<F> {
    /// `inner` writes the line; `json` says how to add the id to it.
    pub fn new(inner: F, json: bool) -> Self {
        Self { inner, json }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if REQUEST_ID.try_with(|_| ()).is_err() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let _ = REQUEST_ID.try_with(|id| splice(&mut line, id, self.json));
        writer.write_str(&line)
    }
}

/// Adds `id` to a formatted line: before the closing brace of a JSON object,
/// else before the newline.
fn splice(line: &mut String, id: &str, json: bool) {
    let newline = line.ends_with('\n');
    if newline {
        line.pop();
    }
    if json && line.ends_with('}') {
        line.pop();
        line.push_str(",\"request_id\":");
        push_json_string(line, id);
        line.push('}');
    } else {
        line.push_str(" request_id=");
        line.push_str(id);
    }
    if newline {
        line.push('\n');
    }
}

/// Appends `text` as a JSON string (quoted, escaped): request ids may come
/// from clients and must not break the line.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_lands_inside_the_json_object_and_is_escaped() {
        let mut line = "{\"level\":\"WARN\",\"message\":\"m\"}\n".to_owned();
        splice(&mut line, "a\"b", true);
        assert_eq!(
            line,
            "{\"level\":\"WARN\",\"message\":\"m\",\"request_id\":\"a\\\"b\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(parsed["request_id"], "a\"b");
        let mut pretty = "WARN m\n".to_owned();
        splice(&mut pretty, "r1", false);
        assert_eq!(pretty, "WARN m request_id=r1\n");
    }

    #[tokio::test]
    async fn only_work_inside_a_request_carries_its_id() {
        assert_eq!(current_request_id(), None);
        let inside = with_request_id("r-42", async { current_request_id() }).await;
        assert_eq!(inside.as_deref(), Some("r-42"));
        assert_eq!(current_request_id(), None);
    }
}
