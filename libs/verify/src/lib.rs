//! Accept Gatehouse access tokens in any tower-based Rust service.
//!
//! [`JwksVerifier`] fetches the gateway's JWKS once, keeps the keys in memory
//! and verifies tokens locally (pinned algorithm per `kid`, `iss`, `aud`,
//! time with leeway, optional tenant). A token signed with a key it does not
//! know makes it refetch the JWKS (at most once per
//! [`VerifyConfig::refetch_min_interval`]), which is how rotations reach it.
//! [`GatehouseAuthLayer`] wraps a service: requests without a valid
//! `Authorization: Bearer` token get `401` (problem+json); valid ones reach
//! the inner service with the [`AccessClaims`] as a request extension.
//!
//! The JWKS is also refetched once it is older than
//! [`VerifyConfig::jwks_max_age`] (the gateway's `Cache-Control` max-age), so a
//! key the gateway retired stops being trusted here within that time.
//!
//! By default this checks signatures and claims, not revocation: a revoked
//! token stays valid here until it expires (`expires_in`, 10 minutes by
//! default). Where that matters, set [`VerifyConfig::introspection`] with a
//! service client's credentials: every token that verifies locally is then
//! also confirmed by the gateway (`POST /oauth2/introspect`, RFC 7662), the
//! answer kept for [`Introspection::cache_for`] per token id. The
//! gateway being unreachable then fails closed (`503`), never open.
//!
//! ```no_run
//! # async fn example() -> Result<(), gatehouse_verify::VerifyLayerError> {
//! use std::sync::Arc;
//! use gatehouse_verify::{GatehouseAuthLayer, Introspection, JwksVerifier, VerifyConfig};
//!
//! let mut config = VerifyConfig::new("https://gate.example.com", "gatehouse");
//! // Optional: refuse revoked tokens too, asking the gateway with a service
//! // client's credentials (POST /admin/api/v1/service-clients creates one).
//! let secret = std::env::var("ORDERS_CLIENT_SECRET").unwrap_or_default();
//! config.introspection = Some(Introspection::new("https://gate.example.com", "orders-svc", &secret));
//! let verifier = JwksVerifier::connect(config).await?;
//! let layer = GatehouseAuthLayer::new(Arc::new(verifier));
//! // axum:  Router::new().route("/orders", get(handler)).layer(layer)
//! // handler: async fn handler(Extension(claims): Extension<gatehouse_verify::AccessClaims>) { ... }
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use gatehouse_tokens::AccessClaims;
use gatehouse_tokens::{PublicKey, SigningAlgorithm, TokenSettings, Verifier, VerifyError};
use http::{Request, Response, StatusCode, header};
use serde_json::Value;

/// Where the gateway is and what to require of its tokens.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The gateway's issuer URL (`iss`), e.g. `https://gate.example.com`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// JWKS location (default `<issuer>/.well-known/jwks.json`).
    pub jwks_url: String,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
    /// Only tokens of this tenant (slug), if set.
    pub tenant: Option<String>,
    /// Least time between two JWKS fetches caused by unknown key ids.
    pub refetch_min_interval: Duration,
    /// Keys older than this are refetched on the next request (default 300 s,
    /// the gateway's JWKS `Cache-Control: max-age`), so retired keys drop out.
    pub jwks_max_age: Duration,
    /// Also ask the gateway whether each token is still active (revocation).
    pub introspection: Option<Introspection>,
    /// What `exp` and `nbf` are checked against (the system clock unless a
    /// test sets another).
    pub clock: std::sync::Arc<dyn gatehouse_core::Clock>,
}

/// Credentials and caching for revocation checks through `/oauth2/introspect`.
#[derive(Clone)]
pub struct Introspection {
    /// Introspection endpoint (default `<issuer>/oauth2/introspect`).
    pub url: String,
    /// Service client id (created with the admin API).
    pub client_id: String,
    /// Service client secret.
    pub client_secret: String,
    /// How long an "active" answer is reused for the same token id: the
    /// longest a revoked token can still pass here. Zero asks every time.
    pub cache_for: Duration,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("cache_for", &self.cache_for)
            .finish_non_exhaustive()
    }
}

impl Introspection {
    /// Introspection at `issuer`'s standard endpoint with a service client's
    /// credentials; answers are reused for 5 s.
    #[must_use]
    pub fn new(issuer: &str, client_id: &str, client_secret: &str) -> Self {
        Self {
            url: format!("{}/oauth2/introspect", issuer.trim_end_matches('/')),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            cache_for: Duration::from_secs(5),
        }
    }
}

