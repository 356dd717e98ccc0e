//! The outbox relay and the cache-invalidation consumer.
//!
//! **Relay: leader-free.** Every instance runs one. Each pass locks a batch
//! of unpublished rows with `FOR UPDATE SKIP LOCKED`, raises the L2 data
//! version of each tenant named, appends the events to the stream, and marks
//! the rows published in the same transaction. Concurrent relays take
//! disjoint rows, so nothing is published twice in normal operation; a crash
//! between the append and the commit publishes the batch again, which
//! consumers tolerate (raising a version twice, evicting twice, change
//! nothing). We chose this over a Redis-lease leader because it has no
//! failover gap (a dead leader's lease must expire before anyone relays) and
//! the instance that made a change publishes it itself at once ([`Relay::kick`]),
//! which is the shortest path from commit to every other instance. A row
//! whose publication failed (Redis down between commit and publish) stays
//! unpublished and goes out on a later pass (every [`RelaySettings::poll`]).
//!
//! **Consumer**: [`Invalidation`] applies each event to this instance's
//! caches: data-version changes raise the tenant's version (every entry keyed
//! by an older one becomes unreachable), client changes evict the verified
//! client. When the stream lost our position it clears every L1 tier.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_events::{ENVELOPE_VERSION, Envelope, EventConsumer, EventStream};
use gatehouse_store::StoreError;
use gatehouse_store::outbox::{self, OutboxRow};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::clients::ServiceClients;
use crate::directory::Directory;

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// How often it looks for rows without being kicked (rows left behind by
    /// a failed publish, or by another process such as the CLI).
    pub poll: Duration,
    /// Rows per pass.
    pub batch: i64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            batch: 256,
        }
    }
}

