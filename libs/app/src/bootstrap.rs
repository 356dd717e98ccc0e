//! What `gatehouse bootstrap [--demo]` creates: the `system` tenant with the
//! platform admin, and with `--demo` the `acme` tenant, its users, roles and
//! policy, and the `orders` service with versions `v1` and `v2`.
//!
//! The data lives here as a [`Seed`]; [`apply`] creates whatever is
//! missing, so a second run changes nothing.

use gatehouse_core::{ServiceName, TenantSlug, Username, VersionLabel};
use gatehouse_store::bootstrap::{
    PolicySeed, RoleSeed, RolloutSeed, ServiceSeed, TenantSeed, UserSeed,
};

/// The seed and what applying it created.
pub use gatehouse_store::bootstrap::{Report, Seed};

/// Creates whatever of `seed` is missing, in one transaction (users'
/// passwords hashed with `hasher`); idempotent.
pub async fn apply(
    db: &sqlx::PgPool,
    seed: &Seed,
    hasher: &gatehouse_core::PasswordHasher,
) -> Result<Report, gatehouse_store::StoreError> {
    gatehouse_store::bootstrap::apply(db, seed, hasher).await
}
use rand::Rng as _;
use serde_json::json;

/// A bad `bootstrap` argument or password setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct BootstrapInputError {
    /// The flag or variable at fault.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

fn input_error(setting: &'static str, message: impl Into<String>) -> BootstrapInputError {
    BootstrapInputError {
        setting,
        message: message.into(),
    }
}

/// One `--upstream VERSION=HOST:PORT` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Version of `orders` this instance serves.
    pub version: VersionLabel,
    /// Where it listens.
    pub address: String,
}

impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (version, address) = raw
            .split_once('=')
            .ok_or_else(|| format!("{raw:?} is not VERSION=HOST:PORT"))?;
        let version = VersionLabel::parse(version).map_err(|e| e.to_string())?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("{address:?} has no :PORT"))?;
        let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if !port_ok || !host_ok {
            return Err(format!("{address:?} is not HOST:PORT"));
        }
        Ok(Self {
            version,
            address: address.to_owned(),
        })
    }
}

/// Passwords for the seeded users, and whether each was generated (and so
/// must be printed once) or chosen by the operator.
#[derive(Debug, Clone)]
pub struct Passwords {
    /// The `admin` password.
    pub admin: String,
    /// True when generated here.
    pub admin_generated: bool,
    /// The password of `alice` and `bob`.
    pub demo: String,
    /// True when generated here.
    pub demo_generated: bool,
}

/// The variable the platform admin's password comes from (the name errors
/// report).
pub const ADMIN_PASSWORD_VAR: &str = "GATEHOUSE_ADMIN_PASSWORD";

/// The variable the demo users' password comes from.
pub const DEMO_PASSWORD_VAR: &str = "GATEHOUSE_DEMO_PASSWORD";

/// Shortest password accepted from the environment.
pub const MIN_PASSWORD_CHARS: usize = 10;

impl Passwords {
    /// Takes `GATEHOUSE_ADMIN_PASSWORD` / `GATEHOUSE_DEMO_PASSWORD` when set,
    /// else generates strong random ones.
    pub fn from_env(
        admin: Option<String>,
        demo: Option<String>,
    ) -> Result<Self, BootstrapInputError> {
        let check = |setting: &'static str, value: Option<String>| match value {
            Some(v) if v.chars().count() < MIN_PASSWORD_CHARS => Err(input_error(
                setting,
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            )),
            Some(v) => Ok((v, false)),
            None => Ok((generate_password(), true)),
        };
        let (admin, admin_generated) = check(ADMIN_PASSWORD_VAR, admin)?;
        let (demo, demo_generated) = check(DEMO_PASSWORD_VAR, demo)?;
        Ok(Self {
            admin,
            admin_generated,
            demo,
            demo_generated,
        })
    }
}

/// 20 characters from a 57-symbol alphabet without look-alikes (~116 bits).
#[must_use]
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn slug(raw: &str) -> Result<TenantSlug, BootstrapInputError> {
    TenantSlug::parse(raw).map_err(|e| input_error("seed", e.to_string()))
}

fn user(
    raw: &str,
    display_name: &str,
    password: &str,
    roles: &[&str],
) -> Result<UserSeed, BootstrapInputError> {
    Ok(UserSeed {
        username: Username::parse(raw).map_err(|e| input_error("seed", e.to_string()))?,
        display_name: display_name.to_owned(),
        password: password.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    })
}

fn role(name: &str, description: &str, parent: Option<&str>, grants: &[(&str, &str)]) -> RoleSeed {
    RoleSeed {
        name: name.to_owned(),
        description: description.to_owned(),
        parent: parent.map(str::to_owned),
        grants: grants
            .iter()
            .map(|(r, a)| ((*r).to_owned(), (*a).to_owned()))
            .collect(),
    }
}

