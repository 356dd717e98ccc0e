//! How a forwarded HTTP request (method + path) becomes an engine question
//! (action + resource), for forward auth (`/v1/verify`).
//!
//! Default mapping: the action comes from the method (`GET`/`HEAD`/`OPTIONS`
//! → `read`, `POST` → `create`, `PUT`/`PATCH` → `update`, `DELETE` →
//! `delete`, anything else → the method in lower case); the resource is the
//! normalised path's segments joined with `:` (`/orders/42` → `orders:42`,
//! `/` → `root`). A tenant can change both in `tenants.settings.verify`:
//!
//! ```json
//! {"strip_prefix": "/api", "resource_prefix": "web:", "actions": {"POST": "write"}}
//! ```
//!
//! The path is percent-decoded once and dot segments are resolved before
//! mapping, so `/orders/%2e%2e/admin` and `/orders/../admin` both map to
//! `admin`, the resource the upstream will actually serve.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

/// A tenant's mapping settings (`tenants.settings.verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpMapping {
    /// Removed from the start of the path before mapping (e.g. `/api`).
    pub strip_prefix: Option<String>,
    /// Prepended to every resource (e.g. `web:`).
    pub resource_prefix: String,
    /// Method → action overrides (upper-case method names).
    pub actions: BTreeMap<String, String>,
}

/// Why a forwarded request cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The method is not a token of 1-32 letters.
    #[error("forwarded method {0:?} is not a valid HTTP method")]
    BadMethod(String),
    /// The URI is not an origin-form path, or holds control characters.
    #[error("forwarded URI must be a path starting with '/' without control characters")]
    BadPath,
    /// `..` would climb above the root.
    #[error("forwarded path climbs above the root")]
    AboveRoot,
}

impl HttpMapping {
    /// The action and resource for a forwarded request.
    pub fn map(&self, method: &str, uri: &str) -> Result<(String, String), MappingError> {
        let action = self.action(method)?;
        let segments = normalise(uri)?;
        Ok(self.map_action_segments(action, &segments))
    }

    /// The action and resource for a request whose path the caller has
    /// already split into decoded segments: the reverse proxy decides on
    /// exactly the segments it forwards, so nothing is decoded or resolved
    /// again here (an encoded `/` a service opted in to stays inside its
    /// segment). Empty segments are skipped, as in [`HttpMapping::map`].
    pub fn map_segments<S: AsRef<str>>(
        &self,
        method: &str,
        segments: &[S],
    ) -> Result<(String, String), MappingError> {
        let action = self.action(method)?;
        Ok(self.map_action_segments(action, segments))
    }

    fn action(&self, method: &str) -> Result<String, MappingError> {
        if method.is_empty()
            || method.len() > 32
            || !method.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return Err(MappingError::BadMethod(method.chars().take(32).collect()));
        }
        let method = method.to_ascii_uppercase();
        Ok(self
            .actions
            .get(&method)
            .cloned()
            .unwrap_or_else(|| default_action(&method)))
    }

    fn map_action_segments<S: AsRef<str>>(
        &self,
        action: String,
        segments: &[S],
    ) -> (String, String) {
        let mut segments: Vec<&str> = segments
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(prefix) = self.strip_prefix.as_deref() {
            let prefix: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
            if !prefix.is_empty() && segments.starts_with(&prefix) {
                segments.drain(..prefix.len());
            }
        }
        let resource = if segments.is_empty() {
            "root".to_owned()
        } else {
            segments.join(":")
        };
        (action, format!("{}{resource}", self.resource_prefix))
    }
}

