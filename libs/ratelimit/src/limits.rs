//! The limits, per tenant, with defaults; stored in `tenants.settings.login_throttle`
//! and read at each login, so a change takes effect without a restart.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// "At most `max` in any `window_s` seconds."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Most events allowed in the window.
    pub max: u32,
    /// Window length in seconds.
    pub window_s: u64,
}

impl Window {
    /// The window as a duration.
    #[must_use]
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_s.max(1))
    }
}

/// Username limit: a hard ceiling per window plus exponential backoff once
/// the free failures are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsernameLimit {
    /// Most failures per window.
    pub max: u32,
    /// Window length in seconds.
    pub window_s: u64,
    /// Failures allowed before the backoff starts.
    pub free_failures: u32,
    /// First backoff step in milliseconds (doubles with each further failure).
    pub backoff_base_ms: u64,
    /// Longest backoff in milliseconds.
    pub backoff_cap_ms: u64,
}

impl Default for UsernameLimit {
    fn default() -> Self {
        Self {
            max: 20,
            window_s: 3600,
            free_failures: 5,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 15 * 60 * 1_000,
        }
    }
}

/// All login limits of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLimits {
    /// Failures per (username, client IP) pair.
    pub pair: Window,
    /// Failures per username, from anywhere.
    pub username: UsernameLimit,
    /// Attempts per client IP (IPv6 grouped by /64), across tenants.
    pub ip: Window,
    /// Attempts per tenant: a ceiling against floods.
    pub tenant: Window,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            pair: Window {
                max: 5,
                window_s: 15 * 60,
            },
            username: UsernameLimit::default(),
            ip: Window {
                max: 100,
                window_s: 5 * 60,
            },
            tenant: Window {
                max: 3_000,
                window_s: 60,
            },
        }
    }
}

/// A limit that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("login_throttle.{field}: {message}")]
pub struct LimitsError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub message: &'static str,
}

impl LoginLimits {
    /// Parses a tenant's `login_throttle` settings (missing fields take the
    /// defaults) and checks they make sense.
    pub fn from_settings(settings: Option<&serde_json::Value>) -> Result<Self, LimitsError> {
        let limits: Self = match settings {
            None | Some(serde_json::Value::Null) => Self::default(),
            Some(value) => serde_json::from_value(value.clone()).map_err(|_| LimitsError {
                field: "*",
                message: "is not a valid limits object",
            })?,
        };
        limits.validate()?;
        Ok(limits)
    }

    /// Checks the limits can be enforced.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let checks = [
            (self.pair.max == 0, "pair.max", "must be at least 1"),
            (self.ip.max == 0, "ip.max", "must be at least 1"),
            (self.tenant.max == 0, "tenant.max", "must be at least 1"),
            (self.username.max == 0, "username.max", "must be at least 1"),
            (
                self.pair.max > self.username.max,
                "pair.max",
                "must not exceed username.max, or one IP could lock the user out",
            ),
            (
                self.username.backoff_cap_ms > 24 * 3_600_000,
                "username.backoff_cap_ms",
                "must be at most a day (lockouts are never permanent)",
            ),
            (
                [
                    self.pair.window_s,
                    self.ip.window_s,
                    self.tenant.window_s,
                    self.username.window_s,
                ]
                .iter()
                .any(|w| *w == 0 || *w > 24 * 3600),
                "*.window_s",
                "must be between 1 s and one day",
            ),
            (
                self.username.free_failures == 0,
                "username.free_failures",
                "must be at least 1",
            ),
            (
                self.username.backoff_base_ms == 0,
                "username.backoff_base_ms",
                "must be at least 1",
            ),
        ];
        for (bad, field, message) in checks {
            if bad {
                return Err(LimitsError { field, message });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_mean_defaults_and_partial_ones_override() {
        assert_eq!(
            LoginLimits::from_settings(None).unwrap(),
            LoginLimits::default()
        );
        let partial = serde_json::json!({ "pair": { "max": 3, "window_s": 60 } });
        let limits = LoginLimits::from_settings(Some(&partial)).unwrap();
        assert_eq!(limits.pair.max, 3);
        assert_eq!(limits.username, UsernameLimit::default());
    }

    #[test]
    fn nonsense_limits_are_refused_with_the_field_named() {
        let zero = serde_json::json!({ "ip": { "max": 0, "window_s": 60 } });
        assert_eq!(
            LoginLimits::from_settings(Some(&zero)).unwrap_err().field,
            "ip.max"
        );
        let pair_above_user = serde_json::json!({ "pair": { "max": 50, "window_s": 60 } });
        assert_eq!(
            LoginLimits::from_settings(Some(&pair_above_user))
                .unwrap_err()
                .field,
            "pair.max"
        );
        let typo = serde_json::json!({ "pairs": {} });
        assert!(LoginLimits::from_settings(Some(&typo)).is_err());
    }
}
