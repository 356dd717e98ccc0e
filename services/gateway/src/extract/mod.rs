//! What handlers are given about a request: who is calling (admission of
//! the session cookie or Bearer credential), from where, about which tenant,
//! and whether an admin may act on it. Route modules import these, never
//! each other.

pub mod admin;
pub mod client;
pub mod service_client;
pub mod session;
pub mod tenant;
