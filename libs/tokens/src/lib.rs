//! Gatehouse access tokens: signing keys (generated, sealed at rest under the
//! key-encryption key, pinned to one algorithm), JWT issue and verify.
//!
//! Architecture invariant: no I/O and no clock — keys arrive as bytes from the
//! store, time arrives as an argument — so every rule here is unit-testable.

pub mod cache;
pub mod jwt;
pub mod keys;

pub use cache::VerifiedCache;
pub use jwt::{AccessClaims, Grantee, IssueError, TokenSettings, Verifier, VerifyError, issue};
pub use keys::{
    GeneratedKey, Kek, KeyError, PublicKey, SigningAlgorithm, SigningKey, generate, new_kid,
};
