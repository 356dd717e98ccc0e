//! The in-process copy of every live revocation, consulted on each token check.

use std::collections::HashMap;
use std::sync::RwLock;

use uuid::Uuid;

use crate::stream::Revocation;

#[derive(Debug, Default)]
struct State {
    /// Revoked token ids → their expiry (unix s), after which the entry is moot.
    jtis: HashMap<String, i64>,
    /// Revoked session ids → expiry of the newest token they could have.
    sessions: HashMap<String, i64>,
    /// (tenant, user) → tokens issued before this instant are revoked.
    users: HashMap<(Uuid, Uuid), i64>,
    /// tenant → tokens issued before this instant are revoked (kill switch).
    tenants: HashMap<Uuid, i64>,
}

/// Every live revocation, in process. Cheap to read concurrently.
#[derive(Debug, Default)]
pub struct RevocationMirror {
    state: RwLock<State>,
}

/// What a token says about itself, for the revocation check.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// Token id.
    pub jti: &'a str,
    /// Session id.
    pub sid: &'a str,
    /// Tenant id.
    pub tenant_id: Uuid,
    /// User id.
    pub user_id: Uuid,
    /// Issued at (unix s).
    pub iat: i64,
}

impl RevocationMirror {
    /// Applies one revocation (idempotent: applying twice changes nothing).
    pub fn apply(&self, revocation: &Revocation) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        match revocation {
            Revocation::Token { jti, expires_at } => {
                state.jtis.insert(jti.clone(), *expires_at);
            }
            Revocation::Session { sid, expires_at } => {
                state.sessions.insert(sid.clone(), *expires_at);
            }
            Revocation::User {
                tenant_id,
                user_id,
                before,
            } => {
                let entry = state.users.entry((*tenant_id, *user_id)).or_insert(*before);
                *entry = (*entry).max(*before);
            }
            Revocation::Tenant { tenant_id, before } => {
                let entry = state.tenants.entry(*tenant_id).or_insert(*before);
                *entry = (*entry).max(*before);
            }
        }
    }

    /// Replaces everything (after a reload from the deny list).
    pub fn replace(&self, revocations: &[Revocation]) {
        let fresh = Self::default();
        for revocation in revocations {
            fresh.apply(revocation);
        }
        if let (Ok(mut state), Ok(new)) = (self.state.write(), fresh.state.into_inner()) {
            *state = new;
        }
    }

    /// Whether a token is revoked. A poisoned lock (a panic elsewhere) counts
    /// as revoked: fail closed.
    #[must_use]
    pub fn is_revoked(&self, token: TokenFacts<'_>) -> bool {
        let Ok(state) = self.state.read() else {
            return true;
        };
        state.jtis.contains_key(token.jti)
            || state.sessions.contains_key(token.sid)
            || state
                .users
                .get(&(token.tenant_id, token.user_id))
                .is_some_and(|before| token.iat < *before)
            || state
                .tenants
                .get(&token.tenant_id)
                .is_some_and(|before| token.iat < *before)
    }

    /// Whether session `sid` of `user_id`, begun at `at` (unix s), was ended
    /// (its id is revoked) or is covered by its tenant's kill switch or its
    /// user's revoked-before mark: one read lock for all three, since every
    /// session admission asks. A poisoned lock counts as revoked.
    #[must_use]
    pub fn is_session_revoked(&self, tenant_id: Uuid, user_id: Uuid, at: i64, sid: &str) -> bool {
        let Ok(state) = self.state.read() else {
            return true;
        };
        state.sessions.contains_key(sid)
            || state
                .tenants
                .get(&tenant_id)
                .is_some_and(|before| at < *before)
            || state
                .users
                .get(&(tenant_id, user_id))
                .is_some_and(|before| at < *before)
    }

    /// Drops entries that can no longer matter (the tokens they revoke have
    /// expired; `horizon` = now minus the longest token life for marks).
    pub fn purge(&self, now: i64, horizon: i64) {
        if let Ok(mut state) = self.state.write() {
            state.jtis.retain(|_, exp| *exp > now);
            state.sessions.retain(|_, exp| *exp > now);
            state.users.retain(|_, before| *before > horizon);
            state.tenants.retain(|_, before| *before > horizon);
        }
    }

    /// Number of entries (for a gauge).
    #[must_use]
    pub fn len(&self) -> usize {
        self.state.read().map_or(0, |s| {
            s.jtis.len() + s.sessions.len() + s.users.len() + s.tenants.len()
        })
    }

    /// Whether the mirror holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(jti: &'a str, sid: &'a str, tenant: Uuid, user: Uuid, iat: i64) -> TokenFacts<'a> {
        TokenFacts {
            jti,
            sid,
            tenant_id: tenant,
            user_id: user,
            iat,
        }
    }

    #[test]
    fn each_kind_of_revocation_hits_exactly_its_tokens() {
        let m = RevocationMirror::default();
        let (t, u, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(!m.is_revoked(facts("j1", "s1", t, u, 100)));
        m.apply(&Revocation::Token {
            jti: "j1".into(),
            expires_at: 1000,
        });
        assert!(m.is_revoked(facts("j1", "s1", t, u, 100)));
        assert!(!m.is_revoked(facts("j2", "s1", t, u, 100)));
        m.apply(&Revocation::Session {
            sid: "s2".into(),
            expires_at: 1000,
        });
        assert!(m.is_revoked(facts("j3", "s2", t, u, 100)));
        m.apply(&Revocation::User {
            tenant_id: t,
            user_id: u,
            before: 200,
        });
        assert!(m.is_revoked(facts("j4", "s4", t, u, 199)));
        assert!(
            !m.is_revoked(facts("j4", "s4", t, u, 200)),
            "issued after the mark"
        );
        assert!(
            !m.is_revoked(facts("j4", "s4", t, other, 100)),
            "another user"
        );
        m.apply(&Revocation::User {
            tenant_id: t,
            user_id: u,
            before: 150,
        });
        assert!(
            m.is_revoked(facts("j4", "s4", t, u, 199)),
            "marks only move forward"
        );
        m.apply(&Revocation::Tenant {
            tenant_id: t,
            before: 300,
        });
        assert!(m.is_revoked(facts("j5", "s5", t, other, 299)));
        m.purge(2000, 250);
        assert!(
            !m.is_revoked(facts("j1", "s1", Uuid::new_v4(), u, 100)),
            "expired deny entries are purged"
        );
        assert!(
            m.is_revoked(facts("j5", "s5", t, other, 299)),
            "the tenant mark is newer than the horizon"
        );
    }
}
