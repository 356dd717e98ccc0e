//! HTTP handlers, one module per area, named noun-first (`sessions_list`).

pub mod admin;
pub mod admin_authz;
pub mod admin_routing;
pub mod auth_api;
pub mod authz_api;
pub mod browser;
pub mod health;
pub mod introspect;
pub mod revocations;
pub mod routing;
pub mod verify;
pub mod wellknown;
