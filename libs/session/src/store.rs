//! The Redis session store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{Clock, ErrorKind};
use gatehouse_redis::redis::{self, Script};
use gatehouse_redis::{Keyspace, RedisError, RedisPool};
use uuid::Uuid;

use crate::token::{SessionId, SessionToken};

/// Longest user agent kept (longer ones are cut: it is display data).
const MAX_USER_AGENT_CHARS: usize = 256;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Redis did not answer in time or refused the connection.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A stored record could not be read (written by another version, or corrupt).
    #[error("session record is corrupt: {0}")]
    Corrupt(String),
}

impl SessionError {
    /// The shared kind of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Redis(_) => ErrorKind::Unavailable,
            Self::Corrupt(_) => ErrorKind::Internal,
        }
    }
}

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(RedisError::Command(e))
    }
}

/// Session lifetime rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session unused this long ends (sliding).
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however busy.
    pub absolute_timeout: Duration,
    /// The idle deadline is written back at most this often.
    pub touch_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 60 * 60),
            touch_interval: Duration::from_secs(60),
        }
    }
}

/// What is known about a session at sign-in.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Tenant id (also inside the token).
    pub tenant_id: Uuid,
    /// Tenant slug, so pages need no lookup to build links.
    pub tenant_slug: String,
    /// The signed-in user.
    pub user_id: Uuid,
    /// Their display username.
    pub username: String,
    /// Client IP at sign-in.
    pub ip: String,
    /// Client `User-Agent` at sign-in.
    pub user_agent: String,
}

/// What [`SessionStore::end_all_for_user`] ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndedSessions {
    /// Live sessions ended.
    pub count: u64,
    /// Every id taken from the user's index (live or already expired).
    pub ids: Vec<SessionId>,
}

/// A live session as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// Public id (hash of the token).
    pub id: SessionId,
    /// Tenant id.
    pub tenant_id: Uuid,
    /// Tenant slug.
    pub tenant_slug: String,
    /// User id.
    pub user_id: Uuid,
    /// Display username.
    pub username: String,
    /// Sign-in time (unix s).
    pub created_at: i64,
    /// Last use written back (unix s; at most one touch interval stale).
    pub last_seen_at: i64,
    /// When the credentials were last checked (unix s).
    pub auth_time: i64,
    /// Ends if unused until then (unix s).
    pub idle_expires_at: i64,
    /// Ends then regardless (unix s).
    pub absolute_expires_at: i64,
    /// Client IP at sign-in.
    pub ip: String,
    /// Client user agent at sign-in.
    pub user_agent: String,
}

impl Session {
    fn from_fields(
        id: SessionId,
        mut fields: HashMap<String, String>,
    ) -> Result<Self, SessionError> {
        let mut take = |name: &str| {
            fields
                .remove(name)
                .ok_or_else(|| SessionError::Corrupt(format!("field {name} missing")))
        };
        let number = |value: String, name: &str| {
            value
                .parse::<i64>()
                .map_err(|_| SessionError::Corrupt(format!("field {name} is not a number")))
        };
        let uuid = |value: String, name: &str| {
            Uuid::try_parse(&value)
                .map_err(|_| SessionError::Corrupt(format!("field {name} is not a uuid")))
        };
        Ok(Self {
            id,
            tenant_id: uuid(take("tenant_id")?, "tenant_id")?,
            tenant_slug: take("tenant_slug")?,
            user_id: uuid(take("user_id")?, "user_id")?,
            username: take("username")?,
            created_at: number(take("created_at")?, "created_at")?,
            last_seen_at: number(take("last_seen_at")?, "last_seen_at")?,
            auth_time: number(take("auth_time")?, "auth_time")?,
            idle_expires_at: number(take("idle_expires_at")?, "idle_expires_at")?,
            absolute_expires_at: number(take("absolute_expires_at")?, "absolute_expires_at")?,
            ip: take("ip")?,
            user_agent: take("user_agent")?,
        })
    }

