//! Who is on the other end ([`ClientInfo`]): the client address (through
//! trusted proxies only), the socket peer and the user agent. Needs only the
//! HTTP settings, as an axum sub-state.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::auth::client::{ClientInfo, client_ip};
use crate::config::HttpSettings;

impl<S> FromRequestParts<S> for ClientInfo
where
    S: Send + Sync,
    Arc<HttpSettings>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let http = Arc::<HttpSettings>::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        let (addr, ip) = match peer {
            Some(peer) => {
                let addr = client_ip(peer, &parts.headers, &http.trusted_proxies);
                (addr, addr.to_string())
            }
            None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), "unknown".to_owned()),
        };
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            addr,
            ip,
            user_agent,
            peer,
        })
    }
}
