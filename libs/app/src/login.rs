//! Password sign-in: the one path every login (form or JSON) takes.
//!
//! Unknown user, wrong password, disabled user and malformed username all
//! cost one argon2 verification and end in the same [`LoginError::InvalidCredentials`],
//! so neither the answer nor its timing tells which usernames exist.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{Clock, Username, Verification};
use gatehouse_ratelimit::{Attempt, LimitKind, LoginLimits, Throttle};
use gatehouse_session::{NewSession, Session, SessionStore, SessionToken};
use gatehouse_store::audit::{Actor, AuditEvent, Outcome};
use gatehouse_store::directory::{self, Tenant};
use serde_json::json;
use sqlx::PgPool;

use crate::devices::DeviceKey;
use crate::passwords::{PasswordPool, PasswordPoolError};

/// Who is asking, as the edge saw it: for sessions, throttling and audit.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address (after trusted proxies).
    pub addr: std::net::IpAddr,
    /// The same, as text.
    pub ip: String,
    /// `User-Agent`, possibly empty.
    pub user_agent: String,
}

/// Longest password we will hash; longer input is refused without work so it
/// cannot be used to burn CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user, wrong password or disabled account (deliberately one case).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many hashes in flight; retry shortly.
    #[error("sign-in is busy")]
    Busy,
    /// A dependency did not answer.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    /// Unexpected failure (logged).
    #[error("internal error: {0}")]
    Internal(String),
    /// Too many attempts for this user, pair, client or tenant.
    #[error("too many sign-in attempts")]
    Throttled {
        /// Which limit.
        limit: LimitKind,
        /// When to retry.
        retry_after: Duration,
    },
}

