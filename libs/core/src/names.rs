//! Names that arrive as free text and are parsed once into types that cannot
//! hold an invalid value ("parse, don't validate").
//!
//! Every one of these may end up inside a Redis key or a URL path, so the rules
//! are strict and identical to the CHECK constraints in `migrations/`.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Why a name was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The value is empty after trimming.
    #[error("{what} must not be empty")]
    Empty {
        /// Which kind of name.
        what: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{what} must be at most {max} characters")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// The maximum length in characters.
        max: usize,
    },
    /// The value contains a character outside the allowed set.
    #[error("{what} {rule}")]
    BadCharacters {
        /// Which kind of name.
        what: &'static str,
        /// The rule, phrased to complete "<what> ...".
        rule: &'static str,
    },
}

/// True for `[a-z0-9]` with inner `-`, 1 to 63 characters: DNS-label shaped,
/// so slugs are safe in paths, hostnames and Redis keys without escaping.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && edge_ok(bytes[0])
        && edge_ok(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| edge_ok(b) || b == b'-')
}

fn parse_label(what: &'static str, raw: &str) -> Result<String, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty { what });
    }
    if raw.len() > 63 {
        return Err(NameError::TooLong { what, max: 63 });
    }
    if !is_dns_label(raw) {
        return Err(NameError::BadCharacters {
            what,
            rule: "may contain only lowercase letters, digits and inner hyphens",
        });
    }
    Ok(raw.to_owned())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The validated value.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A tenant's URL slug (`acme`): lowercase DNS label, the tenant's public name.
    TenantSlug
);

impl TenantSlug {
    /// Parses a slug exactly as typed: no case folding, so `/t/ACME` is not `/t/acme`.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        parse_label("tenant", raw).map(Self)
    }
}

string_newtype!(
    /// A routed service's name (`orders`): lowercase DNS label.
    ServiceName
);

impl ServiceName {
    /// Parses a service name exactly as typed.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        parse_label("service", raw).map(Self)
    }
}

string_newtype!(
    /// A service version label (`v1`, `2024.11-rc1`): 1 to 32 of `[A-Za-z0-9_.-]`.
    VersionLabel
);

impl VersionLabel {
    /// Parses a version label exactly as typed.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const WHAT: &str = "version";
        let bytes = raw.as_bytes();
        if bytes.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if bytes.len() > 32 {
            return Err(NameError::TooLong {
                what: WHAT,
                max: 32,
            });
        }
        let ok = bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(NameError::BadCharacters {
                what: WHAT,
                rule: "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
            });
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A username in two forms: the normalised one used for uniqueness, lookup and
/// throttling keys, and the one the user typed, kept for display.
///
/// Normalisation is trim, Unicode NFKC, then lowercase, applied identically at
/// creation and at login so `Alice`, ` alice ` and `ａｌｉｃｅ` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username {
    normalized: String,
    display: String,
}

impl Username {
    /// Longest accepted username, in characters after normalisation.
    pub const MAX_CHARS: usize = 128;

    /// Normalises and validates a username.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const WHAT: &str = "username";
        let display: String = raw.trim().nfkc().collect();
        if display.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if display.chars().count() > Self::MAX_CHARS {
            return Err(NameError::TooLong {
                what: WHAT,
                max: Self::MAX_CHARS,
            });
        }
        if display.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(NameError::BadCharacters {
                what: WHAT,
                rule: "must not contain spaces or control characters",
            });
        }
        let normalized = display.to_lowercase();
        Ok(Self {
            normalized,
            display,
        })
    }

    /// The canonical form: compare, index and key by this.
    #[must_use]
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The form the user typed (trimmed, NFKC), for display only.
    #[must_use]
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_slugs_are_dns_labels() {
        assert!(TenantSlug::parse("acme").is_ok());
        assert!(TenantSlug::parse("acme-2").is_ok());
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme-",
            "ac me",
            "acme/..",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn username_variants_normalise_to_one_account() {
        let variants = [
            "alice",
            " Alice ",
            "ALICE",
            "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
        ];
        for v in variants {
            assert_eq!(Username::parse(v).unwrap().normalized(), "alice", "{v:?}");
        }
        assert_eq!(Username::parse(" Alice ").unwrap().display(), "Alice");
    }

    #[test]
    fn usernames_refuse_empty_long_and_control_characters() {
        assert!(matches!(
            Username::parse("   "),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            Username::parse(&"x".repeat(129)),
            Err(NameError::TooLong { max: 128, .. })
        ));
        assert!(Username::parse(&"x".repeat(128)).is_ok());
        assert!(Username::parse("al\u{0}ice").is_err());
        assert!(Username::parse("al ice").is_err());
    }

    #[test]
    fn version_labels() {
        assert!(VersionLabel::parse("v1").is_ok());
        assert!(VersionLabel::parse("2024.11-rc_1").is_ok());
        assert!(VersionLabel::parse(".v1").is_err());
        assert!(VersionLabel::parse("v 1").is_err());
        assert!(VersionLabel::parse(&"v".repeat(33)).is_err());
    }
}