/// Publishes outbox rows to the event stream.
pub struct Relay {
    db: PgPool,
    stream: EventStream,
    directory: Arc<Directory>,
    wake: Notify,
    settings: RelaySettings,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

/// Why a relay pass failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis.
    #[error(transparent)]
    Stream(#[from] gatehouse_events::EventError),
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl Relay {
    /// A relay over `db` and `stream`.
    #[must_use]
    pub fn new(
        db: PgPool,
        stream: EventStream,
        directory: Arc<Directory>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            db,
            stream,
            directory,
            wake: Notify::new(),
            settings,
        }
    }

    /// A change just committed here: publish now rather than at the next poll.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Publishes every unpublished row (batch after batch). Returns how many.
    pub async fn drain(&self) -> Result<u64, RelayError> {
        let mut total = 0;
        loop {
            let published = self.pass().await?;
            total += published;
            if published < u64::try_from(self.settings.batch).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }

    async fn pass(&self) -> Result<u64, RelayError> {
        let mut tx = self.db.begin().await?;
        let rows = outbox::claim(&mut tx, self.settings.batch).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        for row in &rows {
            // Side by side: instances on the stream take the version from the
            // event itself; the L2 version serves those that missed it.
            let raise = async {
                if let (Some(tenant), Some(version)) = (row.tenant_id, data_version(row)) {
                    self.directory.raise_l2_version(tenant, version).await;
                }
            };
            let event = envelope(row);
            let ((), published) = tokio::join!(raise, self.stream.publish(&event));
            published?;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        outbox::mark_published(&mut tx, &ids).await?;
        tx.commit().await?;
        let count = u64::try_from(rows.len()).unwrap_or(0);
        metrics::counter!("gatehouse_outbox_published_total").increment(count);
        Ok(count)
    }

    /// Runs until the handle is dropped: drains on every kick, every
    /// `NOTIFY gatehouse_outbox` (any process's outbox insert: the CLI, a
    /// trigger, another instance) and every poll; on failure backs off
    /// (100 ms doubling to 5 s) and tries again.
    #[must_use]
    pub fn spawn(self: &Arc<Self>) -> RelayHandle {
        let listener = {
            let relay = Arc::clone(self);
            tokio::spawn(async move { relay.listen().await })
        };
        let relay = Arc::clone(self);
        RelayHandle(
            listener,
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    match relay.drain().await {
                        Ok(_) => {
                            backoff = Duration::from_millis(100);
                            let _ =
                                tokio::time::timeout(relay.settings.poll, relay.wake.notified())
                                    .await;
                        }
                        Err(e) => {
                            metrics::counter!("gatehouse_outbox_relay_failures_total").increment(1);
                            tracing::warn!(error = %e, "outbox relay pass failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }),
        )
    }

    /// Kicks the relay on every outbox notification; reconnects on failure
    /// (the poll covers the gap).
    async fn listen(&self) {
        loop {
            let result = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.db).await?;
                listener.listen("gatehouse_outbox").await?;
                loop {
                    listener.recv().await?;
                    self.kick();
                }
            }
            .await;
            let e: sqlx::Error = match result {
                Ok(()) => continue,
                Err(e) => e,
            };
            tracing::debug!(error = %e, "outbox listener lost; relying on the poll until it is back");
            tokio::time::sleep(self.settings.poll).await;
        }
    }
}

/// Stops the relay (and its listener) when dropped.
#[derive(Debug)]
pub struct RelayHandle(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>);

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.0.abort();
        self.1.abort();
    }
}

fn data_version(row: &OutboxRow) -> Option<i64> {
    row.payload
        .get("data_version")
        .and_then(serde_json::Value::as_i64)
}

fn envelope(row: &OutboxRow) -> Envelope {
    let mut payload = row.payload.clone();
    if let serde_json::Value::Object(map) = &mut payload {
        map.insert("outbox_id".into(), row.id.into());
        map.insert("schema_version".into(), row.schema_version.into());
    }
    Envelope {
        v: ENVELOPE_VERSION,
        kind: row.kind.clone(),
        tenant: row.tenant_id,
        at: row.created_unix,
        payload,
    }
}

/// Applies change events to this instance's caches (and its routing mirror).
pub struct Invalidation {
    directory: Arc<Directory>,
    clients: Arc<ServiceClients>,
    routing: Option<Arc<crate::routing::Routing>>,
}

impl Invalidation {
    /// A consumer for `directory` and `clients`; `routing` (when given) mirrors
    /// each service a `routing.changed` event names.
    #[must_use]
    pub fn new(
        directory: Arc<Directory>,
        clients: Arc<ServiceClients>,
        routing: Option<Arc<crate::routing::Routing>>,
    ) -> Self {
        Self {
            directory,
            clients,
            routing,
        }
    }
}

impl EventConsumer for Invalidation {
    fn apply(&self, envelope: &Envelope) {
        let version = envelope
            .payload
            .get("data_version")
            .and_then(serde_json::Value::as_i64);
        match envelope.kind.as_str() {
            "client.changed" => {
                if let Some(id) = envelope.payload.get("client_id").and_then(|v| v.as_str()) {
                    self.clients.forget(id);
                }
            }
            "routing.changed" => {
                if let (Some(routing), Some(service)) = (
                    &self.routing,
                    envelope.payload.get("service").and_then(|v| v.as_str()),
                ) {
                    routing.mirror_soon(service.to_owned());
                }
            }
            kind if kind.starts_with("revoke.") => {}
            // Every tenant-scoped change (authz, users, bootstrap, routing).
            _ => {
                if let Some(tenant) = envelope.tenant {
                    let slugs_changed = matches!(
                        envelope.kind.as_str(),
                        "tenant.changed" | "tenant.data_changed"
                    );
                    self.directory
                        .tenant_changed(tenant, version, slugs_changed);
                } else {
                    return;
                }
            }
        }
        metrics::counter!("gatehouse_cache_invalidations_total", "kind" => kind_label(&envelope.kind))
            .increment(1);
    }

    fn reset(&self) {
        tracing::warn!("event stream position lost; clearing every L1 cache");
        self.directory.clear();
        self.clients.forget_all();
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "tenant.authz_changed" => "tenant.authz_changed",
        "tenant.data_changed" => "tenant.data_changed",
        "user.changed" => "user.changed",
        "client.changed" => "client.changed",
        "tenant.changed" => "tenant.changed",
        "routing.changed" => "routing.changed",
        _ => "other",
    }
}
