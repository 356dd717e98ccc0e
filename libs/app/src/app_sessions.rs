//! Sessions for apps served on their own origin (the proxy's apps listener).
//!
//! An app's origin never sees the user's session token: the console's origin
//! hands it a one-time handshake code (see [`gatehouse_session::Handshakes`]),
//! which the app's origin redeems for a credential of its own, valid only on
//! that host. The credential names the user's session and carries a MAC over
//! (tenant, session, host) under a key derived from the key-encryption key,
//! so nothing more is stored, it cannot be moved to another host or to the
//! console, and admitting it admits the user's session itself: when that
//! session ends (sign-out, "sign out everywhere", revocation, expiry), every
//! app's credential ends with it.

/// How many app sign-ins one session may start, and over what window.
pub use gatehouse_session::{ISSUE_WINDOW, ISSUES_PER_WINDOW};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_session::{HandshakeGrant, Handshakes, Session, SessionError, SessionId};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use uuid::Uuid;

use crate::admission::{Admission, AdmissionError, Refusal, Verdict};

type HmacSha256 = Hmac<Sha256>;

/// The version tag every app credential starts with.
const PREFIX: &str = "ga1.";

/// Handshakes and the host-scoped credentials they end in.
pub struct AppSessions {
    handshakes: Handshakes,
    credentials: AppCredentials,
    admission: Arc<Admission>,
}

/// Issues and checks app credentials: pure, so the binding is tested alone.
struct AppCredentials {
    key: [u8; 32],
}

impl std::fmt::Debug for AppSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSessions").finish_non_exhaustive()
    }
}

/// A redeemed handshake: the credential to set on the app's host and where
/// to send the browser.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The app credential (the cookie's value).
    pub credential: String,
    /// The path on the app to return to.
    pub return_path: String,
}

impl AppSessions {
    /// App sessions over `handshakes`, with their MAC key derived from the
    /// key-encryption key (rotating the KEK ends every app credential).
    #[must_use]
    pub fn new(handshakes: Handshakes, kek: &[u8; 32], admission: Arc<Admission>) -> Self {
        Self {
            handshakes,
            credentials: AppCredentials::new(kek),
            admission,
        }
    }

    /// Starts a handshake for `session` towards the app at `host`
    /// (`name[:port]`, lower case), returning to `return_path`. `None` when
    /// the session has started its share of handshakes for now
    /// (`gatehouse_session::ISSUES_PER_WINDOW` per `ISSUE_WINDOW`).
    pub async fn begin(
        &self,
        session: &Session,
        host: &str,
        return_path: &str,
    ) -> Result<Option<String>, SessionError> {
        self.handshakes
            .issue(&HandshakeGrant {
                tenant_id: session.tenant_id,
                session_id: session.id.clone(),
                host: host.to_owned(),
                return_path: return_path.to_owned(),
            })
            .await
    }

    /// Redeems `code` on `host`. `None` when the code is unknown, used,
    /// expired, or was issued for another host (it is spent either way).
    pub async fn complete(
        &self,
        code: &str,
        host: &str,
    ) -> Result<Option<Completed>, SessionError> {
        let Some(grant) = self.handshakes.redeem(code).await? else {
            return Ok(None);
        };
        if grant.host != host {
            return Ok(None);
        }
        Ok(Some(Completed {
            credential: self
                .credentials
                .issue(grant.tenant_id, &grant.session_id, host),
            return_path: grant.return_path,
        }))
    }

    /// Admits an app credential presented on `host`: its MAC first (a forged
    /// or moved credential costs no store access), then the user's session
    /// by the same rules as the session cookie.
    pub async fn admit(&self, credential: &str, host: &str) -> Result<Verdict, AdmissionError> {
        let Some((tenant_id, session_id)) = self.credentials.verify(credential, host) else {
            return Ok(Err(Refusal::Missing));
        };
        self.admission
            .admit_linked_session(tenant_id, session_id)
            .await
    }
}

impl AppCredentials {
    fn new(kek: &[u8; 32]) -> Self {
        let mut mac = HmacSha256::new_from_slice(kek)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"gatehouse app session key v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// `ga1.<tenant>.<session id>.<mac>`.
    fn issue(&self, tenant_id: Uuid, session_id: &SessionId, host: &str) -> String {
        let tenant = tenant_id.simple().to_string();
        let mac = URL_SAFE_NO_PAD.encode(
            self.mac(&tenant, session_id.as_str(), host)
                .finalize()
                .into_bytes(),
        );
        format!("{PREFIX}{tenant}.{session_id}.{mac}")
    }

    fn mac(&self, tenant: &str, session_id: &str, host: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for part in [tenant, session_id, host] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac
    }

    /// The tenant and session a credential names, if its MAC holds for `host`.
    fn verify(&self, credential: &str, host: &str) -> Option<(Uuid, SessionId)> {
        let rest = credential.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(3, '.');
        let (tenant, id, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let presented = URL_SAFE_NO_PAD.decode(mac).ok()?;
        self.mac(tenant, id, host).verify_slice(&presented).ok()?;
        Some((Uuid::try_parse(tenant).ok()?, SessionId::parse(id)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    #[test]
    fn a_credential_holds_only_on_its_own_host_under_its_own_key() {
        let credentials = AppCredentials::new(&[1; 32]);
        let tenant = Uuid::new_v4();
        let id = SessionId::parse(&"ab".repeat(32)).unwrap();
        let issued = credentials.issue(tenant, &id, "orders.example:8443");
        assert!(issued.starts_with("ga1."));
        assert_eq!(
            credentials.verify(&issued, "orders.example:8443"),
            Some((tenant, id.clone()))
        );
        assert_eq!(credentials.verify(&issued, "billing.example:8443"), None);
        assert_eq!(credentials.verify(&issued, "orders.example"), None);
        assert_eq!(
            AppCredentials::new(&[2; 32]).verify(&issued, "orders.example:8443"),
            None
        );
        // Another session's id under this one's MAC.
        let other = SessionId::parse(&"cd".repeat(32)).unwrap();
        let moved = issued.replace(id.as_str(), other.as_str());
        assert_eq!(credentials.verify(&moved, "orders.example:8443"), None);
        for junk in [
            "",
            "ga1.",
            "ga1.x.y.z",
            "gs1_abc",
            &issued[..issued.len() - 2],
        ] {
            assert_eq!(
                credentials.verify(junk, "orders.example:8443"),
                None,
                "{junk}"
            );
        }
    }
}
