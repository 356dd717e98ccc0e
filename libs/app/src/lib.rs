//! The application layer: what the gateway does, without HTTP.
//!
//! Every way a credential enters goes through [`admission::Admission`], and
//! every session ends through [`revocation::Revocations::end`], so the rules
//! that coordinate several stores ("a token is live when…", "ending sessions
//! also revokes their tokens") are written once. `services/gateway` wires
//! these services once (for `serve` and the CLI), reads requests into their
//! plain inputs and maps their errors to HTTP in one place.
//!
//! Architecture invariant: no axum, no `http` types; errors are this crate's
//! own (`thiserror`), never HTTP statuses.

pub mod admission;
pub mod app_sessions;
pub mod audit;
pub mod authz;
pub mod authz_admin;
pub mod bootstrap;
pub mod canary;
pub mod clients;
pub mod devices;
pub mod directory;
pub mod login;
pub mod operator;
pub mod outbox;
pub mod passwords;
pub mod refresh;
pub mod revocation;
pub mod routing;
pub mod routing_admin;
pub mod services;
pub mod tokens;

/// Postgres's failures, as every operation here reports them.
pub use gatehouse_store::StoreError;

/// The session store's and Redis's failures, as operations here report them.
pub use gatehouse_redis::RedisError;
pub use gatehouse_session::SessionError;

/// The settings the stores behind this layer are built from (the gateway
/// reads them from its configuration).
pub mod settings {
    pub use gatehouse_redis::RedisSettings;
    pub use gatehouse_session::SessionConfig;
    pub use gatehouse_store::DbSettings;
}

/// Whether Postgres answers (readiness).
pub use gatehouse_store::ping as ping_database;
