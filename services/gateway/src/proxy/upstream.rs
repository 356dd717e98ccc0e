//! The pooled HTTP/1.1 client the proxy sends through (hyper-util's), its
//! deadlines, and the splice that joins two upgraded connections.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::config::ProxySettings;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Why a request did not get an answer from the instance.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connecting failed or timed out: nothing was sent, so an idempotent
    /// request may try another instance.
    #[error("could not connect: {0}")]
    Connect(String),
    /// No response headers within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed after the request was (perhaps partly) sent.
    #[error("failed mid-request: {0}")]
    Failed(String),
}

/// The proxy's client: pooled keep-alive connections per instance.
#[derive(Clone)]
pub struct Upstreams {
    client: Client<HttpConnector, Body>,
    response_timeout: Duration,
}

impl Upstreams {
    /// A client with the proxy's deadlines and pool size.
    #[must_use]
    pub fn new(settings: &ProxySettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(settings.max_idle_per_instance)
            .build(connector);
        Self {
            client,
            response_timeout: settings.response_timeout,
        }
    }

    /// Sends `request` and waits for the response headers (the body then
    /// streams as the caller reads it).
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(SendError::Timeout(self.response_timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(SendError::Failed(error_chain(&e))),
        }
    }
}

/// An error and its causes on one line (hyper's top-level message alone says
/// little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Joins the client's upgraded connection to the instance's, both ways,
/// until either side closes. Runs in its own task.
pub async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::warn!(error = %e, "an upgraded connection could not be joined");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "an upgraded connection ended with an error");
    }
}
