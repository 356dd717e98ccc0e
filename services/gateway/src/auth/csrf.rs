//! CSRF protection for the server-rendered forms.
//!
//! Two token kinds, both HMACs under a key derived from the key-encryption key,
//! so nothing needs storing:
//! - before sign-in (the login form): the token is bound to the tenant and a
//!   random nonce in a short-lived cookie (`__Host-` prefixed under https, so
//!   a sibling subdomain cannot plant it). A page on another site can read
//!   neither the cookie nor the token in our form.
//! - after sign-in: the token is bound to the session id, so it dies with the
//!   session.
//!
//! On top, state-changing browser requests must come from our own origin when
//! the browser says where they come from (`Origin`, else `Sec-Fetch-Site`).

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The secret behind every CSRF token.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey([redacted])")
    }
}

impl CsrfKey {
    /// Derives the CSRF key from the key-encryption key (HMAC with a fixed
    /// label), so rotating the KEK also rotates CSRF tokens.
    #[must_use]
    pub fn derive(kek: &[u8; 32]) -> Self {
        let mut mac = HmacSha256::new_from_slice(kek)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"gatehouse csrf key v1");
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, purpose: &str, binding: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(binding.as_bytes());
        mac
    }

    /// The token for `binding` (a nonce or a session id) and `purpose`.
    #[must_use]
    pub fn token(&self, purpose: &str, binding: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(purpose, binding).finalize().into_bytes())
    }

    /// Constant-time check of a presented token.
    #[must_use]
    pub fn verify(&self, purpose: &str, binding: &str, presented: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        self.mac(purpose, binding).verify_slice(&bytes).is_ok()
    }
}

/// A random nonce for the login form's cookie.
#[must_use]
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a state-changing request comes from our own site, as far as the
/// browser tells. Each signal the browser sent must agree:
/// - `Sec-Fetch-Site` (sent by every current browser to trustworthy origins,
///   whatever the referrer policy) must be `same-origin` or `none` (typed in);
/// - `Origin`, when it names an origin, must be one of `allowed`. `Origin:
///   null` (privacy-preserving referrer policies, sandboxed frames, some
///   redirects) carries no information: it is refused unless `Sec-Fetch-Site`
///   vouches for the request, since a sandboxed frame on another site also
///   sends `null` but then says `cross-site`.
///
/// With neither header (old browsers, non-browser clients) the CSRF token
/// alone decides.
#[must_use]
pub fn same_origin(headers: &HeaderMap, allowed: &[String]) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.to_str().ok());
    let fetch_site_ok = match fetch_site {
        Some(Some(site)) => matches!(site, "same-origin" | "none"),
        Some(None) => false,
        None => true,
    };
    if !fetch_site_ok {
        return false;
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str().ok()) {
        None => true,
        Some(Some("null")) => fetch_site.is_some(),
        Some(Some(origin)) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        Some(None) => false,
    }
}

/// Origins our own pages are served from: the issuer's, and the one the
/// request's `Host` names under the scheme we are configured for.
#[must_use]
pub fn own_origins(headers: &HeaderMap, issuer: &url::Url, secure: bool) -> Vec<String> {
    let mut origins = vec![issuer.origin().ascii_serialization()];
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let scheme = if secure { "https" } else { "http" };
        origins.push(format!("{scheme}://{host}"));
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key() -> CsrfKey {
        CsrfKey::derive(&[7u8; 32])
    }

    #[test]
    fn tokens_verify_only_for_their_purpose_and_binding() {
        let k = key();
        let t = k.token("login", "nonce-1");
        assert!(k.verify("login", "nonce-1", &t));
        assert!(!k.verify("login", "nonce-2", &t));
        assert!(!k.verify("session", "nonce-1", &t));
        assert!(!k.verify("login", "nonce-1", "garbage!"));
        assert!(!k.verify("login", "nonce-1", ""));
        assert!(!CsrfKey::derive(&[8u8; 32]).verify("login", "nonce-1", &t));
    }

    #[test]
    fn foreign_origins_are_refused() {
        let allowed = vec!["http://127.0.0.1:8080".to_owned()];
        let mut h = HeaderMap::new();
        assert!(
            same_origin(&h, &allowed),
            "no browser signal: token decides"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, &allowed));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, &allowed));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, &allowed));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h, &allowed));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h, &allowed));
    }

    /// What Chromium sends: a same-origin form post under a strict referrer
    /// policy carries `Origin: null` with `Sec-Fetch-Site: same-origin`; a
    /// sandboxed frame on another site sends `null` with `cross-site`.
    #[test]
    fn null_origin_counts_only_with_a_same_origin_fetch_site() {
        let allowed = vec!["http://127.0.0.1:8080".to_owned()];
        let with = |origin: &'static str, site: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_static(origin));
            if let Some(site) = site {
                h.insert("sec-fetch-site", HeaderValue::from_static(site));
            }
            same_origin(&h, &allowed)
        };
        assert!(with("null", Some("same-origin")));
        assert!(!with("null", Some("cross-site")));
        assert!(!with("null", Some("same-site")));
        assert!(!with("null", None));
        assert!(with("http://127.0.0.1:8080", Some("same-origin")));
        // Both signals must agree: a foreign Origin loses even if the
        // fetch metadata claims same-origin.
        assert!(!with("https://evil.example", Some("same-origin")));
        assert!(!with("http://127.0.0.1:8080", Some("cross-site")));
    }
}