    /// Whether the record is within its idle and absolute deadlines at `now`
    /// (unix s). A record held in memory since its last touch is at least as
    /// live as this says: the idle deadline only moves forward.
    #[must_use]
    pub fn is_live_at(&self, now: i64) -> bool {
        now < self.idle_expires_at && now < self.absolute_expires_at
    }
}

/// Creates, validates, lists and ends sessions.
#[derive(Clone)]
pub struct SessionStore {
    redis: RedisPool,
    keys: Keyspace,
    clock: Arc<dyn Clock>,
    config: SessionConfig,
    scripts: Arc<Scripts>,
}

struct Scripts {
    create: Script,
    validate: Script,
    delete: Script,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

impl SessionStore {
    /// A store over `redis` with keys under `keys`.
    #[must_use]
    pub fn new(
        redis: RedisPool,
        keys: Keyspace,
        clock: Arc<dyn Clock>,
        config: SessionConfig,
    ) -> Self {
        Self {
            redis,
            keys,
            clock,
            config,
            scripts: Arc::new(Scripts {
                create: Script::new(include_str!("../../../lua/session_create.lua")),
                validate: Script::new(include_str!("../../../lua/session_validate.lua")),
                delete: Script::new(include_str!("../../../lua/session_delete.lua")),
            }),
        }
    }

    /// How often a session's idle deadline is written back: also how long a
    /// validated record may be served from memory.
    #[must_use]
    pub fn touch_interval(&self) -> Duration {
        self.config.touch_interval
    }

    fn session_key(&self, tenant_id: Uuid, id: &SessionId) -> String {
        self.keys
            .tenant_key(&tenant_id.simple().to_string(), &format!("s:{id}"))
    }

    fn index_key(&self, tenant_id: Uuid, user_id: Uuid) -> String {
        self.keys.tenant_key(
            &tenant_id.simple().to_string(),
            &format!("us:{}", user_id.simple()),
        )
    }

    /// Key of the global set used for the approximate active-sessions gauge.
    fn active_key(&self) -> String {
        self.keys.global_key("sessions:active")
    }