/// Builds the seed. `return_origins` are the origins the demo tenant's login
/// may redirect to (the gateway's own public origin).
pub fn seed(
    demo: bool,
    upstreams: &[Upstream],
    passwords: &Passwords,
    return_origins: &[String],
) -> Result<Seed, BootstrapInputError> {
    if !demo && !upstreams.is_empty() {
        return Err(input_error(
            "--upstream",
            "only applies together with --demo",
        ));
    }
    let mut seed = Seed::default();
    seed.tenants.push(TenantSeed {
        slug: slug("system")?,
        display_name: "Gatehouse platform".to_owned(),
        allowed_return_origins: return_origins.to_vec(),
        roles: vec![role(
            "platform-admin",
            "Operates every tenant through the admin API",
            None,
            &[("admin:*", "*")],
        )],
        users: vec![user(
            "admin",
            "Platform administrator",
            &passwords.admin,
            &["platform-admin"],
        )?],
        policies: vec![],
    });
    if !demo {
        return Ok(seed);
    }
    seed.tenants.push(TenantSeed {
        slug: slug("acme")?,
        display_name: "Acme Corporation".to_owned(),
        allowed_return_origins: return_origins.to_vec(),
        roles: vec![
            role("member", "Reads and places orders", None, &[
                ("orders:*", "read"),
                ("orders:*", "create"),
            ]),
            role("tenant-admin", "Administers the acme tenant", Some("member"), &[
                ("orders:*", "*"),
                ("admin:acme:*", "*"),
            ]),
        ],
        users: vec![
            user("alice", "Alice Admin", &passwords.demo, &["tenant-admin"])?,
            user("bob", "Bob Member", &passwords.demo, &["member"])?,
        ],
        policies: vec![PolicySeed {
            name: "orders-delete-office-hours".to_owned(),
            description: "Orders may be deleted only on weekdays between 08:00 and 18:00 UTC".to_owned(),
            priority: 100,
            effect: "deny".to_owned(),
            document: json!({
                "target": { "resources": ["orders:*"], "actions": ["delete"] },
                "condition": { "not": { "all": [
                    { "op": "in", "attr": "context.weekday", "value": ["mon", "tue", "wed", "thu", "fri"] },
                    { "op": "between", "attr": "context.hour_utc", "value": [8, 17] }
                ] } }
            }),
        }],
    });
    let v1 = VersionLabel::parse("v1").map_err(|e| input_error("seed", e.to_string()))?;
    let v2 = VersionLabel::parse("v2").map_err(|e| input_error("seed", e.to_string()))?;
    for upstream in upstreams {
        if upstream.version != v1 && upstream.version != v2 {
            return Err(input_error(
                "--upstream",
                format!(
                    "the demo service orders has versions v1 and v2, not {}",
                    upstream.version
                ),
            ));
        }
    }
    let orders = ServiceName::parse("orders").map_err(|e| input_error("seed", e.to_string()))?;
    seed.services.push(ServiceSeed {
        name: orders.clone(),
        description: "Demo order service (two versions of demo-upstream)".to_owned(),
        versions: vec![v1.clone(), v2.clone()],
        instances: upstreams
            .iter()
            .map(|u| (u.version.clone(), u.address.clone()))
            .collect(),
    });
    seed.rollouts.push(RolloutSeed {
        tenant: slug("acme")?,
        service: orders,
        stable: v1,
        canary: Some((v2, 20)),
    });
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords::from_env(Some("admin-password".into()), Some("demo-password".into())).unwrap()
    }

    #[test]
    fn upstream_arguments_parse_and_refuse_garbage() {
        let u: Upstream = "v1=127.0.0.1:9101".parse().unwrap();
        assert_eq!(u.version.as_str(), "v1");
        assert_eq!(u.address, "127.0.0.1:9101");
        assert!("v2=upstream-v2:9102".parse::<Upstream>().is_ok());
        for bad in [
            "v1",
            "v1=127.0.0.1",
            "v1=:80",
            "v1=host:0",
            "v1=host:99999",
            "=h:1",
            "v1=h st:1",
        ] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn short_passwords_from_env_are_refused_and_missing_ones_generated() {
        let err = Passwords::from_env(Some("short".into()), None).unwrap_err();
        assert_eq!(err.setting, "GATEHOUSE_ADMIN_PASSWORD");
        let p = Passwords::from_env(None, None).unwrap();
        assert!(p.admin_generated && p.demo_generated);
        assert_eq!(p.admin.len(), 20);
        assert_ne!(p.admin, p.demo);
    }

    #[test]
    fn demo_seed_has_the_contract_users_and_service() {
        let upstreams = [
            "v1=127.0.0.1:1".parse().unwrap(),
            "v2=127.0.0.1:2".parse().unwrap(),
        ];
        let s = seed(true, &upstreams, &passwords(), &[]).unwrap();
        let slugs: Vec<_> = s.tenants.iter().map(|t| t.slug.as_str()).collect();
        assert_eq!(slugs, ["system", "acme"]);
        let acme_users: Vec<_> = s.tenants[1]
            .users
            .iter()
            .map(|u| u.username.normalized())
            .collect();
        assert_eq!(acme_users, ["alice", "bob"]);
        assert_eq!(s.services[0].instances.len(), 2);
    }

    #[test]
    fn upstreams_need_demo_and_a_known_version() {
        let u: Upstream = "v3=127.0.0.1:1".parse().unwrap();
        assert_eq!(
            seed(false, std::slice::from_ref(&u), &passwords(), &[])
                .unwrap_err()
                .setting,
            "--upstream"
        );
        assert_eq!(
            seed(true, &[u], &passwords(), &[]).unwrap_err().setting,
            "--upstream"
        );
    }
}
