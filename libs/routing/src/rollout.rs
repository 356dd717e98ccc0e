//! Rollout rules and the stable bucket that places a tenant on one side.
//!
//! The encoding (`pin|v2`, `split|v1|v2|3000|salt|t`) is what the Lua scripts
//! read from the service's rollout hash; [`Rule::version_for`] is the same
//! decision as `resolve()` in `lua/route_common.lua`.

use sha1::{Digest as _, Sha1};

/// Buckets a split divides tenants into: a canary share is a count of them
/// (3 000 = 30%), so shares are exact to a hundredth of a percent.
pub const BUCKETS: u16 = 10_000;

/// A tenant's (or a user's) bucket for a split of `service` under `salt`:
/// the first four bytes of SHA-1 over `service|salt|tenant[|user]`, modulo
/// [`BUCKETS`]. Stable across processes, restarts and versions of Gatehouse;
/// a new salt reshuffles who goes first.
#[must_use]
pub fn bucket(service: &str, salt: &str, tenant: &str, user: Option<&str>) -> u16 {
    let mut hasher = Sha1::new();
    hasher.update(service.as_bytes());
    hasher.update(b"|");
    hasher.update(salt.as_bytes());
    hasher.update(b"|");
    hasher.update(tenant.as_bytes());
    if let Some(user) = user {
        hasher.update(b"|");
        hasher.update(user.as_bytes());
    }
    let digest = hasher.finalize();
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    u16::try_from(first % u32::from(BUCKETS)).unwrap_or(0)
}

/// Which version a rule gives a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Always this version.
    Pin {
        /// The version.
        version: String,
    },
    /// Tenants (or their users) in the first `canary_buckets` buckets get
    /// `canary`, the others `stable`.
    Split {
        /// The version most traffic stays on.
        stable: String,
        /// The version being rolled out.
        canary: String,
        /// Buckets (of [`BUCKETS`]) on the canary.
        canary_buckets: u16,
        /// Chooses which tenants go first (changing it reshuffles them).
        salt: String,
        /// Split per user within a tenant rather than per tenant.
        per_user: bool,
    },
}

/// Which side of a split a request fell on (or that there was no split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// A pinned version.
    Pinned,
    /// The stable side of a split.
    Stable,
    /// The canary side of a split.
    Canary,
}

/// Why a rule was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// A version name is not `[A-Za-z0-9][A-Za-z0-9_.-]{0,31}`.
    #[error(
        "version {0:?} must be 1-32 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
    )]
    Version(String),
    /// The salt is not `[A-Za-z0-9_-]{1,64}`.
    #[error("salt must be 1-64 characters of A-Z a-z 0-9 _ -")]
    Salt,
    /// The canary share is above [`BUCKETS`].
    #[error("canary share {0} is above {BUCKETS} buckets (100%)")]
    Share(u32),
    /// A split whose two sides are the same version.
    #[error("a split needs two different versions")]
    SameVersion,
    /// Not a rule this build can read.
    #[error("unreadable rule {0:?}")]
    Unreadable(String),
}

fn check_version(version: &str) -> Result<(), RuleError> {
    let mut chars = version.chars();
    let ok = version.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RuleError::Version(version.chars().take(40).collect()))
    }
}

/// A salt is 1-64 characters of `A-Z a-z 0-9 _ -` (it is part of the
/// encoded rule and of the bucket's hash input).
pub fn check_salt(salt: &str) -> Result<(), RuleError> {
    let ok = (1..=64).contains(&salt.len())
        && salt
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok { Ok(()) } else { Err(RuleError::Salt) }
}

impl Rule {
    /// A checked pin.
    pub fn pin(version: &str) -> Result<Self, RuleError> {
        check_version(version)?;
        Ok(Self::Pin {
            version: version.to_owned(),
        })
    }

    /// A checked split: `canary_buckets` of [`BUCKETS`] go to `canary`.
    pub fn split(
        stable: &str,
        canary: &str,
        canary_buckets: u32,
        salt: &str,
        per_user: bool,
    ) -> Result<Self, RuleError> {
        check_version(stable)?;
        check_version(canary)?;
        if stable == canary {
            return Err(RuleError::SameVersion);
        }
        let canary_buckets = u16::try_from(canary_buckets)
            .ok()
            .filter(|b| *b <= BUCKETS)
            .ok_or(RuleError::Share(canary_buckets))?;
        check_salt(salt)?;
        Ok(Self::Split {
            stable: stable.to_owned(),
            canary: canary.to_owned(),
            canary_buckets,
            salt: salt.to_owned(),
            per_user,
        })
    }

    /// The form the Lua scripts read.
    #[must_use]
    pub fn encode(&self) -> String {
        match self {
            Self::Pin { version } => format!("pin|{version}"),
            Self::Split {
                stable,
                canary,
                canary_buckets,
                salt,
                per_user,
            } => format!(
                "split|{stable}|{canary}|{canary_buckets}|{salt}|{}",
                if *per_user { 'u' } else { 't' }
            ),
        }
    }

