//! Grey routing.
//!
//! - [`rollout`]: which version of a service a tenant gets. A rule pins a
//!   version or splits tenants (or their users) between a stable and a canary
//!   version by a stable hash into 10 000 buckets, so a tenant stays on its side
//!   as the canary share grows, with no cookie. Pure: the same function runs in
//!   Lua ([`select`]) and here (the in-process fast path and the tests that
//!   hold the two to the same answers).
//! - [`select`]: the Redis side. One Lua script per strategy resolves the
//!   tenant's version and picks an instance in one round trip (round robin,
//!   smooth weighted round robin, least connections with expiring leases,
//!   health-aware weighted random, consistent hashing by user), skipping
//!   instances whose heartbeat lapsed or whose breaker is open; another script
//!   records each proxied request's outcome (breakers, health, leases, and
//!   statistics per tenant and version, for that tenant's canary).
//! - [`canary`]: automatic canary analysis over those statistics.
//! - [`local`]: selection in the gateway's memory (the fast path for
//!   strategies without shared state, and the fallback while Redis is away).

pub mod canary;
pub mod local;
pub mod rollout;
pub mod select;

pub use canary::{Analysis, Verdict, VersionStats, judge};
pub use local::LocalRequest;
pub use rollout::{BUCKETS, Rule, RuleError, Side, bucket, check_salt};
pub use select::HealthView;
pub use select::{
    BreakerSettings, BreakerState, MirroredInstance, Outcome, Pick, PickRequest, Picked,
    RoutingError, RoutingStore, STATS_SLOT_MS, SelectSettings, Strategy, counts_for_canary,
};
