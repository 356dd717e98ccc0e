//! Tokens already verified, so a client presenting the same access token again
//! (the common case: one token, many requests) skips the signature check.
//!
//! Keyed by the whole token, compared byte for byte: any change to any byte is
//! a different key and goes through full verification. (A digest key cost a
//! SHA-256 of the token per request; the map's own keyed hash plus an exact
//! comparison is cheaper and cannot collide.) An entry is used only until the
//! token's own expiry (plus leeway) and never replaces the revocation check,
//! which callers do on every request. Claims are shared (`Arc`), so a hit
//! allocates nothing. Bounded: when full, expired entries are dropped, and if
//! that frees nothing the cache starts over (cheap, and keeps the worst case a
//! plain verification).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::jwt::AccessClaims;

/// A bounded map from token to its verified claims.
#[derive(Debug)]
pub struct VerifiedCache {
    entries: Mutex<HashMap<Box<str>, Arc<AccessClaims>>>,
    capacity: usize,
    leeway_s: i64,
}

impl VerifiedCache {
    /// A cache of at most `capacity` tokens; `leeway_s` as in verification.
    #[must_use]
    pub fn new(capacity: usize, leeway_s: i64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            leeway_s,
        }
    }

    /// The claims of `token` if it was verified before and has not expired at `now`.
    #[must_use]
    pub fn get(&self, token: &str, now: i64) -> Option<Arc<AccessClaims>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(token)
            .filter(|c| c.exp > now - self.leeway_s)
            .map(Arc::clone)
    }

    /// Remembers a token that just passed full verification.
    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>, now: i64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            let leeway = self.leeway_s;
            entries.retain(|_, c| c.exp > now - leeway);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(token.into(), claims);
    }

    /// Number of cached tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            tid: "t".into(),
            tenant_id: "ti".into(),
            sid: "sid".into(),
            roles: vec![],
            name: "n".into(),
        })
    }

    #[test]
    fn hits_only_the_identical_token_and_only_until_it_expires() {
        let cache = VerifiedCache::new(10, 30);
        cache.insert("a.b.c", claims(100), 0);
        assert!(cache.get("a.b.c", 50).is_some());
        assert!(
            cache.get("a.b.d", 50).is_none(),
            "one byte different: a different token"
        );
        assert!(cache.get("a.b.c", 129).is_some(), "within the leeway");
        assert!(cache.get("a.b.c", 130).is_none(), "expired");
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedCache::new(3, 0);
        for i in 0..10 {
            cache.insert(&format!("token-{i}"), claims(1000), 0);
            assert!(cache.len() <= 3);
        }
        assert!(cache.get("token-9", 0).is_some(), "the newest is kept");
    }
}