/// Whole seconds for `Retry-After`, rounded up so clients never retry early.
#[must_use]
pub fn retry_after_secs(retry_after: Duration) -> u64 {
    u64::try_from(retry_after.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A successful sign-in.
#[derive(Debug)]
pub struct LoggedIn {
    /// The new session's token (cookie or bearer value).
    pub token: SessionToken,
    /// The new session.
    pub session: Session,
    /// A fresh known-device proof for this device.
    pub device_proof: String,
}

/// Everything sign-in needs.
#[derive(Clone)]
pub struct LoginService {
    db: PgPool,
    sessions: SessionStore,
    passwords: PasswordPool,
    throttle: Throttle,
    devices: DeviceKey,
    clock: Arc<dyn Clock>,
}

/// A sign-in request, however it arrived.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// The tenant signing into (already resolved and active).
    pub tenant: &'a Tenant,
    /// Username as typed.
    pub username: &'a str,
    /// Password as typed.
    pub password: String,
    /// Who is asking.
    pub client: &'a Origin,
    /// For the audit trail.
    pub request_id: Option<String>,
    /// A known-device proof the client presented, if any.
    pub device_proof: Option<&'a str>,
}

impl LoginService {
    /// Wires the service.
    #[must_use]
    pub fn new(
        db: PgPool,
        sessions: SessionStore,
        passwords: PasswordPool,
        throttle: Throttle,
        devices: DeviceKey,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            db,
            sessions,
            passwords,
            throttle,
            devices,
            clock,
        }
    }

    /// The password pool (also used for password changes).
    #[must_use]
    pub fn passwords(&self) -> &PasswordPool {
        &self.passwords
    }

    /// Checks the credentials and starts a new session.
    /// Throttled first (before any lookup, so unknown usernames count exactly
    /// like known ones), then the password check.
    pub async fn login(&self, credentials: Credentials<'_>) -> Result<LoggedIn, LoginError> {
        let result = self.throttled_login(&credentials).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(LoginError::InvalidCredentials) => "invalid_credentials",
            Err(LoginError::Busy) => "busy",
            Err(LoginError::Unavailable(_)) => "unavailable",
            Err(LoginError::Internal(_)) => "error",
            Err(LoginError::Throttled { .. }) => "throttled",
        };
        metrics::counter!("gatehouse_logins_total", "result" => outcome).increment(1);
        result
    }

    async fn throttled_login(&self, c: &Credentials<'_>) -> Result<LoggedIn, LoginError> {
        // Malformed usernames are throttled under their raw lowercased text.
        let throttle_name = Username::parse(c.username).map_or_else(
            |_| c.username.trim().to_lowercase(),
            |u| u.normalized().to_owned(),
        );
        let limits = LoginLimits::from_settings(c.tenant.settings.get("login_throttle")).unwrap_or_else(|e| {
            tracing::warn!(tenant = %c.tenant.slug, error = %e, "invalid login_throttle settings; using defaults");
            LoginLimits::default()
        });
        let now = self.clock.unix_seconds();
        let known_device = self.known_device(c, &throttle_name, now).await;
        let attempt = Attempt {
            tenant_id: c.tenant.id,
            username: throttle_name.clone(),
            ip: c.client.addr,
            known_device,
        };
        // A reservation, not a bare ticket: if the client goes away while the
        // password hashes, the cancelled request withdraws it (no phantom
        // failure against the username).
        let reservation = match self.throttle.reserve(&attempt, &limits).await {
            Ok(reservation) => reservation,
            Err((limit, retry_after)) => {
                tracing::info!(tenant = %c.tenant.slug, limit = limit.as_str(), "login throttled");
                return Err(LoginError::Throttled { limit, retry_after });
            }
        };
        match self.check_and_start(c).await {
            Ok((token, session, epoch)) => {
                reservation.succeeded().await;
                let device_proof = self.devices.issue(c.tenant.id, &throttle_name, epoch, now);
                Ok(LoggedIn {
                    token,
                    session,
                    device_proof,
                })
            }
            Err(LoginError::InvalidCredentials) => {
                reservation.failed();
                Err(LoginError::InvalidCredentials)
            }
            Err(other) => {
                reservation.withdraw().await;
                Err(other)
            }
        }
    }

    /// Whether the attempt presents a valid proof of a device this user
    /// signed in from, issued in the user's current credential epoch. Only a
    /// proof whose signature checks costs a (indexed) read; a failed read
    /// means "not known" (the bypass fails closed).
    async fn known_device(&self, c: &Credentials<'_>, username: &str, now: i64) -> bool {
        let Some(epoch) = c
            .device_proof
            .and_then(|proof| self.devices.verify(proof, c.tenant.id, username, now))
        else {
            return false;
        };
        match directory::credential_epoch(&self.db, c.tenant.id, username).await {
            Ok(current) => current == Some(epoch),
            Err(e) => {
                tracing::warn!(error = %e, "credential epoch lookup failed; device not trusted");
                false
            }
        }
    }

    /// Checks the password and starts the session; also returns the user's
    /// credential epoch, for the device proof.
    async fn check_and_start(
        &self,
        c: &Credentials<'_>,
    ) -> Result<(SessionToken, Session, i64), LoginError> {
        if c.password.len() > MAX_PASSWORD_BYTES {
            self.audit_failure(c, None, "password_too_long").await;
            return Err(LoginError::InvalidCredentials);
        }
        let username = Username::parse(c.username).ok();
        let user = match &username {
            Some(name) => directory::user_for_login(&self.db, c.tenant.id, name)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "user lookup failed");
                    LoginError::Unavailable("database")
                })?,
            None => None,
        };
        let verification = self
            .passwords
            .verify(
                c.password.clone(),
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await
            .map_err(|e| match e {
                PasswordPoolError::Busy => LoginError::Busy,
                PasswordPoolError::Failed(reason) => LoginError::Internal(reason),
            });
        // An unreadable stored hash is an operator problem, but answering 500
        // would tell the caller this username exists: log it, refuse generically.
        let verification = match verification {
            Err(LoginError::Internal(reason)) if user.is_some() => {
                tracing::error!(reason = %reason, "stored password hash is unusable");
                let id = user.as_ref().map(|u| u.id);
                self.audit_failure(c, id, "unusable_password_hash").await;
                return Err(LoginError::InvalidCredentials);
            }
            other => other?,
        };
        let Some(user) = user else {
            self.audit_failure(c, None, "unknown_user").await;
            return Err(LoginError::InvalidCredentials);
        };
        let rehash = match verification {
            Verification::Mismatch => {
                self.audit_failure(c, Some(user.id), "wrong_password").await;
                return Err(LoginError::InvalidCredentials);
            }
            Verification::Match => None,
            Verification::MatchNeedsRehash(new_hash) => Some(new_hash),
        };
        if user.status != "active" {
            self.audit_failure(c, Some(user.id), "user_disabled").await;
            return Err(LoginError::InvalidCredentials);
        }
        if let Some(new_hash) = &rehash {
            match directory::replace_password_hash(
                &self.db,
                c.tenant.id,
                user.id,
                &user.password_hash,
                new_hash,
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(user_id = %user.id, "password rehashed with current parameters");
                }
                Err(e) => tracing::warn!(error = %e, "password rehash not stored"),
            }
        }
        let (token, session) = self
            .sessions
            .create(NewSession {
                tenant_id: c.tenant.id,
                tenant_slug: c.tenant.slug.clone(),
                user_id: user.id,
                username: user.username_display.clone(),
                ip: c.client.ip.clone(),
                user_agent: c.client.user_agent.clone(),
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "session store unavailable at login");
                LoginError::Unavailable("session store")
            })?;
        // The account may have been disabled or its password changed while we
        // were hashing; those operations end the sessions that existed when
        // they ran, so a session created in that window is ended here.
        let still_valid = self.account_unchanged(c, &user, rehash.as_deref()).await;
        if !still_valid {
            let _ = self.sessions.end(c.tenant.id, user.id, &session.id).await;
            self.audit_failure(c, Some(user.id), "account_changed_during_login")
                .await;
            return Err(LoginError::InvalidCredentials);
        }
        self.audit(
            c,
            Actor::User(user.id),
            Outcome::Success,
            json!({ "session_id": session.id }),
        )
        .await;
        Ok((token, session, user.credential_epoch))
    }

    /// Whether the account is still active with the password just checked
    /// (or the rehash we stored for it).
    async fn account_unchanged(
        &self,
        c: &Credentials<'_>,
        user: &directory::LoginUser,
        rehash: Option<&str>,
    ) -> bool {
        let expected_hash = rehash.unwrap_or(&user.password_hash);
        match directory::user_by_id(&self.db, c.tenant.id, user.id).await {
            Ok(Some(now)) => {
                now.status == "active"
                    && (now.password_hash == user.password_hash
                        || now.password_hash == expected_hash)
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "user re-check after sign-in failed");
                false
            }
        }
    }

    async fn audit_failure(&self, c: &Credentials<'_>, user: Option<uuid::Uuid>, reason: &str) {
        let actor = user.map_or(Actor::Anonymous, Actor::User);
        self.audit(c, actor, Outcome::Failure, json!({ "reason": reason }))
            .await;
    }

    async fn audit(
        &self,
        c: &Credentials<'_>,
        actor: Actor,
        outcome: Outcome,
        details: serde_json::Value,
    ) {
        let target = Username::parse(c.username)
            .map_or_else(|_| "<malformed>".to_owned(), |u| u.normalized().to_owned());
        let event = AuditEvent {
            tenant_id: Some(c.tenant.id),
            actor,
            action: "login",
            target: Some(target),
            outcome,
            ip: Some(c.client.ip.clone()),
            user_agent: Some(c.client.user_agent.clone()),
            request_id: c.request_id.clone(),
            details,
        };
        if let Err(e) = gatehouse_store::audit::record(&self.db, &event).await {
            tracing::error!(error = %e, action = event.action, "audit event not recorded");
        }
    }
}

