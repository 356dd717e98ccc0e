//! What one login costs in argon2 work on this machine, with the production
//! default parameters (OWASP: m=19 MiB, t=2, p=1).
#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_core::{Argon2Cost, PasswordHasher};

fn argon2_login(c: &mut Criterion) {
    let hasher = PasswordHasher::new(Argon2Cost::default()).unwrap();
    let stored = hasher.hash("correct horse battery staple").unwrap();
    let mut group = c.benchmark_group("argon2id_owasp_default");
    group.sample_size(20);
    group.bench_function("verify", |b| {
        b.iter(|| {
            hasher
                .verify("correct horse battery staple", &stored)
                .unwrap()
        });
    });
    group.bench_function("verify_dummy_unknown_user", |b| {
        b.iter(|| hasher.verify_dummy("correct horse battery staple"));
    });
    group.finish();
}

criterion_group!(benches, argon2_login);
criterion_main!(benches);
