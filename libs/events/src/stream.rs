//! Writing revocations (deny list + event, one script) and tailing the stream.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_redis::redis::{self, Script, Value as RedisValue};
use gatehouse_redis::{Keyspace, RedisError, RedisPool};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{ENVELOPE_VERSION, RevocationMirror};

/// Stream failures.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Redis failed or timed out.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// An entry could not be understood.
    #[error("malformed event: {0}")]
    Malformed(String),
}

impl From<redis::RedisError> for EventError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(RedisError::from(e))
    }
}

/// One event as carried by the stream: `v`, `kind`, `tenant`, `at`, `payload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Layout version ([`ENVELOPE_VERSION`]).
    pub v: u16,
    /// `revoke.token`, `revoke.session`, `revoke.user`, `revoke.tenant`, …
    pub kind: String,
    /// Tenant concerned, if any.
    pub tenant: Option<Uuid>,
    /// When it was emitted (unix s).
    pub at: i64,
    /// Kind-specific body.
    pub payload: Value,
}

/// A revocation: what it denies and until when it matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Revocation {
    /// One access token (`jti`), until it would have expired.
    Token {
        /// Token id.
        jti: String,
        /// Its expiry (unix s).
        expires_at: i64,
    },
    /// Every token of one session.
    Session {
        /// Session id.
        sid: String,
        /// Expiry of the newest token it could hold (unix s).
        expires_at: i64,
    },
    /// Every token of a user issued before `before` (sign out everywhere, disable).
    User {
        /// Tenant.
        tenant_id: Uuid,
        /// User.
        user_id: Uuid,
        /// Unix s.
        before: i64,
    },
    /// Every token of a tenant issued before `before` (kill switch).
    Tenant {
        /// Tenant.
        tenant_id: Uuid,
        /// Unix s.
        before: i64,
    },
}

impl Revocation {
    fn kind(&self) -> &'static str {
        match self {
            Self::Token { .. } => "revoke.token",
            Self::Session { .. } => "revoke.session",
            Self::User { .. } => "revoke.user",
            Self::Tenant { .. } => "revoke.tenant",
        }
    }

    fn tenant(&self) -> Option<Uuid> {
        match self {
            Self::User { tenant_id, .. } | Self::Tenant { tenant_id, .. } => Some(*tenant_id),
            _ => None,
        }
    }

    /// The deny-list key suffix (ids are validated hex/uuids, never free text).
    fn key(&self) -> String {
        match self {
            Self::Token { jti, .. } => format!("deny:jti:{jti}"),
            Self::Session { sid, .. } => format!("deny:sid:{sid}"),
            Self::User {
                tenant_id, user_id, ..
            } => format!("rb:user:{}:{}", tenant_id.simple(), user_id.simple()),
            Self::Tenant { tenant_id, .. } => format!("rb:tenant:{}", tenant_id.simple()),
        }
    }
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Entries read per round trip when a mirror loads.
pub const LOAD_PAGE: usize = 500;

/// Stream bounds.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// Approximate number of entries kept (`XADD MAXLEN ~`).
    pub max_len: u64,
    /// Longest token life: how long marks must be kept.
    pub max_token_life: Duration,
    /// How long one `XREAD BLOCK` waits before looping.
    pub block: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_len: 100_000,
            max_token_life: Duration::from_secs(900),
            block: Duration::from_secs(5),
        }
    }
}

/// The event stream and the deny list behind it.
#[derive(Clone)]
pub struct EventStream {
    redis: RedisPool,
    keys: Keyspace,
    settings: StreamSettings,
    revoke: Arc<Script>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The stream under `keys`.
    #[must_use]
    pub fn new(redis: RedisPool, keys: Keyspace, settings: StreamSettings) -> Self {
        Self {
            redis,
            keys,
            settings,
            revoke: Arc::new(Script::new(include_str!("../../../lua/revoke.lua"))),
        }
    }

    fn stream_key(&self) -> String {
        self.keys.events_key("stream")
    }

    /// The revocation index: every live deny-list entry and mark, scored by
    /// its expiry, so a mirror loads what exists, never the whole keyspace.
    fn index_key(&self) -> String {
        self.keys.events_key("revocations")
    }

    /// Set once the entries written before the index existed were indexed.
    fn indexed_marker_key(&self) -> String {
        self.keys.events_key("revocations:indexed")
    }