/// Fewest characters a new password may have.
pub const MIN_NEW_PASSWORD_CHARS: usize = 10;

/// Why a password change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    /// The new password is too short or too long (the detail says which).
    #[error("{0}")]
    Invalid(String),
    /// The account went while the session lived.
    #[error("the account no longer exists")]
    Gone,
    /// Too many password attempts (the check of the current one is a
    /// sign-in attempt for the throttle).
    #[error("too many password attempts")]
    Throttled(Duration),
    /// The current password is wrong.
    #[error("current_password is incorrect")]
    WrongPassword,
    /// The password changed meanwhile.
    #[error("the password changed meanwhile; retry")]
    Conflict,
    /// Hashing is busy or failed.
    #[error(transparent)]
    Hashing(#[from] PasswordPoolError),
    /// Postgres.
    #[error(transparent)]
    Store(#[from] gatehouse_store::StoreError),
    /// Ending the other sessions failed (the password did change).
    #[error(transparent)]
    Sessions(#[from] gatehouse_session::SessionError),
}

/// A password change request from a signed-in session.
#[derive(Debug)]
pub struct PasswordChange<'a> {
    /// The caller's session.
    pub session: &'a Session,
    /// Its tenant (for its throttle settings).
    pub tenant: &'a Tenant,
    /// Who is asking.
    pub client: &'a Origin,
    /// For the audit trail.
    pub request_id: Option<String>,
    /// The password now.
    pub current_password: String,
    /// The password to set.
    pub new_password: String,
}

impl LoginService {
    /// Changes the caller's password after checking the current one, and
    /// ends every other session of the account (through `admission`, so
    /// their tokens are revoked too); returns how many ended. The check of
    /// the current password is a sign-in attempt for the throttle (pair,
    /// username, IP and tenant limits), so a stolen session cannot guess the
    /// password faster than the sign-in form allows.
    pub async fn change_password(
        &self,
        admission: &crate::admission::Admission,
        change: PasswordChange<'_>,
    ) -> Result<u64, PasswordChangeError> {
        let chars = change.new_password.chars().count();
        if chars < MIN_NEW_PASSWORD_CHARS {
            return Err(PasswordChangeError::Invalid(format!(
                "new_password must be at least {MIN_NEW_PASSWORD_CHARS} characters"
            )));
        }
        if change.new_password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordChangeError::Invalid(format!(
                "new_password must be at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        let s = change.session;
        let user = directory::user_by_id(&self.db, s.tenant_id, s.user_id)
            .await?
            .ok_or(PasswordChangeError::Gone)?;
        self.check_current_password(&change, &user.password_hash)
            .await?;
        let new_hash = self.passwords.hash(change.new_password).await?;
        if !directory::change_password(
            &self.db,
            s.tenant_id,
            s.user_id,
            &user.password_hash,
            &new_hash,
        )
        .await?
        {
            return Err(PasswordChangeError::Conflict);
        }
        let ended = admission
            .end(crate::revocation::Ending::AllOfUser {
                tenant_id: s.tenant_id,
                user_id: s.user_id,
                keep: Some(&s.id),
            })
            .await?;
        let event = AuditEvent {
            tenant_id: Some(s.tenant_id),
            actor: Actor::User(s.user_id),
            action: "password.change",
            target: Some(s.username.clone()),
            outcome: Outcome::Success,
            ip: Some(change.client.ip.clone()),
            user_agent: Some(change.client.user_agent.clone()),
            request_id: change.request_id.clone(),
            details: json!({ "ended_other_sessions": ended }),
        };
        if let Err(e) = gatehouse_store::audit::record(&self.db, &event).await {
            tracing::error!(error = %e, action = event.action, "audit event not recorded");
        }
        Ok(ended)
    }

    /// The current password, checked as a throttled sign-in attempt.
    async fn check_current_password(
        &self,
        change: &PasswordChange<'_>,
        stored_hash: &str,
    ) -> Result<(), PasswordChangeError> {
        let s = change.session;
        let attempt = Attempt {
            tenant_id: s.tenant_id,
            username: Username::parse(&s.username)
                .map_or_else(|_| s.username.to_lowercase(), |u| u.normalized().to_owned()),
            ip: change.client.addr,
            known_device: false,
        };
        let limits = LoginLimits::from_settings(change.tenant.settings.get("login_throttle"))
            .unwrap_or_default();
        let reservation = self
            .throttle
            .reserve(&attempt, &limits)
            .await
            .map_err(|(_, retry_after)| PasswordChangeError::Throttled(retry_after))?;
        let verification = match self
            .passwords
            .verify(
                change.current_password.clone(),
                Some(stored_hash.to_owned()),
            )
            .await
        {
            Ok(verification) => verification,
            Err(e) => {
                reservation.withdraw().await;
                return Err(e.into());
            }
        };
        if verification == Verification::Mismatch {
            reservation.failed();
            return Err(PasswordChangeError::WrongPassword);
        }
        reservation.succeeded().await;
        Ok(())
    }
}
