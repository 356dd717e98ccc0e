//! The session cookie and the login form's CSRF nonce cookie.
//!
//! Session cookies are `HttpOnly`, `SameSite=Lax`, host-only (no `Domain`), path
//! `/`, and `Secure` unless running plain-http development. With `Secure` the
//! default name carries the `__Host-` prefix, which makes browsers enforce
//! host-only, `Path=/` and `Secure` themselves.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

/// Cookie behaviour from configuration.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// Session cookie name.
    pub session_name: String,
    /// Add `Secure`.
    pub secure: bool,
    /// Name of the login form's nonce cookie (`__Host-` prefixed with Secure,
    /// so a sibling subdomain cannot plant one).
    pub nonce_name: String,
    /// Name of the known-device cookie.
    pub device_name: String,
    /// Name of an app's own session cookie on the proxy's apps listener
    /// (host-scoped: each app's origin holds its own).
    pub app_name: String,
}

impl CookieSettings {
    /// Settings with the default session cookie name for `secure`.
    #[must_use]
    pub fn new(name: Option<String>, secure: bool) -> Self {
        let session_name = name.unwrap_or_else(|| {
            if secure {
                "__Host-gh_session"
            } else {
                "gh_session"
            }
            .to_owned()
        });
        let nonce_name = if secure {
            "__Host-gh_login_nonce"
        } else {
            "gh_login_nonce"
        }
        .to_owned();
        let device_name = if secure {
            "__Host-gh_device"
        } else {
            "gh_device"
        }
        .to_owned();
        let app_name = if secure { "__Host-gh_app" } else { "gh_app" }.to_owned();
        Self {
            session_name,
            secure,
            nonce_name,
            device_name,
            app_name,
        }
    }

    fn base<'a>(&self, name: String, value: String, path: String) -> Cookie<'a> {
        Cookie::build((name, value))
            .path(path)
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .build()
    }

    /// `Set-Cookie` for a new session; a session cookie (no `Max-Age`) so the
    /// browser forgets it on close, while the server enforces the timeouts.
    #[must_use]
    pub fn session(&self, token: &str) -> HeaderValue {
        let cookie = self.base(self.session_name.clone(), token.to_owned(), "/".to_owned());
        header_value(&cookie)
    }

    /// `Set-Cookie` that removes the session cookie.
    #[must_use]
    pub fn clear_session(&self) -> HeaderValue {
        let mut cookie = self.base(self.session_name.clone(), String::new(), "/".to_owned());
        cookie.make_removal();
        header_value(&cookie)
    }

    /// `Set-Cookie` for the login form's nonce (the CSRF token binds it to the
    /// tenant, so one cookie at `/` serves every tenant's form).
    #[must_use]
    pub fn login_nonce(&self, nonce: &str) -> HeaderValue {
        let mut cookie = self.base(self.nonce_name.clone(), nonce.to_owned(), "/".to_owned());
        cookie.set_max_age(cookie::time::Duration::hours(1));
        header_value(&cookie)
    }

    /// `Set-Cookie` for the known-device proof (kept a year; see `auth::device`).
    #[must_use]
    pub fn device(&self, proof: &str) -> HeaderValue {
        let mut cookie = self.base(self.device_name.clone(), proof.to_owned(), "/".to_owned());
        cookie.set_max_age(cookie::time::Duration::days(365));
        header_value(&cookie)
    }

    /// `Set-Cookie` for an app's host-scoped session (a session cookie: the
    /// user's session decides how long it lasts).
    #[must_use]
    pub fn app_session(&self, credential: &str) -> HeaderValue {
        let cookie = self.base(self.app_name.clone(), credential.to_owned(), "/".to_owned());
        header_value(&cookie)
    }

    /// Every cookie name that is ours: none of them may reach an upstream,
    /// and an upstream may set none of them.
    #[must_use]
    pub fn ours(&self) -> [&str; 4] {
        [
            &self.session_name,
            &self.nonce_name,
            &self.device_name,
            &self.app_name,
        ]
    }

    /// `Set-Cookie` that removes the login nonce.
    #[must_use]
    pub fn clear_login_nonce(&self) -> HeaderValue {
        let mut cookie = self.base(self.nonce_name.clone(), String::new(), "/".to_owned());
        cookie.make_removal();
        header_value(&cookie)
    }
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    // Names and values we set are ASCII by construction (base64url, fixed names).
    HeaderValue::from_str(&cookie.encoded().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` in the request (the first if repeated, as
/// browsers send the most specific path first). Names are compared exactly,
/// without percent-decoding, so `__Host%2Dx` is not mistaken for `__Host-x`
/// (which would let a subdomain plant what the prefix is meant to forbid).
#[must_use]
pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_has_the_security_attributes() {
        let secure = CookieSettings::new(None, true);
        let value = secure.session("tok").to_str().unwrap().to_owned();
        assert!(value.starts_with("__Host-gh_session=tok"), "{value}");
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(value.contains(attr), "{attr} missing: {value}");
        }
        assert!(!value.contains("Domain"), "host-only: {value}");
        let dev = CookieSettings::new(None, false).session("tok");
        let dev = dev.to_str().unwrap();
        assert!(dev.starts_with("gh_session=") && !dev.contains("Secure"));
    }

    #[test]
    fn clearing_expires_the_cookie() {
        let cleared = CookieSettings::new(None, false).clear_session();
        let cleared = cleared.to_str().unwrap();
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
    }

    #[test]
    fn cookies_are_read_from_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; gh_session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(read(&h, "gh_session").as_deref(), Some("xyz"));
        assert_eq!(read(&h, "b").as_deref(), Some("2"));
        assert_eq!(read(&h, "missing"), None);
    }

    #[test]
    fn encoded_names_do_not_impersonate_prefixed_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host%2Dgh_session=planted"),
        );
        assert_eq!(read(&h, "__Host-gh_session"), None);
    }
}
