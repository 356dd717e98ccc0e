//! The Gatehouse gateway: the HTTP server and the operator commands behind the
//! `gatehouse` binary.
//!
//! Architecture invariant: this crate (with `services/demo-upstream`) is the only
//! place that knows about axum and HTTP. Libraries below `libs/` expose plain
//! types and errors; handlers here translate them into responses.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod listener;
pub mod middleware;
pub mod pages;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod state;

pub use app::app;
pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use server::{Application, StartupError};
pub use state::AppState;
