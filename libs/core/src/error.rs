//! Error kinds shared by every crate.
//!
//! Each library has its own `thiserror` enum; they all say which [`ErrorKind`]
//! they are so the gateway can answer with the right status and the proxy can
//! tell whether a retry is safe, without knowing every library's error type.

/// What went wrong, in the terms a client or operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input was malformed or violated a rule (4xx, fix the request).
    Invalid,
    /// The thing named does not exist (or the caller may not know it exists).
    NotFound,
    /// The write conflicts with the current state (duplicate, stale version).
    Conflict,
    /// No valid credentials were presented.
    Unauthenticated,
    /// Valid credentials, but not allowed.
    Forbidden,
    /// Too many attempts; retry later.
    Throttled,
    /// A dependency (Postgres, Redis, an upstream) did not answer in time.
    Unavailable,
    /// A bug or an unexpected state on our side.
    Internal,
}

/// Where a fault came from: what a proxy needs to decide whom to blame and
/// whether a retry might help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The client sent something wrong.
    Downstream,
    /// A dependency or upstream service failed.
    Upstream,
    /// Gatehouse itself failed.
    Internal,
}

impl ErrorKind {
    /// Who is at fault for an error of this kind.
    #[must_use]
    pub fn origin(self) -> Origin {
        match self {
            Self::Invalid
            | Self::NotFound
            | Self::Conflict
            | Self::Unauthenticated
            | Self::Forbidden
            | Self::Throttled => Origin::Downstream,
            Self::Unavailable => Origin::Upstream,
            Self::Internal => Origin::Internal,
        }
    }

    /// Whether repeating the same request later may succeed.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_and_outages_are_retryable() {
        let retryable: Vec<_> = [
            ErrorKind::Invalid,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Unauthenticated,
            ErrorKind::Forbidden,
            ErrorKind::Throttled,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ]
        .into_iter()
        .filter(|k| k.is_retryable())
        .collect();
        assert_eq!(
            retryable,
            vec![ErrorKind::Throttled, ErrorKind::Unavailable]
        );
    }

    #[test]
    fn outages_are_blamed_on_upstream() {
        assert_eq!(ErrorKind::Unavailable.origin(), Origin::Upstream);
        assert_eq!(ErrorKind::Invalid.origin(), Origin::Downstream);
        assert_eq!(ErrorKind::Internal.origin(), Origin::Internal);
    }
}
