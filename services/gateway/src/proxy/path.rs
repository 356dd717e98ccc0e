//! What a proxied path may look like, so that the decision is made on
//! exactly the resource the upstream will serve.
//!
//! The path is split on the client's own `/` and each segment is decoded on
//! its own; it is refused when any segment could be read differently by the
//! upstream than by us:
//! - a dot segment (`.`, `..`) in any encoding (`%2e%2E`, `.%2e`, ...);
//! - an encoded `/` (`%2F`), which many servers decode and then split on,
//!   unless the service opted in (then it stays inside its segment for the
//!   decision too, and the parts around it still may not be dot segments);
//! - a `\` in any encoding (some servers treat it as `/`);
//! - control characters and bytes that are not UTF-8 once decoded.
//!
//! This is Envoy's "reject escaped slashes" behaviour, plus dot segments,
//! which HTTP clients resolve themselves, so only a crafted request has one.

use percent_encoding::percent_decode_str;

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `.` or `..`, possibly percent-encoded.
    #[error("dot segments (. and .., in any encoding) are not accepted through the proxy")]
    DotSegment,
    /// `%2F` where the service has not opted in.
    #[error("encoded slashes (%2F) are not accepted by this service")]
    EncodedSlash,
    /// `\` or `%5C`.
    #[error("backslashes (\\ or %5C) are not accepted through the proxy")]
    Backslash,
    /// Control characters or invalid UTF-8 once decoded.
    #[error("the path holds control characters or bytes that are not UTF-8")]
    Unreadable,
}

/// The decoded segments of `path` (empty segments dropped), or why the
/// path is refused. `encoded_slashes`: the service accepts `%2F`.
pub fn segments(path: &str, encoded_slashes: bool) -> Result<Vec<String>, PathError> {
    let mut out = Vec::new();
    segments_into(path, encoded_slashes, &mut out)?;
    Ok(out)
}

/// [`segments`], appended to `out` (the proxy puts the service first).
pub fn segments_into(
    path: &str,
    encoded_slashes: bool,
    out: &mut Vec<String>,
) -> Result<(), PathError> {
    for raw in path.split('/') {
        if raw.is_empty() {
            continue;
        }
        let decoded = if raw.contains('%') {
            percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| PathError::Unreadable)?
                .into_owned()
        } else {
            raw.to_owned()
        };
        if decoded.chars().any(char::is_control) {
            return Err(PathError::Unreadable);
        }
        if decoded.contains('\\') {
            return Err(PathError::Backslash);
        }
        if decoded.contains('/') && !encoded_slashes {
            return Err(PathError::EncodedSlash);
        }
        if decoded.split('/').any(|part| part == "." || part == "..") {
            return Err(PathError::DotSegment);
        }
        out.push(decoded);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_decode_segment_by_segment() {
        assert_eq!(segments("/", false).unwrap(), Vec::<String>::new());
        assert_eq!(
            segments("//a/b%20c//d:e/", false).unwrap(),
            ["a", "b c", "d:e"]
        );
        assert_eq!(
            segments("/..x/x../.../%2e%2ex", false).unwrap(),
            ["..x", "x..", "...", "..x"]
        );
    }

    #[test]
    fn anything_an_upstream_could_read_otherwise_is_refused() {
        for (path, error) in [
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/%2e%2e/b", PathError::DotSegment),
            ("/.%2E/b", PathError::DotSegment),
            ("/%2e", PathError::DotSegment),
            ("/..%2Fadmin:x", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5Cb", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::Unreadable),
            ("/a%0d%0ab", PathError::Unreadable),
            ("/%ff", PathError::Unreadable),
        ] {
            assert_eq!(segments(path, false), Err(error), "{path}");
        }
    }

    #[test]
    fn an_opted_in_service_keeps_encoded_slashes_inside_their_segment() {
        assert_eq!(segments("/a%2Fb/c", true).unwrap(), ["a/b", "c"]);
        assert_eq!(segments("/..%2Fadmin", true), Err(PathError::DotSegment));
        assert_eq!(segments("/a%2F.", true), Err(PathError::DotSegment));
        assert_eq!(segments("/a%5Cb", true), Err(PathError::Backslash));
    }
}
