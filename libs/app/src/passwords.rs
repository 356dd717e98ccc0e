//! argon2 on a bounded blocking pool.
//!
//! Hashing is tens of milliseconds of CPU. Running it on the async workers
//! would let a login flood stall every other request; running it unbounded on
//! `spawn_blocking` would let the flood queue thousands of threads. A semaphore
//! caps concurrent hashes (default: half the cores) and a caller that cannot get a
//! permit in time gets "busy" (503) instead of waiting forever.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{PasswordError, PasswordHasher, Verification};
use tokio::sync::Semaphore;

/// Why a password check did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum PasswordPoolError {
    /// All hashing slots stayed busy past the queue timeout.
    #[error("password hashing is saturated")]
    Busy,
    /// The hashing task failed (a bug) or the stored hash is unreadable.
    #[error("password check failed: {0}")]
    Failed(String),
}

impl From<PasswordError> for PasswordPoolError {
    fn from(e: PasswordError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Runs argon2 work with bounded concurrency.
#[derive(Debug, Clone)]
pub struct PasswordPool {
    hasher: Arc<PasswordHasher>,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl PasswordPool {
    /// A pool running at most `workers` hashes at once.
    #[must_use]
    pub fn new(hasher: PasswordHasher, workers: usize, queue_timeout: Duration) -> Self {
        Self {
            hasher: Arc::new(hasher),
            permits: Arc::new(Semaphore::new(workers.max(1))),
            queue_timeout,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, PasswordPoolError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PasswordPoolError::Busy)?
            .map_err(|_| PasswordPoolError::Busy)?;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&hasher)
        })
        .await
        .map_err(|e| PasswordPoolError::Failed(e.to_string()))
    }

    /// Checks `password` against `stored`; with `None` (unknown user) spends
    /// the same work on a dummy hash and reports a mismatch.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verification, PasswordPoolError> {
        self.run(move |hasher| {
            if let Some(phc) = stored {
                hasher
                    .verify(&password, &phc)
                    .map_err(PasswordPoolError::from)
            } else {
                hasher.verify_dummy(&password);
                Ok(Verification::Mismatch)
            }
        })
        .await?
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, PasswordPoolError> {
        self.run(move |hasher| hasher.hash(&password).map_err(PasswordPoolError::from))
            .await?
    }
}
