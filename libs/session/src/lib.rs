//! Server-side sessions kept in Redis.
//!
//! A session is identified by an opaque token (`gs1_<tenant>_<256 random bits>`)
//! that only the client holds; Redis stores the record under the token's SHA-256,
//! so a dump of Redis cannot be replayed as cookies. The tenant id inside the token
//! is not secret: it selects the Redis hash tag, so every key of one tenant lives
//! in one cluster slot and the Lua scripts can touch them atomically.
//!
//! Expiry is decided with the caller's [`Clock`](gatehouse_core::Clock) time, in
//! the scripts, so tests move a clock instead of sleeping; Redis TTLs follow the
//! same deadlines and clean up what nobody reads again.
//!
//! Architecture invariant: no HTTP here; the gateway maps [`SessionError`] to
//! responses and owns cookies.

mod handshake;
mod refresh;
mod store;
mod token;

pub use handshake::{HandshakeGrant, Handshakes, ISSUE_WINDOW, ISSUES_PER_WINDOW};
pub use refresh::{RefreshKey, RefreshLimits, RefreshStore, RefreshToken, Rotation};
pub use store::{EndedSessions, NewSession, Session, SessionConfig, SessionError, SessionStore};
pub use token::{SessionId, SessionToken};
