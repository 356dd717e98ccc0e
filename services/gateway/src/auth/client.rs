//! Who is on the other end: the client IP (from the socket, or from
//! `X-Forwarded-For` only when the socket peer is a configured trusted proxy)
//! and the user agent.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address and user agent, for sessions, audit and throttling.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client IP.
    pub addr: IpAddr,
    /// The same, as text (`unknown` when served without a socket, in-process tests).
    pub ip: String,
    /// `User-Agent`, possibly empty.
    pub user_agent: String,
    /// The socket peer (the proxy, when there is one); `None` without a
    /// socket (in-process tests).
    pub peer: Option<IpAddr>,
}

impl ClientInfo {
    /// The caller as the application layer takes it (sign-in, audit).
    #[must_use]
    pub fn origin(&self) -> gatehouse_app::login::Origin {
        gatehouse_app::login::Origin {
            addr: self.addr,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }

    /// Whether the socket peer is one of `trusted` (a configured proxy).
    #[must_use]
    pub fn from_trusted_proxy(&self, trusted: &[IpNet]) -> bool {
        self.peer
            .is_some_and(|peer| trusted.iter().any(|net| net.contains(&peer)))
    }
}

/// The client IP: the socket peer, unless the peer is a trusted proxy, in
/// which case `X-Forwarded-For` is walked from the right (the hop closest to
/// us) past every trusted proxy; the first untrusted address is the client.
/// A malformed entry stops the walk at the last address we could trust.
#[must_use]
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: a bare IP, `ip:port`, or `[v6]:port`, as
/// proxies write them.
fn parse_hop(hop: &str) -> Result<IpAddr, std::net::AddrParseError> {
    hop.parse::<IpAddr>().or_else(|e| {
        hop.parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .map_err(|_| e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &headers("198.51.100.1"), &trusted), peer);
    }

    #[test]
    fn forwarded_for_is_walked_past_trusted_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        // Client-supplied junk on the left cannot win: the walk stops at the
        // first untrusted hop from the right.
        let h = headers("1.2.3.4, 198.51.100.7, 10.0.0.5");
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
        let with_ports = headers("198.51.100.8:5123, [2001:db8::7]:443");
        assert_eq!(
            client_ip(peer, &with_ports, &trusted),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        let garbage = headers("not-an-ip, 10.0.0.5");
        assert_eq!(
            client_ip(peer, &garbage, &trusted),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
