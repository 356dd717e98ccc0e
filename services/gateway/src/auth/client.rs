//! Who is on the other end of the socket.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

/// The client's address and user agent, for sessions, audit and throttling.
///
/// The IP is the socket peer. Honouring `X-Forwarded-For` from trusted proxies
/// is the login-throttling feature's job and lands with it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Peer IP, or `unknown` when served without connect info (in-process tests).
    pub ip: String,
    /// `User-Agent`, possibly empty.
    pub user_agent: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(
                || "unknown".to_owned(),
                |ConnectInfo(addr)| addr.ip().to_string(),
            );
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Self { ip, user_agent })
    }
}
