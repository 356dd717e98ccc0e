//! What handlers are given about a request: who is calling (admission of
//! the session cookie or Bearer credential), from where, about which tenant,
//! whether an admin may act on it, and whether the caller may make an HTTP
//! request (`request_access`, shared by forward auth and the proxy). Route
//! modules import these, never each other.

pub mod admin;
pub mod client;
pub mod request_access;
pub mod service_client;
pub mod session;
pub mod tenant;
