//! The event stream: one Redis Stream every gateway instance tails, carrying
//! typed, versioned envelopes; and its first consumer, the revocation mirror.
//!
//! Revocations are written by one Lua script that sets the deny-list entry
//! (or the revoked-before mark) and appends the event together, in the
//! stream's hash slot (`{ev}`). Each instance keeps an in-process
//! [`RevocationMirror`], filled from the deny list at start and kept current
//! by tailing the stream with `XREAD BLOCK` from its last id on a dedicated
//! connection, so checking a token costs no Redis round trip. On reconnect it
//! resumes from its last id; if the stream was trimmed past it (events lost
//! to the length bound), it reloads the mirror from the deny list (SCAN) and
//! counts that in `gatehouse_revocation_mirror_reloads_total`.
//!
//! Later producers (policy and routing changes) append other `kind`s to the
//! same stream; consumers ignore kinds they do not know.

mod mirror;
mod stream;

pub use mirror::{RevocationMirror, TokenFacts};
pub use stream::{
    Envelope, EventConsumer, EventError, EventStream, LOAD_PAGE, Revocation, StreamSettings,
    TailerHandle, spawn_tailer,
};

/// Version of the envelope layout (`v` field); bumped on incompatible change.
pub const ENVELOPE_VERSION: u16 = 1;
