//! Known-device proofs: a signed, long-lived cookie (or JSON field) issued
//! after a successful sign-in, naming the tenant and user it was issued for
//! and the user's credential epoch at the time. An attempt that presents a
//! valid one skips the username lockout and the tenant ceiling (it still
//! faces its own pair and IP limits), so an attacker flooding a username or
//! the tenant cannot lock the real user out of a device they used before.
//! A password change or reset, or disabling the user, bumps the epoch
//! (a database trigger), which retires every earlier proof of the user.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// How long a device stays known without signing in again.
pub const DEVICE_LIFETIME_S: i64 = 365 * 24 * 3600;

/// Signs and checks device proofs.
#[derive(Clone)]
pub struct DeviceKey([u8; 32]);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey([redacted])")
    }
}

impl DeviceKey {
    /// Derives the key from the key-encryption key with its own label.
    #[must_use]
    pub fn derive(kek: &[u8; 32]) -> Self {
        let mut mac = HmacSha256::new_from_slice(kek)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"gatehouse device key v1");
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(payload.as_bytes());
        mac
    }

    /// A proof that this device signed in as `username` of `tenant` at `now`,
    /// while the user's credential epoch was `epoch`.
    #[must_use]
    pub fn issue(&self, tenant: Uuid, username_normalized: &str, epoch: i64, now: i64) -> String {
        let payload = format!("v2|{}|{now}|{epoch}|{username_normalized}", tenant.simple());
        let tag = self.mac(&payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The credential epoch a proof was issued in, when it is a valid,
    /// unexpired proof for this tenant and user; the caller compares it with
    /// the user's current epoch.
    #[must_use]
    pub fn verify(
        &self,
        proof: &str,
        tenant: Uuid,
        username_normalized: &str,
        now: i64,
    ) -> Option<i64> {
        let (payload_b64, tag_b64) = proof.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        self.mac(&payload).verify_slice(&tag).ok()?;
        let mut parts = payload.splitn(5, '|');
        let (Some("v2"), Some(t), Some(issued), Some(epoch), Some(user)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let issued: i64 = issued.parse().ok()?;
        let valid = t == tenant.simple().to_string()
            && user == username_normalized
            && issued <= now
            && now - issued < DEVICE_LIFETIME_S;
        valid.then(|| epoch.parse().ok()).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_for_their_tenant_user_and_lifetime() {
        let key = DeviceKey::derive(&[1; 32]);
        let tenant = Uuid::new_v4();
        let proof = key.issue(tenant, "alice", 3, 1_000);
        assert_eq!(key.verify(&proof, tenant, "alice", 2_000), Some(3));
        assert_eq!(key.verify(&proof, tenant, "bob", 2_000), None);
        assert_eq!(key.verify(&proof, Uuid::new_v4(), "alice", 2_000), None);
        assert_eq!(
            key.verify(&proof, tenant, "alice", 1_000 + DEVICE_LIFETIME_S),
            None
        );
        assert_eq!(
            DeviceKey::derive(&[2; 32]).verify(&proof, tenant, "alice", 2_000),
            None
        );
        let (payload, _) = proof.split_once('.').unwrap();
        assert_eq!(
            key.verify(&format!("{payload}.AAAA"), tenant, "alice", 2_000),
            None
        );
        assert_eq!(key.verify("garbage", tenant, "alice", 2_000), None);
    }
}
