//! Signing in and being signed in: password checks, sessions, cookies, CSRF,
//! and the extractors handlers use to know who is calling.

pub mod client;
pub mod cookies;
pub mod csrf;
pub mod failures;
pub mod gate;
pub mod return_to;
