//! Resource and action patterns: `*` (anything), `orders:*` (a prefix), or an
//! exact name.

use std::fmt;

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Matches everything.
    Any,
    /// Matches names starting with the prefix (which ends before the `*`).
    Prefix(String),
    /// Matches one name.
    Exact(String),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl Pattern {
    /// Parses `*`, `prefix*` or an exact name (1 to 256 printable characters,
    /// `*` only at the end).
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        let fail = |reason| PatternError {
            pattern: raw.chars().take(64).collect(),
            reason,
        };
        if raw.is_empty() || raw.len() > 256 {
            return Err(fail("must be 1 to 256 characters"));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(fail("must not contain spaces or control characters"));
        }
        match raw.find('*') {
            None => Ok(Self::Exact(raw.to_owned())),
            Some(i) if i == raw.len() - 1 => {
                if i == 0 {
                    Ok(Self::Any)
                } else {
                    Ok(Self::Prefix(raw[..i].to_owned()))
                }
            }
            Some(_) => Err(fail("'*' may only end a pattern")),
        }
    }

    /// Whether `name` matches.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => name.starts_with(prefix.as_str()),
            Self::Exact(exact) => name == exact,
        }
    }

    /// Whether every name this pattern matches is also matched by `other`.
    #[must_use]
    pub fn is_covered_by(&self, other: &Self) -> bool {
        match (self, other) {
            (_, Self::Any) => true,
            (Self::Prefix(a) | Self::Exact(a), Self::Prefix(b)) => a.starts_with(b.as_str()),
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Any, _) | (Self::Prefix(_), Self::Exact(_)) => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(p) => write!(f, "{p}*"),
            Self::Exact(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let any = Pattern::parse("*").unwrap();
        let prefix = Pattern::parse("orders:*").unwrap();
        let exact = Pattern::parse("orders:7").unwrap();
        assert!(any.matches("anything"));
        assert!(
            prefix.matches("orders:7") && prefix.matches("orders:") && !prefix.matches("order")
        );
        assert!(exact.matches("orders:7") && !exact.matches("orders:70"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "or*ders", "**", "a b", &"x".repeat(257)] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn coverage_is_containment() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("orders:7").is_covered_by(&p("orders:*")));
        assert!(p("orders:eu:*").is_covered_by(&p("orders:*")));
        assert!(!p("orders:*").is_covered_by(&p("orders:7")));
        assert!(p("x").is_covered_by(&p("*")) && !p("*").is_covered_by(&p("x*")));
    }
}
