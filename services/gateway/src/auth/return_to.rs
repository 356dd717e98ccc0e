//! Where to send a browser after sign-in, without becoming an open redirect.
//!
//! A `return_to` is honoured only if it is a plain same-site path (`/x/y?z`),
//! or an absolute http(s) URL whose origin is on the tenant's allowed list.
//! Everything else (other origins, `//host`, backslashes, `javascript:`,
//! user-info tricks, control characters) is ignored and the account page is
//! used instead.

/// The safe destination for `return_to`, or `None` to use the default.
#[must_use]
pub fn resolve(return_to: &str, allowed_origins: &[String]) -> Option<String> {
    let candidate = return_to.trim();
    if candidate.is_empty() || candidate.len() > 2048 {
        return None;
    }
    if candidate.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    if candidate.starts_with('/') {
        // "//host" and "/\host" are protocol-relative to browsers.
        if candidate.starts_with("//") {
            return None;
        }
        return Some(candidate.to_owned());
    }
    let url = url::Url::parse(candidate).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    allowed_origins
        .iter()
        .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(&origin))
        .then(|| url.to_string())
}

/// The console's sign-in handshake for apps on their own origin
/// (`crate::proxy::handshake`).
pub const HANDSHAKE_PATH: &str = "/v1/proxy/handshake";

/// The app origin a `return_to` of the handshake will end at, when it names
/// one of the apps `serves` accepts (by host, `name[:port]`): the sign-in
/// form's `form-action` must allow it, since Chromium applies `form-action`
/// to every redirect after the form is posted.
#[must_use]
pub fn handshake_origin(return_to: &str, serves: impl Fn(&str) -> bool) -> Option<String> {
    let query = return_to.strip_prefix(HANDSHAKE_PATH)?.strip_prefix('?')?;
    let to = url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "to")
        .map(|(_, value)| value.into_owned())?;
    let url = url::Url::parse(&to).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    serves(&url_host(&url)?).then(|| url.origin().ascii_serialization())
}

/// `name[:port]` of `url`, lower case, the port only when it is not the
/// scheme's default: the form a browser's `Host` header takes, by which
/// apps on their own origin are told apart.
#[must_use]
pub fn url_host(url: &url::Url) -> Option<String> {
    let name = url.host_str()?;
    Some(
        match url.port() {
            Some(port) => format!("{name}:{port}"),
            None => name.to_owned(),
        }
        .to_ascii_lowercase(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["https://app.acme.test".to_owned()]
    }

    #[test]
    fn same_site_paths_and_allowed_origins_are_honoured() {
        assert_eq!(
            resolve("/t/acme/account", &allowed()).as_deref(),
            Some("/t/acme/account")
        );
        assert_eq!(
            resolve("https://app.acme.test/orders?id=7", &allowed()).as_deref(),
            Some("https://app.acme.test/orders?id=7")
        );
    }

    #[test]
    fn a_handshake_return_names_its_app_origin_only_for_served_hosts() {
        let serves = |host: &str| host.starts_with("orders.example");
        assert_eq!(
            handshake_origin(
                "/v1/proxy/handshake?to=https%3A%2F%2Forders.example%3A8443%2Fa%3Fb%3D1",
                serves
            )
            .as_deref(),
            Some("https://orders.example:8443")
        );
        for other in [
            "/v1/proxy/handshake?to=https%3A%2F%2Fevil.example%2F",
            "/v1/proxy/handshake?to=javascript%3Aalert(1)",
            "/v1/proxy/handshakex?to=https%3A%2F%2Forders.example%2F",
            "/t/acme/account",
        ] {
            assert_eq!(handshake_origin(other, serves), None, "{other}");
        }
    }

    #[test]
    fn open_redirect_attempts_are_ignored() {
        for attack in [
            "https://evil.test/",
            "//evil.test/x",
            "/\\evil.test",
            "\\\\evil.test",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://app.acme.test@evil.test/",
            "https://evil.test/?https://app.acme.test",
            "http://app.acme.test/", // scheme differs from the allowed origin
            "https://app.acme.test.evil.test/",
            "/ok\r\nSet-Cookie: x=1",
            "",
        ] {
            assert_eq!(resolve(attack, &allowed()), None, "{attack:?}");
        }
    }
}