    /// Reads [`Rule::encode`]'s form back (checked).
    pub fn decode(text: &str) -> Result<Self, RuleError> {
        let unreadable = || RuleError::Unreadable(text.chars().take(80).collect());
        let fields: Vec<&str> = text.split('|').collect();
        match fields.as_slice() {
            ["pin", version] => Self::pin(version),
            ["split", stable, canary, buckets, salt, who @ ("t" | "u")] => {
                let buckets = buckets.parse::<u32>().map_err(|_| unreadable())?;
                Self::split(stable, canary, buckets, salt, *who == "u")
            }
            _ => Err(unreadable()),
        }
    }

    /// The version this rule gives `tenant` (and `user`) of `service`.
    #[must_use]
    pub fn version_for(&self, service: &str, tenant: &str, user: Option<&str>) -> (&str, Side) {
        match self {
            Self::Pin { version } => (version, Side::Pinned),
            Self::Split {
                stable,
                canary,
                canary_buckets,
                salt,
                per_user,
            } => {
                let user = per_user.then(|| user.unwrap_or(""));
                if bucket(service, salt, tenant, user) < *canary_buckets {
                    (canary, Side::Canary)
                } else {
                    (stable, Side::Stable)
                }
            }
        }
    }

    /// Every version this rule can send traffic to.
    #[must_use]
    pub fn versions(&self) -> Vec<&str> {
        match self {
            Self::Pin { version } => vec![version],
            Self::Split { stable, canary, .. } => vec![stable, canary],
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_precision_loss, reason = "test")]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_and_bad_ones_are_refused_with_the_reason() {
        let split = Rule::split("v1", "v2", 3000, "s1", false).unwrap();
        assert_eq!(split.encode(), "split|v1|v2|3000|s1|t");
        assert_eq!(Rule::decode(&split.encode()).unwrap(), split);
        let pin = Rule::pin("v2.1-rc_1").unwrap();
        assert_eq!(Rule::decode("pin|v2.1-rc_1").unwrap(), pin);
        assert_eq!(
            Rule::pin("v|2").unwrap_err(),
            RuleError::Version("v|2".into())
        );
        assert!(Rule::pin("").is_err());
        assert!(Rule::pin(&"v".repeat(33)).is_err());
        assert_eq!(
            Rule::split("v1", "v1", 10, "s", false).unwrap_err(),
            RuleError::SameVersion
        );
        assert_eq!(
            Rule::split("v1", "v2", 10_001, "s", false).unwrap_err(),
            RuleError::Share(10_001)
        );
        assert_eq!(
            Rule::split("v1", "v2", 10, "bad salt", false).unwrap_err(),
            RuleError::Salt
        );
        assert!(matches!(
            Rule::decode("split|v1|v2|x|s|t"),
            Err(RuleError::Unreadable(_))
        ));
        assert!(matches!(
            Rule::decode("weird"),
            Err(RuleError::Unreadable(_))
        ));
    }

    /// A tenant on the canary at 10% is still there at 30%: the set only grows.
    #[test]
    fn a_growing_share_only_adds_tenants_and_lands_near_its_percentage() {
        let tenants: Vec<String> = (0..5000).map(|i| format!("tenant-{i}")).collect();
        let on_canary = |buckets: u32| -> Vec<bool> {
            let rule = Rule::split("v1", "v2", buckets, "salt", false).unwrap();
            tenants
                .iter()
                .map(|t| rule.version_for("orders", t, None).1 == Side::Canary)
                .collect()
        };
        let mut previous = on_canary(0);
        assert!(previous.iter().all(|c| !c), "0% is nobody");
        for buckets in [100, 1000, 3000, 5000, 10_000] {
            let now = on_canary(buckets);
            for (before, after) in previous.iter().zip(&now) {
                assert!(
                    !before || *after,
                    "a tenant left the canary as the share grew"
                );
            }
            let share = now.iter().filter(|c| **c).count() as f64 / tenants.len() as f64;
            let want = f64::from(buckets) / f64::from(BUCKETS);
            assert!((share - want).abs() < 0.03, "{buckets}: {share} vs {want}");
            previous = now;
        }
        assert!(previous.iter().all(|c| *c), "100% is everybody");
    }

    #[test]
    fn a_per_user_split_can_divide_one_tenant() {
        let rule = Rule::split("v1", "v2", 5000, "s", true).unwrap();
        let sides: std::collections::HashSet<Side> = (0..200)
            .map(|u| {
                rule.version_for("orders", "acme", Some(&format!("user-{u}")))
                    .1
            })
            .collect();
        assert_eq!(sides.len(), 2);
        let per_tenant = Rule::split("v1", "v2", 5000, "s", false).unwrap();
        let sides: std::collections::HashSet<Side> = (0..200)
            .map(|u| {
                per_tenant
                    .version_for("orders", "acme", Some(&format!("user-{u}")))
                    .1
            })
            .collect();
        assert_eq!(
            sides.len(),
            1,
            "per tenant: every user of a tenant on one side"
        );
    }
}