    /// Records a revocation and publishes it; returns the event id. `now` is
    /// the emitting instant (unix s).
    pub async fn revoke(&self, revocation: &Revocation, now: i64) -> Result<String, EventError> {
        let ids_ok = match revocation {
            Revocation::Token { jti: id, .. } | Revocation::Session { sid: id, .. } => valid_id(id),
            _ => true,
        };
        if !ids_ok {
            return Err(EventError::Malformed(
                "revocation id must be 1-128 of [A-Za-z0-9-]".to_owned(),
            ));
        }
        let life = i64::try_from(self.settings.max_token_life.as_secs()).unwrap_or(i64::MAX);
        let (mode, value, ttl) = match revocation {
            Revocation::Token { expires_at, .. } | Revocation::Session { expires_at, .. } => {
                ("deny", "1".to_owned(), expires_at - now)
            }
            Revocation::User { before, .. } | Revocation::Tenant { before, .. } => {
                ("mark", before.to_string(), before + life - now)
            }
        };
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            kind: revocation.kind().to_owned(),
            tenant: revocation.tenant(),
            at: now,
            payload: serde_json::to_value(revocation)
                .map_err(|e| EventError::Malformed(e.to_string()))?,
        };
        let member = revocation.key();
        let (deny, stream, index) = (
            self.keys.events_key(&member),
            self.stream_key(),
            self.index_key(),
        );
        let fields = envelope_fields(&envelope);
        let script = self.revoke.clone();
        let max_len = self.settings.max_len;
        let id: String = self
            .redis
            .run(|mut conn| async move {
                let mut call = script.key(&deny);
                call.key(&stream)
                    .key(&index)
                    .arg(mode)
                    .arg(&value)
                    .arg(ttl.max(1))
                    .arg(max_len)
                    .arg(now)
                    .arg(&member);
                for field in &fields {
                    call.arg(field);
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        metrics::counter!("gatehouse_revocations_total", "kind" => revocation.kind()).increment(1);
        Ok(id)
    }

    /// Appends one event (not a revocation: those go through
    /// [`EventStream::revoke`] with their deny-list entry). Returns its id.
    pub async fn publish(&self, envelope: &Envelope) -> Result<String, EventError> {
        let stream = self.stream_key();
        let fields = envelope_fields(envelope);
        let max_len = self.settings.max_len;
        let id: String = self
            .redis
            .run(|mut conn| async move {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(max_len)
                    .arg("*");
                for field in &fields {
                    cmd.arg(field);
                }
                cmd.query_async(&mut conn).await
            })
            .await?;
        Ok(id)
    }

    /// Every live revocation, for filling a mirror: read from the index in
    /// pages of [`LOAD_PAGE`], each page one round trip under the pool's own
    /// deadline, so the cost follows the number of revocations, not the size
    /// of the keyspace. Entries written before the index existed are indexed
    /// once first ([`EventStream::index_legacy_entries`]).
    pub async fn load_revocations(&self, now: i64) -> Result<Vec<Revocation>, EventError> {
        self.index_legacy_entries(now).await?;
        let index = self.index_key();
        let prefix = self.keys.events_key("");
        let mut names = Vec::new();
        let mut offset = 0usize;
        loop {
            let key = index.clone();
            let page: Vec<String> = self
                .redis
                .run(|mut conn| async move {
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(format!("({now}"))
                        .arg("+inf")
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(offset)
                        .arg(LOAD_PAGE)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let full = page.len() == LOAD_PAGE;
            offset += page.len();
            names.extend(page.into_iter().map(|member| format!("{prefix}{member}")));
            if !full {
                break;
            }
        }
        metrics::gauge!("gatehouse_revocation_index_entries")
            .set(f64::from(u32::try_from(names.len()).unwrap_or(u32::MAX)));
        self.read_entries(&names, now).await
    }

    /// Deny-list entries written by a build without the index are found once
    /// with `SCAN`, a page per round trip (each under its own deadline), and
    /// added to the index; a marker key records that it was done, so later
    /// starts never scan.
    async fn index_legacy_entries(&self, now: i64) -> Result<(), EventError> {
        let marker = self.indexed_marker_key();
        let done: bool = self
            .redis
            .run(|mut conn| async move {
                redis::cmd("EXISTS")
                    .arg(&marker)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map(|n| n == 1)
            })
            .await?;
        if done {
            return Ok(());
        }
        let prefix = self.keys.events_key("");
        for pattern in [self.keys.events_key("deny:*"), self.keys.events_key("rb:*")] {
            let mut cursor: u64 = 0;
            loop {
                let pattern = pattern.clone();
                let (next, batch): (u64, Vec<String>) = self
                    .redis
                    .run(|mut conn| async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(LOAD_PAGE)
                            .query_async(&mut conn)
                            .await
                    })
                    .await?;
                if !batch.is_empty() {
                    let (index, keys) = (self.index_key(), batch);
                    let prefix = prefix.clone();
                    self.redis
                        .run(|mut conn| async move {
                            let ttls: Vec<i64> = keys
                                .iter()
                                .fold(&mut redis::pipe(), |p, k| p.ttl(k))
                                .query_async(&mut conn)
                                .await?;
                            let mut pipe = redis::pipe();
                            for (key, ttl) in keys.iter().zip(ttls) {
                                if let (Some(member), true) = (key.strip_prefix(&prefix), ttl > 0) {
                                    pipe.zadd(&index, member, now + ttl).ignore();
                                }
                            }
                            pipe.query_async::<()>(&mut conn).await
                        })
                        .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let marker = self.indexed_marker_key();
        self.redis
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&marker)
                    .arg(now)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Reads the named entries (GET + TTL, one pipelined round trip per
    /// [`LOAD_PAGE`] keys) into revocations; entries gone meanwhile are skipped.
    async fn read_entries(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<Vec<Revocation>, EventError> {
        let prefix = self.keys.events_key("");
        let mut out = Vec::new();
        let mut answers: Vec<Option<String>> = Vec::with_capacity(names.len() * 2);
        for chunk in names.chunks(LOAD_PAGE) {
            let keys = chunk.to_vec();
            let batch: Vec<Option<String>> = self
                .redis
                .run(|mut conn| async move {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.get(key).ttl(key);
                    }
                    pipe.query_async(&mut conn).await
                })
                .await?;
            answers.extend(batch);
        }
        for (name, answer) in names.iter().zip(answers.chunks(2)) {
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let parts: Vec<&str> = rest.split(':').collect();
            let number = |i: usize| answer.get(i)?.as_deref()?.parse::<i64>().ok();
            let (value, ttl) = (number(0), number(1).unwrap_or(0));
            if value.is_none() || ttl <= 0 {
                continue; // expired between the index read and this one
            }
            let expires_at = now + ttl;
            let parse = |s: &str| Uuid::try_parse(s).ok();
            let revocation = match parts.as_slice() {
                ["deny", "jti", jti] => Some(Revocation::Token {
                    jti: (*jti).to_owned(),
                    expires_at,
                }),
                ["deny", "sid", sid] => Some(Revocation::Session {
                    sid: (*sid).to_owned(),
                    expires_at,
                }),
                ["rb", "user", t, u] => match (parse(t), parse(u), value) {
                    (Some(tenant_id), Some(user_id), Some(before)) => Some(Revocation::User {
                        tenant_id,
                        user_id,
                        before,
                    }),
                    _ => None,
                },
                ["rb", "tenant", t] => match (parse(t), value) {
                    (Some(tenant_id), Some(before)) => {
                        Some(Revocation::Tenant { tenant_id, before })
                    }
                    _ => None,
                },
                _ => None,
            };
            out.extend(revocation);
        }
        Ok(out)
    }

    /// The id of the newest entry (`0-0` when empty): where a new tailer starts.
    pub async fn last_id(&self) -> Result<String, EventError> {
        let stream = &self.stream_key();
        let newest: Vec<(String, Vec<(String, String)>)> = self
            .redis
            .run_idempotent(|mut conn| async move {
                redis::cmd("XREVRANGE")
                    .arg(stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(newest
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }

    /// Before (re)reading from `last`: if the stream was trimmed past it,
    /// reloads `mirror` from the deny list and moves `last` to the newest
    /// entry. Returns whether it reloaded.
    pub async fn resume(
        &self,
        mirror: &RevocationMirror,
        last: &mut String,
        now: i64,
    ) -> Result<bool, EventError> {
        if !self.trimmed_past(last).await? {
            return Ok(false);
        }
        let newest = self.last_id().await?;
        mirror.replace(&self.load_revocations(now).await?);
        *last = newest;
        metrics::counter!("gatehouse_revocation_mirror_reloads_total", "reason" => "trimmed")
            .increment(1);
        tracing::warn!(
            "event stream trimmed past our position; mirror reloaded from the deny list"
        );
        Ok(true)
    }

    /// Whether entries after `last` may have been trimmed away (the tailer
    /// could have missed them). Trimming removes the oldest entries first,
    /// so if our last entry is still in the stream nothing after it is gone;
    /// if it is gone, reload (conservative). From an empty start (`0-0`),
    /// entries were lost iff more were ever added than remain.
    async fn trimmed_past(&self, last: &str) -> Result<bool, EventError> {
        let stream = self.stream_key();
        if last != "0-0" {
            let (key, id) = (&stream, last);
            let ours: Vec<(String, Vec<(String, String)>)> = self
                .redis
                .run_idempotent(|mut conn| async move {
                    redis::cmd("XRANGE")
                        .arg(key)
                        .arg(id)
                        .arg(id)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            return Ok(ours.is_empty());
        }
        let info: Result<RedisValue, _> = self
            .redis
            .run(|mut conn| async move {
                redis::cmd("XINFO")
                    .arg("STREAM")
                    .arg(&stream)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        let Ok(info) = info else { return Ok(false) }; // no stream yet: nothing trimmed
        let number = |name: &str| info_int(&info, name).unwrap_or(0);
        Ok(number("entries-added") > number("length"))
    }
}

/// How long an event took from `XADD` to this reader: the stream id's
/// millisecond part against our clock (`gatehouse_event_stream_lag_seconds`).
fn record_lag(id: &str) {
    let Some(added_ms) = id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()) else {
        return;
    };
    // Against the real clock on purpose: the stream id is Redis's wall
    // clock, and the lag is a measurement, not a decision.
    let now_ms = gatehouse_core::Clock::unix_millis(&gatehouse_core::SystemClock);
    #[allow(clippy::cast_precision_loss, reason = "a lag in ms, far below 2^52")]
    metrics::histogram!("gatehouse_event_stream_lag_seconds")
        .record(now_ms.saturating_sub(added_ms) as f64 / 1000.0);
}

/// An integer field of an `XINFO` reply (RESP2 flat array or RESP3 map).
fn info_int(info: &RedisValue, name: &str) -> Option<i64> {
    let is_name = |v: &RedisValue| match v {
        RedisValue::BulkString(bytes) => bytes.as_slice() == name.as_bytes(),
        RedisValue::SimpleString(s) => s == name,
        _ => false,
    };
    let as_int = |v: &RedisValue| match v {
        RedisValue::Int(n) => Some(*n),
        _ => None,
    };
    match info {
        RedisValue::Array(items) => items
            .chunks(2)
            .find(|pair| is_name(&pair[0]))
            .and_then(|pair| pair.get(1).and_then(as_int)),
        RedisValue::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| is_name(k))
            .and_then(|(_, v)| as_int(v)),
        _ => None,
    }
}

fn envelope_fields(envelope: &Envelope) -> Vec<String> {
    vec![
        "v".into(),
        envelope.v.to_string(),
        "kind".into(),
        envelope.kind.clone(),
        "tenant".into(),
        envelope.tenant.map(|t| t.to_string()).unwrap_or_default(),
        "at".into(),
        envelope.at.to_string(),
        "payload".into(),
        envelope.payload.to_string(),
    ]
}

fn parse_envelope(fields: &[(String, String)]) -> Result<Envelope, EventError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let malformed = |what: &str| EventError::Malformed(what.to_owned());
    Ok(Envelope {
        v: get("v")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| malformed("v"))?,
        kind: get("kind").ok_or_else(|| malformed("kind"))?.to_owned(),
        tenant: get("tenant").and_then(|t| Uuid::try_parse(t).ok()),
        at: get("at")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| malformed("at"))?,
        payload: serde_json::from_str(get("payload").unwrap_or("null"))
            .map_err(|_| malformed("payload"))?,
    })
}

/// Stops the tailer when dropped… or explicitly.
#[derive(Debug)]
pub struct TailerHandle(tokio::task::JoinHandle<()>);

impl TailerHandle {
    /// Stops the tailer.
    pub fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for TailerHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Entries = Vec<(String, Vec<(String, Vec<(String, String)>)>)>;

/// A reader of the stream's other kinds (cache invalidation, routing).
pub trait EventConsumer: Send + Sync {
    /// One event, in stream order. Must be idempotent: after a crash the
    /// relay may publish an event twice.
    fn apply(&self, envelope: &Envelope);
    /// Events may have been lost (the stream was trimmed past our position,
    /// or an event could not be read): drop everything derived from them.
    fn reset(&self);
}

/// Fills `mirror` from the deny list, then tails the stream into it (and
/// into `consumers`) for as long as the handle lives. Reconnects with
/// backoff, resuming from the last id; when the stream was trimmed past it,
/// reloads the mirror from the deny list and resets every consumer.
pub async fn spawn_tailer(
    stream: EventStream,
    mirror: Arc<RevocationMirror>,
    consumers: Vec<Arc<dyn EventConsumer>>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
) -> Result<TailerHandle, EventError> {
    let mut last = stream.last_id().await?;
    mirror.replace(&stream.load_revocations(clock()).await?);
    let handle = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            // Before every (re)connect, including the first: if the stream
            // was trimmed past our position, what we missed is unknowable, so
            // reload the mirror and reset every consumer.
            match stream.resume(&mirror, &mut last, clock()).await {
                Ok(reloaded) => {
                    backoff = Duration::from_millis(100);
                    if reloaded {
                        for consumer in &consumers {
                            consumer.reset();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "checking the event stream position failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if let Err(e) = tail(&stream, &mirror, &consumers, &mut last, clock.as_ref()).await {
                metrics::counter!("gatehouse_event_stream_reconnects_total").increment(1);
                tracing::warn!(error = %e, last_id = %last, "event stream connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    });
    Ok(TailerHandle(handle))
}

/// How often (unix s) the tailer drops mirror entries that can no longer
/// match a live token, so the mirror stays as small as the deny list.
const PURGE_EVERY_S: i64 = 30;

/// Reads until the connection fails. Between reads (at least every `block`),
/// purges entries whose tokens have all expired.
async fn tail(
    stream: &EventStream,
    mirror: &RevocationMirror,
    consumers: &[Arc<dyn EventConsumer>],
    last: &mut String,
    clock: &(dyn Fn() -> i64 + Send + Sync),
) -> Result<(), EventError> {
    let mut conn = stream.redis.dedicated().await?;
    let key = stream.stream_key();
    let block_ms = u64::try_from(stream.settings.block.as_millis()).unwrap_or(5000);
    let max_life = i64::try_from(stream.settings.max_token_life.as_secs()).unwrap_or(i64::MAX);
    let mut purged_at = i64::MIN;
    loop {
        let now = clock();
        if now.saturating_sub(purged_at) >= PURGE_EVERY_S {
            mirror.purge(now, now.saturating_sub(max_life));
            purged_at = now;
        }
        let reply: Option<Entries> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&key)
            .arg(last.as_str())
            .query_async(&mut conn)
            .await?;
        // An event this build cannot read might be a revocation: rather than
        // skip it (failing open), reload the mirror from the deny list, which
        // holds every revocation the stream ever carried.
        let mut reload = false;
        for (_, entries) in reply.unwrap_or_default() {
            for (id, fields) in entries {
                match parse_envelope(&fields) {
                    Ok(envelope) if envelope.kind.starts_with("revoke.") => {
                        let readable = (envelope.v <= ENVELOPE_VERSION)
                            .then(|| serde_json::from_value::<Revocation>(envelope.payload).ok())
                            .flatten();
                        if let Some(revocation) = readable {
                            mirror.apply(&revocation);
                        } else {
                            tracing::warn!(%id, v = envelope.v, "unreadable revocation event; reloading the mirror");
                            reload = true;
                        }
                    }
                    Ok(envelope) => {
                        record_lag(&id);
                        for consumer in consumers {
                            consumer.apply(&envelope);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "malformed event; reloading the mirror");
                        reload = true;
                    }
                }
                *last = id;
            }
        }
        if reload {
            for consumer in consumers {
                consumer.reset();
            }
            mirror.replace(&stream.load_revocations(clock()).await?);
            metrics::counter!("gatehouse_revocation_mirror_reloads_total", "reason" => "unreadable_event")
                .increment(1);
        }
        metrics::gauge!("gatehouse_revocation_mirror_entries")
            .set(f64::from(u32::try_from(mirror.len()).unwrap_or(u32::MAX)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_through_stream_fields() {
        let envelope = Envelope {
            v: 1,
            kind: "revoke.user".into(),
            tenant: Some(Uuid::nil()),
            at: 5,
            payload: serde_json::json!({"a": 1}),
        };
        let fields = envelope_fields(&envelope);
        let pairs: Vec<(String, String)> = fields
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        assert_eq!(parse_envelope(&pairs).unwrap(), envelope);
    }
}