fn default_action(method: &str) -> String {
    match method {
        "GET" | "HEAD" | "OPTIONS" => "read".to_owned(),
        "POST" => "create".to_owned(),
        "PUT" | "PATCH" => "update".to_owned(),
        "DELETE" => "delete".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

/// Percent-decodes the path (query and fragment dropped) and resolves `.` and
/// `..`; empty segments are dropped.
fn normalise(uri: &str) -> Result<Vec<String>, MappingError> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(MappingError::BadPath);
    }
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| MappingError::BadPath)?;
    if decoded.chars().any(char::is_control) || decoded.contains('\\') {
        return Err(MappingError::BadPath);
    }
    let mut out: Vec<String> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(MappingError::AboveRoot)?;
            }
            s => out.push(s.to_owned()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mapping() {
        let m = HttpMapping::default();
        let cases = [
            ("GET", "/orders/42", "read", "orders:42"),
            ("post", "/orders", "create", "orders"),
            ("PATCH", "/orders/42?x=1#f", "update", "orders:42"),
            ("DELETE", "//orders//42/", "delete", "orders:42"),
            ("PURGE", "/cache", "purge", "cache"),
            ("GET", "/", "read", "root"),
            ("GET", "/orders/../admin/users", "read", "admin:users"),
            ("GET", "/orders/%2e%2e/admin", "read", "admin"),
            ("GET", "/orders%2F7", "read", "orders:7"),
            ("GET", "/./a/./b", "read", "a:b"),
        ];
        for (method, uri, action, resource) in cases {
            assert_eq!(
                m.map(method, uri).unwrap(),
                (action.to_owned(), resource.to_owned()),
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn tenant_overrides() {
        let m: HttpMapping = serde_json::from_value(serde_json::json!({
            "strip_prefix": "/api/", "resource_prefix": "web:", "actions": {"POST": "write"}
        }))
        .unwrap();
        assert_eq!(
            m.map("POST", "/api/orders").unwrap(),
            ("write".into(), "web:orders".into())
        );
        assert_eq!(
            m.map("GET", "/api").unwrap(),
            ("read".into(), "web:root".into())
        );
        assert_eq!(
            m.map("GET", "/apix/orders").unwrap(),
            ("read".into(), "web:apix:orders".into()),
            "prefix is per segment"
        );
    }

    #[test]
    fn segments_are_mapped_as_given() {
        let m = HttpMapping::default();
        assert_eq!(
            m.map_segments("GET", &["orders", "a/b", "", "7"]).unwrap(),
            ("read".into(), "orders:a/b:7".into()),
            "an encoded slash stays inside its segment"
        );
        assert_eq!(
            m.map_segments("DELETE", &["orders", "..", "admin"])
                .unwrap()
                .1,
            "orders:..:admin",
            "nothing is resolved: the caller refuses dot segments"
        );
        let api: HttpMapping =
            serde_json::from_value(serde_json::json!({"strip_prefix": "/api/v1"})).unwrap();
        assert_eq!(api.map_segments("GET", &["api", "v1", "x"]).unwrap().1, "x");
        assert_eq!(
            api.map_segments("GET", &["api", "v1x"]).unwrap().1,
            "api:v1x"
        );
        assert_eq!(api.map_segments("GET", &["api", "v1"]).unwrap().1, "root");
        assert_eq!(api.map_segments::<&str>("GET", &[]).unwrap().1, "root");
        assert!(m.map_segments("G T", &["x"]).is_err());
    }

    #[test]
    fn hostile_input_is_refused() {
        let m = HttpMapping::default();
        assert_eq!(m.map("GET", "/../etc/passwd"), Err(MappingError::AboveRoot));
        assert_eq!(
            m.map("GET", "/a/%2e%2e/%2e%2e/b"),
            Err(MappingError::AboveRoot)
        );
        assert_eq!(m.map("GET", "http://evil/x"), Err(MappingError::BadPath));
        assert_eq!(m.map("GET", "/a%00b"), Err(MappingError::BadPath));
        assert_eq!(
            m.map("GET", "/a%0d%0aSet-Cookie:x"),
            Err(MappingError::BadPath)
        );
        assert_eq!(m.map("GET", "/a\\..\\b"), Err(MappingError::BadPath));
        assert_eq!(m.map("GET", "/%ff"), Err(MappingError::BadPath));
        assert!(matches!(m.map("G T", "/"), Err(MappingError::BadMethod(_))));
        assert!(matches!(m.map("", "/"), Err(MappingError::BadMethod(_))));
    }
}
