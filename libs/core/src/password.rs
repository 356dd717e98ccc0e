//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow CPU work: callers in async code must run it on a
//! bounded blocking pool. [`PasswordHasher::verify_dummy`] spends the same work on
//! unknown users as on known ones, so timing does not reveal which usernames exist.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore as _;

/// Why hashing or verification could not run (not "wrong password": that is
/// [`Verification::Mismatch`]).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The configured cost parameters are outside what argon2 accepts.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// The stored hash is not an argon2id PHC string we can read.
    #[error("stored password hash is unreadable: {0}")]
    StoredHash(String),
    /// argon2 failed while hashing.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// argon2id cost parameters. Defaults are OWASP's minimum (m=19 MiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Correct, and the stored hash uses the current parameters.
    Match,
    /// Correct, but hashed with other parameters: store this new hash.
    MatchNeedsRehash(String),
    /// Wrong password.
    Mismatch,
}

/// Hashes and verifies passwords with one set of argon2id parameters.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    cost: Argon2Cost,
    /// A real hash with the current parameters, verified against when the user
    /// does not exist so that both paths cost the same.
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Builds a hasher; computes one dummy hash, so construction costs one hash.
    pub fn new(cost: Argon2Cost) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = Self {
            argon,
            cost,
            dummy_hash: String::new(),
        };
        hasher.dummy_hash = hasher.hash("gatehouse-dummy-password-for-unknown-users")?;
        Ok(hasher)
    }

    /// Hashes a password with a fresh 128-bit random salt into a PHC string.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Checks a password against a stored PHC string, with the parameters the
    /// stored hash names (so old hashes keep working), and says when to rehash.
    pub fn verify(&self, password: &str, stored_phc: &str) -> Result<Verification, PasswordError> {
        let parsed =
            PasswordHash::new(stored_phc).map_err(|e| PasswordError::StoredHash(e.to_string()))?;
        if parsed.algorithm != argon2::ARGON2ID_IDENT {
            return Err(PasswordError::StoredHash(format!(
                "algorithm {} is not argon2id",
                parsed.algorithm
            )));
        }
        match self.argon.verify_password(password.as_bytes(), &parsed) {
            Ok(()) => {}
            Err(argon2::password_hash::Error::Password) => return Ok(Verification::Mismatch),
            Err(e) => return Err(PasswordError::StoredHash(e.to_string())),
        }
        let stored =
            Params::try_from(&parsed).map_err(|e| PasswordError::StoredHash(e.to_string()))?;
        let current = (
            self.cost.memory_kib,
            self.cost.iterations,
            self.cost.parallelism,
        );
        if (stored.m_cost(), stored.t_cost(), stored.p_cost()) == current {
            Ok(Verification::Match)
        } else {
            self.hash(password).map(Verification::MatchNeedsRehash)
        }
    }

    /// Spends the same work as [`Self::verify`] on a hash that never matches;
    /// call it when the username is unknown.
    pub fn verify_dummy(&self, password: &str) {
        // The result is irrelevant: only the time spent matters.
        let _ = self.verify(password, &self.dummy_hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters so unit tests stay fast; production uses the defaults.
    fn cheap() -> Argon2Cost {
        Argon2Cost {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn defaults_meet_owasp_minimum() {
        let c = Argon2Cost::default();
        assert!(c.memory_kib >= 19 * 1024 && c.iterations >= 2 && c.parallelism >= 1);
    }

    #[test]
    fn hash_then_verify_round_trips_and_rejects_wrong_password() {
        let h = PasswordHasher::new(cheap()).unwrap();
        let phc = h.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert_eq!(
            h.verify("correct horse", &phc).unwrap(),
            Verification::Match
        );
        assert_eq!(
            h.verify("wrong horse", &phc).unwrap(),
            Verification::Mismatch
        );
    }

    #[test]
    fn salts_differ_between_hashes_of_one_password() {
        let h = PasswordHasher::new(cheap()).unwrap();
        assert_ne!(h.hash("same").unwrap(), h.hash("same").unwrap());
    }

    #[test]
    fn changed_parameters_ask_for_a_rehash() {
        let old = PasswordHasher::new(cheap()).unwrap();
        let phc = old.hash("pw").unwrap();
        let new = PasswordHasher::new(Argon2Cost {
            iterations: 2,
            ..cheap()
        })
        .unwrap();
        match new.verify("pw", &phc).unwrap() {
            Verification::MatchNeedsRehash(rehashed) => {
                assert!(rehashed.contains("m=256,t=2,p=1"));
                assert_eq!(new.verify("pw", &rehashed).unwrap(), Verification::Match);
            }
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    #[test]
    fn non_argon2id_hashes_are_refused() {
        let h = PasswordHasher::new(cheap()).unwrap();
        let argon2i =
            "$argon2i$v=19$m=256,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(matches!(
            h.verify("pw", argon2i),
            Err(PasswordError::StoredHash(_))
        ));
        assert!(matches!(
            h.verify("pw", "plaintext"),
            Err(PasswordError::StoredHash(_))
        ));
    }
}
