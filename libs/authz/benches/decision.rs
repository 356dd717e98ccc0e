//! Decision latency on the compiled reference tenant (`reference` module:
//! 50 roles 4 deep, 500 grants, 50 policies, 10k users): RBAC-only requests
//! (no policy targets them), ABAC requests (policies evaluated), the mixed
//! stream, `explain`, and compiling the whole tenant.
#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_authz::{PolicySet, Request, reference};

fn decisions(c: &mut Criterion) {
    let rules = reference::rules();
    let set = PolicySet::compile(&rules).unwrap();
    let users = reference::users();
    let department = reference::requests(&users, 4096, 11);
    // RBAC-only: the `shared:*` resources are targeted by no policy.
    let rbac: Vec<Request> = department
        .iter()
        .cloned()
        .map(|mut r| {
            r.resource = format!("shared:{}", r.resource);
            r.action = if r.action == "write" {
                "write".into()
            } else {
                "read".into()
            };
            r
        })
        .collect();
    // ABAC: department resources, where 3 to 5 policies target every request.
    let abac = department;
    // Mixed: alternating RBAC-only and ABAC requests.
    let mixed: Vec<Request> = rbac
        .iter()
        .zip(&abac)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();

    let mut group = c.benchmark_group("authz_decision");
    for (name, requests) in [("rbac_only", &rbac), ("abac", &abac), ("mixed", &mixed)] {
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(set.decide(black_box(&requests[i]), false))
            });
        });
    }
    let mut i = 0;
    group.bench_function("abac_explain", |b| {
        b.iter(|| {
            i = (i + 1) % abac.len();
            black_box(set.decide(black_box(&abac[i]), true))
        });
    });
    group.finish();

    c.bench_function("authz_compile_reference_tenant", |b| {
        b.iter(|| black_box(PolicySet::compile(black_box(&rules)).unwrap()));
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