impl VerifyConfig {
    /// Defaults for a gateway at `issuer` issuing tokens for `audience`.
    #[must_use]
    pub fn new(issuer: &str, audience: &str) -> Self {
        let issuer = issuer.trim_end_matches('/').to_owned();
        Self {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            audience: audience.to_owned(),
            leeway: Duration::from_secs(30),
            tenant: None,
            refetch_min_interval: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(300),
            introspection: None,
            clock: std::sync::Arc::new(gatehouse_core::SystemClock),
        }
    }
}

/// Setting up the verifier failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyLayerError {
    /// The JWKS could not be fetched.
    #[error("fetching the JWKS from {url} failed: {reason}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The JWKS held no usable key.
    #[error("the JWKS at {0} holds no usable signing key")]
    NoKeys(String),
}

/// Why a request was refused by [`JwksVerifier::check`].
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The token is not valid (signature, claims, unknown key, ...).
    #[error("invalid token: {}", .0.label())]
    Invalid(#[from] VerifyError),
    /// The gateway says the token is no longer active (revoked, session ended).
    #[error("the gateway reports the token inactive")]
    Inactive,
    /// Revocation could not be checked: refused, since failing open would let
    /// revoked tokens through.
    #[error("introspection failed: {0}")]
    IntrospectionUnavailable(String),
}

/// Most token ids whose "active" answer is remembered.
const MAX_INTROSPECTION_CACHE: usize = 10_000;

/// Verifies Gatehouse access tokens with keys from the gateway's JWKS.
pub struct JwksVerifier {
    config: VerifyConfig,
    http: reqwest::Client,
    keys: RwLock<(Arc<Verifier>, Instant)>,
    refetch: tokio::sync::Mutex<()>,
    /// Token id → when the gateway last said it was active.
    active: RwLock<HashMap<String, Instant>>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JwksVerifier {
    /// Fetches the JWKS once; fails when the gateway cannot be reached.
    pub async fn connect(config: VerifyConfig) -> Result<Self, VerifyLayerError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| VerifyLayerError::Fetch {
                url: config.jwks_url.clone(),
                reason: e.to_string(),
            })?;
        let verifier = fetch(&http, &config).await?;
        Ok(Self {
            config,
            http,
            keys: RwLock::new((Arc::new(verifier), Instant::now())),
            refetch: tokio::sync::Mutex::new(()),
            active: RwLock::new(HashMap::new()),
        })
    }

    fn current(&self) -> (Arc<Verifier>, Instant) {
        match self.keys.read() {
            Ok(guard) => (Arc::clone(&guard.0), guard.1),
            Err(poisoned) => {
                let guard = poisoned.into_inner();
                (Arc::clone(&guard.0), guard.1)
            }
        }
    }

    /// Verifies a token locally; an unknown `kid` triggers one (rate-limited)
    /// JWKS refetch, and keys older than `jwks_max_age` are refreshed first.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let tenant = self.config.tenant.as_deref();
        let (verifier, fetched_at) = self.current();
        let max_age = self.config.jwks_max_age;
        if fetched_at.elapsed() >= max_age {
            // Re-checked under the lock: concurrent callers fetch once.
            self.refresh(|(_, fetched_at)| fetched_at.elapsed() >= max_age)
                .await;
        } else {
            match verifier.verify(token, self.config.clock.unix_seconds(), tenant) {
                Err(VerifyError::UnknownKey) => {}
                other => return other,
            }
            let kid = Verifier::kid_of(token).ok_or(VerifyError::UnknownKey)?;
            let min_interval = self.config.refetch_min_interval;
            self.refresh(|(verifier, fetched_at)| {
                !verifier.knows(&kid) && fetched_at.elapsed() >= min_interval
            })
            .await;
        }
        self.current()
            .0
            .verify(token, self.config.clock.unix_seconds(), tenant)
    }

    /// Refetches the JWKS when `needed` still holds once this caller has the
    /// refetch lock (so concurrent callers fetch once). A failed fetch keeps
    /// the known keys, and counts as a fetch for the rate limits.
    async fn refresh(&self, needed: impl FnOnce(&(Arc<Verifier>, Instant)) -> bool) {
        let _one_at_a_time = self.refetch.lock().await;
        let current = self.current();
        if !needed(&current) {
            return;
        }
        let fresh = match fetch(&self.http, &self.config).await {
            Ok(fresh) => Arc::new(fresh),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch failed; keeping the known keys");
                current.0
            }
        };
        if let Ok(mut slot) = self.keys.write() {
            *slot = (fresh, Instant::now());
        }
    }

    /// Verifies a token and, when introspection is configured, confirms with
    /// the gateway that it is still active. This is what the layer calls.
    pub async fn check(&self, token: &str) -> Result<AccessClaims, Refusal> {
        let claims = self.verify(token).await?;
        let Some(introspection) = &self.config.introspection else {
            return Ok(claims);
        };
        let fresh = self
            .active
            .read()
            .ok()
            .and_then(|seen| seen.get(&claims.jti).copied())
            .is_some_and(|at| at.elapsed() < introspection.cache_for);
        if fresh {
            return Ok(claims);
        }
        let response = self
            .http
            .post(&introspection.url)
            .basic_auth(&introspection.client_id, Some(&introspection.client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|e| Refusal::IntrospectionUnavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(Refusal::IntrospectionUnavailable(format!(
                "status {}",
                response.status()
            )));
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| Refusal::IntrospectionUnavailable(e.to_string()))?;
        let mut seen = self
            .active
            .write()
            .map_err(|_| Refusal::IntrospectionUnavailable("cache lock poisoned".into()))?;
        if answer["active"] != Value::Bool(true) {
            seen.remove(&claims.jti);
            return Err(Refusal::Inactive);
        }
        if !introspection.cache_for.is_zero() {
            if seen.len() >= MAX_INTROSPECTION_CACHE {
                let cache_for = introspection.cache_for;
                seen.retain(|_, at| at.elapsed() < cache_for);
                if seen.len() >= MAX_INTROSPECTION_CACHE {
                    seen.clear();
                }
            }
            seen.insert(claims.jti.clone(), Instant::now());
        }
        Ok(claims)
    }
}