    /// Starts a session with a fresh token (never one the client proposed, so
    /// a planted cookie cannot be adopted).
    pub async fn create(&self, new: NewSession) -> Result<(SessionToken, Session), SessionError> {
        let token = SessionToken::generate(new.tenant_id);
        let id = token.id();
        let now = self.clock.unix_seconds();
        let absolute = now.saturating_add(secs(self.config.absolute_timeout));
        let idle = now
            .saturating_add(secs(self.config.idle_timeout))
            .min(absolute);
        let user_agent: String = new.user_agent.chars().take(MAX_USER_AGENT_CHARS).collect();
        let session = Session {
            id: id.clone(),
            tenant_id: new.tenant_id,
            tenant_slug: new.tenant_slug,
            user_id: new.user_id,
            username: new.username,
            created_at: now,
            last_seen_at: now,
            auth_time: now,
            idle_expires_at: idle,
            absolute_expires_at: absolute,
            ip: new.ip,
            user_agent,
        };
        let session_key = self.session_key(session.tenant_id, &id);
        let index_key = self.index_key(session.tenant_id, session.user_id);
        let active_member = format!("{}:{id}", session.tenant_id.simple());
        let active_key = self.active_key();
        let scripts = self.scripts.clone();
        let fields: Vec<(&str, String)> = vec![
            ("tenant_id", session.tenant_id.to_string()),
            ("tenant_slug", session.tenant_slug.clone()),
            ("user_id", session.user_id.to_string()),
            ("username", session.username.clone()),
            ("created_at", now.to_string()),
            ("last_seen_at", now.to_string()),
            ("auth_time", now.to_string()),
            ("idle_expires_at", idle.to_string()),
            ("absolute_expires_at", absolute.to_string()),
            ("ip", session.ip.clone()),
            ("user_agent", session.user_agent.clone()),
        ];
        // Every step writes the same values for the same id: safe to repeat
        // when a restarted Redis dropped the connection under the first try.
        let (session_key, index_key, active_key, active_member, scripts, fields, id) = (
            &session_key,
            &index_key,
            &active_key,
            &active_member,
            &scripts,
            &fields,
            &id,
        );
        self.redis
            .run_idempotent(|mut conn| async move {
                let mut invocation = scripts.create.prepare_invoke();
                invocation
                    .key(session_key)
                    .key(index_key)
                    .arg(now)
                    .arg(idle - now)
                    .arg(absolute - now)
                    .arg(id.as_str())
                    .arg(absolute);
                for (name, value) in fields {
                    invocation.arg(*name).arg(value);
                }
                let _: i64 = invocation.invoke_async(&mut conn).await?;
                redis::cmd("ZADD")
                    .arg(active_key)
                    .arg(absolute)
                    .arg(active_member)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok((token, session))
    }

    /// The live session for `token`, sliding its idle deadline (written back
    /// at most once per touch interval). `None` when missing or expired.
    pub async fn validate(&self, token: &SessionToken) -> Result<Option<Session>, SessionError> {
        self.validate_id(token.tenant_id(), token.id()).await
    }

    /// [`SessionStore::validate`] by session id, for credentials that carry
    /// the id rather than the token (access tokens' `sid`). Use of the token
    /// counts as use of the session.
    pub async fn validate_id(
        &self,
        tenant_id: Uuid,
        id: SessionId,
    ) -> Result<Option<Session>, SessionError> {
        let key = self.session_key(tenant_id, &id);
        let now = self.clock.unix_seconds();
        let scripts = self.scripts.clone();
        let touch = secs(self.config.touch_interval);
        let idle = secs(self.config.idle_timeout);
        // Validation only slides the idle deadline: safe to send twice.
        let (key, scripts) = (&key, &scripts);
        let fields: Option<HashMap<String, String>> = self
            .redis
            .run_idempotent(|mut conn| async move {
                scripts
                    .validate
                    .key(key)
                    .arg(now)
                    .arg(touch)
                    .arg(idle)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match fields {
            Some(fields) if !fields.is_empty() => {
                let session = Session::from_fields(id, fields)?;
                // Defence in depth: a record from another tenant's token can't
                // exist (the key embeds the tenant), but check anyway.
                if session.tenant_id != tenant_id || !session.is_live_at(now) {
                    return Ok(None);
                }
                Ok(Some(session))
            }
            _ => Ok(None),
        }
    }

    /// Every live session of a user, newest first (one index read plus one
    /// pipelined read of the records).
    pub async fn list_for_user(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
    ) -> Result<Vec<Session>, SessionError> {
        let index_key = self.index_key(tenant_id, user_id);
        let ids: Vec<String> = self
            .redis
            .run(|mut conn| {
                let index_key = index_key.clone();
                async move {
                    redis::cmd("ZRANGE")
                        .arg(&index_key)
                        .arg(0)
                        .arg(-1)
                        .arg("REV")
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|raw| SessionId::parse(raw)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.session_key(tenant_id, id))
            .collect();
        let records: Vec<HashMap<String, String>> = self
            .redis
            .run(|mut conn| async move {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("HGETALL").arg(key);
                }
                pipe.query_async(&mut conn).await
            })
            .await?;
        let now = self.clock.unix_seconds();
        let mut live = Vec::with_capacity(ids.len());
        for (id, fields) in ids.into_iter().zip(records) {
            if fields.is_empty() {
                continue;
            }
            let session = Session::from_fields(id, fields)?;
            if session.is_live_at(now) && session.user_id == user_id {
                live.push(session);
            }
        }
        Ok(live)
    }

    /// Ends one session of a user. Returns false when the user has no such
    /// live session (including when it belongs to someone else).
    pub async fn end(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        id: &SessionId,
    ) -> Result<bool, SessionError> {
        Ok(self
            .end_many(tenant_id, user_id, std::slice::from_ref(id))
            .await?
            > 0)
    }

    /// Ends every session of a user except `keep` (the caller's own, for
    /// "sign out other devices"); returns how many live sessions ended and
    /// the ids it ended (so their tokens can be revoked).
    pub async fn end_all_for_user(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        keep: Option<&SessionId>,
    ) -> Result<EndedSessions, SessionError> {
        let index_key = self.index_key(tenant_id, user_id);
        let mut ended = EndedSessions::default();
        // A session created while we delete is picked up by the next pass;
        // three passes bound the work under a login storm.
        for _ in 0..3 {
            let ids: Vec<String> = self
                .redis
                .run(|mut conn| {
                    let index_key = index_key.clone();
                    async move {
                        redis::cmd("ZRANGE")
                            .arg(&index_key)
                            .arg(0)
                            .arg(-1)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            let ids: Vec<SessionId> = ids
                .iter()
                .filter_map(|raw| SessionId::parse(raw))
                .filter(|id| Some(id) != keep)
                .collect();
            if ids.is_empty() {
                break;
            }
            ended.count += self.end_many(tenant_id, user_id, &ids).await?;
            ended.ids.extend(ids);
        }
        Ok(ended)
    }

    /// Ends every session of a tenant (the kill switch) and returns what it
    /// ended. Walks the tenant's user indexes with `SCAN`, which is linear in
    /// the keyspace: meant for a rare operator action, never a request path.
    pub async fn end_all_for_tenant(&self, tenant_id: Uuid) -> Result<EndedSessions, SessionError> {
        let index_prefix = self.keys.tenant_key(&tenant_id.simple().to_string(), "us:");
        let pattern = format!("{}*", glob_escape(&index_prefix));
        let mut ended = EndedSessions::default();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .redis
                .run(|mut conn| {
                    let pattern = pattern.clone();
                    async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            for key in keys {
                let user = key
                    .strip_prefix(&index_prefix)
                    .and_then(|raw| Uuid::try_parse(raw).ok());
                if let Some(user) = user {
                    let of_user = self.end_all_for_user(tenant_id, user, None).await?;
                    ended.count += of_user.count;
                    ended.ids.extend(of_user.ids);
                }
            }
            if next == 0 {
                return Ok(ended);
            }
            cursor = next;
        }
    }

    async fn end_many(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        ids: &[SessionId],
    ) -> Result<u64, SessionError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let index_key = self.index_key(tenant_id, user_id);
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.session_key(tenant_id, id))
            .collect();
        let members: Vec<String> = ids
            .iter()
            .map(|id| format!("{}:{id}", tenant_id.simple()))
            .collect();
        let active_key = self.active_key();
        let scripts = self.scripts.clone();
        let ended: u64 = self
            .redis
            .run(|mut conn| async move {
                let mut invocation = scripts.delete.prepare_invoke();
                invocation.key(&index_key);
                for key in &keys {
                    invocation.key(key);
                }
                for id in ids {
                    invocation.arg(id.as_str());
                }
                let ended: u64 = invocation.invoke_async(&mut conn).await?;
                redis::cmd("ZREM")
                    .arg(&active_key)
                    .arg(&members)
                    .query_async::<()>(&mut conn)
                    .await?;
                Ok(ended)
            })
            .await?;
        Ok(ended)
    }

    /// Approximate count of live sessions across all tenants: sessions not
    /// ended and not past their absolute deadline (a session that ended by
    /// idling out is still counted until its absolute deadline). Also drops
    /// entries past that deadline.
    pub async fn count_active(&self) -> Result<u64, SessionError> {
        let key = self.active_key();
        let now = self.clock.unix_seconds();
        let count = self
            .redis
            .run(|mut conn| async move {
                let (count,): (u64,) = redis::pipe()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(now)
                    .ignore()
                    .cmd("ZCARD")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await?;
                Ok(count)
            })
            .await?;
        Ok(count)
    }
}

/// Escapes Redis glob metacharacters so a key prefix matches literally.
fn glob_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
