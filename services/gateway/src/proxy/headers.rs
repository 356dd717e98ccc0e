//! What the proxy changes in the headers, both ways (pure functions, tested
//! here): hop-by-hop headers are the connection's, not the message's, and are
//! dropped (RFC 9110 §7.6.1), including any the `Connection` header names;
//! `X-Gatehouse-*` is ours alone, so whatever a client sent under that prefix
//! is removed before our identity headers go in; our own cookies stay with us;
//! `X-Forwarded-*` tell the upstream where the request came from.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers that belong to one connection (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection` still seen in the wild).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The protocol a request asks to switch to (`Connection: upgrade` and an
/// `Upgrade` header, e.g. `websocket`), if any.
#[must_use]
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes every `X-Gatehouse-*` header (a client's claim to an identity).
pub fn remove_gatehouse_headers(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-gatehouse-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// Removes the named cookies from `Cookie`, keeping the others (the
/// upstream's own cookies still reach it; our session never does).
pub fn remove_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name).trim();
            !names.contains(&name)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Removes every `Set-Cookie` of an upstream's answer that would set one of
/// `names` (compared without regard to case, as browsers now compare the
/// `__Host-` prefix): an app must not plant a session (fixation) or a
/// device proof in the browser. Its own cookies pass.
pub fn remove_set_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let ours = |value: &HeaderValue| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let name = text.split(';').next().unwrap_or_default();
        let name = unprefixed(name.split_once('=').map_or(name, |(name, _)| name).trim());
        names
            .iter()
            .any(|n| unprefixed(n).eq_ignore_ascii_case(name))
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(ours) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !ours(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

/// A cookie name without its `__Host-` or `__Secure-` prefix: either form
/// of one of our names is ours.
fn unprefixed(name: &str) -> &str {
    for prefix in ["__host-", "__secure-"] {
        if name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return &name[prefix.len()..];
        }
    }
    name
}

/// Where the request came from, for the `X-Forwarded-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The socket peer, as text.
    pub peer: &'a str,
    /// Whether the peer is a trusted proxy (its `X-Forwarded-*` are kept and
    /// extended; anyone else's are replaced).
    pub peer_trusted: bool,
    /// `http` or `https`: how clients reach us.
    pub proto: &'static str,
    /// The prefix the proxy removed from the path (`/svc/orders`), empty
    /// when the app has its own origin.
    pub prefix: &'a str,
}

/// Sets `X-Forwarded-For` (the trusted chain plus the peer, or the peer
/// alone), `-Proto`, `-Host` (the Host the client used) and `-Prefix`, and
/// removes `Host` (the client set it for us; the upstream gets its own) and
/// `Forwarded` (not maintained, so not passed on).
pub fn set_forwarded(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    let x_forwarded_for = HeaderName::from_static("x-forwarded-for");
    let x_forwarded_proto = HeaderName::from_static("x-forwarded-proto");
    let x_forwarded_host = HeaderName::from_static("x-forwarded-host");
    let original_host = headers.remove(header::HOST);
    headers.remove(header::FORWARDED);
    headers.remove("x-forwarded-prefix");
    if forwarding.peer_trusted {
        let chain: Vec<&str> = headers
            .get_all(&x_forwarded_for)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mut value = chain.join(", ");
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(forwarding.peer);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(&x_forwarded_for, value);
        }
    } else {
        headers.remove(&x_forwarded_proto);
        headers.remove(&x_forwarded_host);
        if let Ok(value) = HeaderValue::from_str(forwarding.peer) {
            headers.insert(&x_forwarded_for, value);
        }
    }
    headers
        .entry(&x_forwarded_proto)
        .or_insert(HeaderValue::from_static(forwarding.proto));
    if let Some(host) = original_host {
        headers.entry(&x_forwarded_host).or_insert(host);
    }
    if !forwarding.prefix.is_empty()
        && let Ok(value) = HeaderValue::from_str(forwarding.prefix)
    {
        headers.insert("x-forwarded-prefix", value);
    }
}

/// Puts `Connection: upgrade` and `Upgrade` back after the hop-by-hop sweep,
/// for a request or a 101 answer that switches protocols.
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9v"),
            ("accept", "application/json"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_protocol(&ws).unwrap(), "websocket");
        assert!(upgrade_protocol(&headers(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_protocol(&headers(&[("connection", "upgrade")])).is_none());
    }

    #[test]
    fn client_sent_identity_headers_are_removed_whatever_their_case() {
        let mut h = headers(&[
            ("X-Gatehouse-User", "admin"),
            ("x-gatehouse-roles", "platform-admin"),
            ("X-GATEHOUSE-TENANT", "system"),
            ("x-gatehouse-upstream-version", "v9"),
            ("x-gatehousefoo", "kept: not our prefix"),
        ]);
        remove_gatehouse_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn our_cookies_stay_and_the_upstreams_pass() {
        let mut h = headers(&[
            ("cookie", "__Host-gh_session=secret; theme=dark"),
            ("cookie", "gh_device=d; cart=7"),
        ]);
        remove_cookies(&mut h, &["__Host-gh_session", "gh_device"]);
        assert_eq!(h.get("cookie").unwrap(), "theme=dark; cart=7");
        let mut only_ours = headers(&[("cookie", "__Host-gh_session=secret")]);
        remove_cookies(&mut only_ours, &["__Host-gh_session"]);
        assert!(only_ours.get("cookie").is_none());
    }

    #[test]
    fn an_upstream_sets_its_own_cookies_never_ours() {
        let mut h = headers(&[
            ("set-cookie", "gh_session=planted; Path=/"),
            ("set-cookie", "app=1; Path=/"),
            ("set-cookie", " __HOST-GH_DEVICE = x; Secure"),
            ("set-cookie", "__Secure-gh_session=x; Secure"),
            ("set-cookie", "gh_sessionx=kept"),
            ("content-type", "text/html"),
        ]);
        remove_set_cookies(&mut h, &["gh_session", "__Host-gh_device"]);
        let left: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(left, ["app=1; Path=/", "gh_sessionx=kept"]);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn forwarded_headers_trust_only_a_trusted_peer() {
        let spoofed = [
            ("host", "gw.example"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-prefix", "/evil"),
        ];
        let mut direct = headers(&spoofed);
        let forwarding = Forwarding {
            peer: "198.51.100.7",
            peer_trusted: false,
            proto: "http",
            prefix: "/svc/orders",
        };
        set_forwarded(&mut direct, &forwarding);
        assert_eq!(direct.get("x-forwarded-for").unwrap(), "198.51.100.7");
        assert_eq!(direct.get("x-forwarded-host").unwrap(), "gw.example");
        assert_eq!(direct.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(direct.get("x-forwarded-prefix").unwrap(), "/svc/orders");
        assert!(direct.get("host").is_none() && direct.get("forwarded").is_none());

        let mut proxied = headers(&spoofed);
        set_forwarded(
            &mut proxied,
            &Forwarding {
                peer_trusted: true,
                peer: "10.0.0.2",
                ..forwarding
            },
        );
        assert_eq!(
            proxied.get("x-forwarded-for").unwrap(),
            "203.0.113.9, 10.0.0.2"
        );
        assert_eq!(proxied.get("x-forwarded-host").unwrap(), "evil.example");
        assert_eq!(proxied.get("x-forwarded-proto").unwrap(), "https");
    }
}