async fn fetch(
    http: &reqwest::Client,
    config: &VerifyConfig,
) -> Result<Verifier, VerifyLayerError> {
    let fail = |reason: String| VerifyLayerError::Fetch {
        url: config.jwks_url.clone(),
        reason,
    };
    let response = http
        .get(&config.jwks_url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("status {}", response.status())));
    }
    let jwks: Value = response.json().await.map_err(|e| fail(e.to_string()))?;
    let keys: Vec<PublicKey> = jwks["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|jwk| {
                    let alg = SigningAlgorithm::parse(jwk["alg"].as_str()?)?;
                    PublicKey::from_jwk(jwk["kid"].as_str()?, alg, jwk).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    if keys.is_empty() {
        return Err(VerifyLayerError::NoKeys(config.jwks_url.clone()));
    }
    let settings = TokenSettings {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        access_ttl_s: 0,
        leeway_s: i64::try_from(config.leeway.as_secs()).unwrap_or(30),
    };
    Ok(Verifier::new(settings, keys))
}

/// Adds Gatehouse token checking in front of a service.
#[derive(Debug, Clone)]
pub struct GatehouseAuthLayer {
    verifier: Arc<JwksVerifier>,
}

impl GatehouseAuthLayer {
    /// A layer using `verifier` (share one verifier across layers).
    #[must_use]
    pub fn new(verifier: Arc<JwksVerifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for GatehouseAuthLayer {
    type Service = GatehouseAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatehouseAuth {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// The service [`GatehouseAuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct GatehouseAuth<S> {
    inner: S,
    verifier: Arc<JwksVerifier>,
}

fn bearer<B>(request: &Request<B>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized<RB: From<String>>() -> Response<RB> {
    let body = r#"{"type":"urn:gatehouse:problem:unauthenticated","title":"Unauthorized","status":401,"detail":"a valid Gatehouse access token is required (Authorization: Bearer)"}"#;
    let mut response = Response::new(RB::from(body.to_owned()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

fn unavailable<RB: From<String>>() -> Response<RB> {
    let body = r#"{"type":"urn:gatehouse:problem:unavailable","title":"Service Unavailable","status":503,"detail":"the token's revocation status could not be checked with the gateway; try again"}"#;
    let mut response = Response::new(RB::from(body.to_owned()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}

impl<S, B, RB> tower::Service<Request<B>> for GatehouseAuth<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: From<String> + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service goes with this request; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = Arc::clone(&self.verifier);
        Box::pin(async move {
            let Some(token) = bearer(&request).map(str::to_owned) else {
                return Ok(unauthorized());
            };
            match verifier.check(&token).await {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(Refusal::IntrospectionUnavailable(reason)) => {
                    tracing::warn!(%reason, "token revocation could not be checked; refusing");
                    Ok(unavailable())
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "access token refused");
                    Ok(unauthorized())
                }
            }
        })
    }
}
