//! Shared vocabulary of Gatehouse: identifiers, parsed domain values, password
//! hashing and the error kinds every crate maps its failures onto.
//!
//! Architecture invariant: no I/O and no async here. Everything in this crate is
//! a pure function of its inputs, so every other crate can depend on it freely.

pub mod clock;
pub mod error;
pub mod names;
pub mod password;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorKind, Origin};
pub use names::{NameError, ServiceName, TenantSlug, Username, VersionLabel};
pub use password::{Argon2Cost, PasswordError, PasswordHasher, Verification};
