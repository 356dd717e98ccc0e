//! gatehouse-authz vs cedar-policy, one decision per iteration, on the same
//! reference tenant and the same request stream
//! (`reference::requests(&reference::users(), 4096, 11)`).
//!
//! Timed per iteration:
//! - `gatehouse`: `PolicySet::decide(&request, false)` on a pre-built
//!   `Request` (role expiry, `hour_utc` derivation and policy/grant matching
//!   happen inside, as in production).
//! - `cedar_per_grant` / `cedar_per_role`: `Authorizer::is_authorized` on a
//!   pre-built `cedar_policy::Request` (context included) against a pre-built
//!   `Entities` (roles, 10 000 users, one resource per request) and the
//!   translated `PolicySet` (550 resp. 100 policies).
//! - `cedar_per_grant_incl_request_build`: as `cedar_per_grant` plus turning
//!   the gatehouse request into the Cedar request (context record, uids),
//!   i.e. what an adapter in front of Cedar would pay per request;
//!   `cedar_request_build_only` times that conversion alone.
//!
//! Never timed: compiling/translating rules, building entities.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark"
)]

use std::hint::black_box;

use authz_compare::{GrantLayout, Translation};
use cedar_policy::{Authorizer, Decision};
use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_authz::{PolicySet, reference};

fn compare(c: &mut Criterion) {
    let rules = reference::rules();
    let users = reference::users();
    let requests = reference::requests(&users, 4096, 11);
    let ours = PolicySet::compile(&rules).unwrap();
    let per_grant = Translation::new(&rules, GrantLayout::PerGrant).unwrap();
    let per_role = Translation::new(&rules, GrantLayout::PerRole).unwrap();
    let world = per_grant.world(&users, &requests).unwrap();
    let authorizer = Authorizer::new();

    // Same answers before timing anything (tests/agree.rs checks in depth).
    for (request, cedar_request) in requests.iter().zip(&world.requests) {
        let expected = ours.decide(request, false).allowed;
        for cedar in [&per_grant, &per_role] {
            let response =
                authorizer.is_authorized(cedar_request, &cedar.policies, &world.entities);
            assert_eq!(expected, response.decision() == Decision::Allow);
        }
    }

    let mut group = c.benchmark_group("authz_compare");
    let n = requests.len();
    let mut i = 0;
    group.bench_function("gatehouse", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(ours.decide(black_box(&requests[i]), false))
        });
    });
    for (name, cedar) in [
        ("cedar_per_grant", &per_grant),
        ("cedar_per_role", &per_role),
    ] {
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(authorizer.is_authorized(
                    black_box(&world.requests[i]),
                    &cedar.policies,
                    &world.entities,
                ))
            });
        });
    }
    let mut i = 0;
    group.bench_function("cedar_per_grant_incl_request_build", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let request = per_grant.request(i, black_box(&requests[i])).unwrap();
            black_box(authorizer.is_authorized(&request, &per_grant.policies, &world.entities))
        });
    });
    let mut i = 0;
    group.bench_function("cedar_request_build_only", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(per_grant.request(i, black_box(&requests[i])).unwrap())
        });
    });
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
