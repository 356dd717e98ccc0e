//! Access-token cost: verifying (signature + claims) and issuing, per
//! algorithm. Pure CPU: no Redis, no Postgres.
#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_tokens::{
    Grantee, SigningAlgorithm, SigningKey, TokenSettings, VerifiedCache, Verifier, generate, issue,
};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

const NOW: i64 = 1_795_424_400;

fn grantee() -> Grantee<'static> {
    Grantee {
        user_id: Uuid::now_v7(),
        username: "bob",
        tenant: "acme",
        tenant_id: Uuid::now_v7(),
        session_id: "7d1f0c1e3a5b4c2d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d",
        roles: vec!["member".into(), "tenant-admin".into()],
    }
}

fn tokens(c: &mut Criterion) {
    let settings = TokenSettings {
        issuer: "https://gate.example".into(),
        audience: "gatehouse".into(),
        access_ttl_s: 600,
        leeway_s: 30,
    };
    let mut group = c.benchmark_group("token");
    for (name, alg) in [
        ("eddsa", SigningAlgorithm::EdDsa),
        ("rs256", SigningAlgorithm::Rs256),
        ("es256", SigningAlgorithm::Es256),
    ] {
        let generated = generate(alg).unwrap();
        let key = SigningKey::from_der(
            &generated.kid,
            alg,
            generated.private_der.expose_secret(),
            &generated.public_jwk,
        )
        .unwrap();
        let verifier = Verifier::new(settings.clone(), [key.public.clone()]);
        let (jwt, _) = issue(&settings, &key, grantee(), NOW).unwrap();
        group.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| black_box(verifier.verify(black_box(&jwt), NOW, Some("acme")).unwrap()));
        });
        if alg == SigningAlgorithm::EdDsa {
            let cache = VerifiedCache::new(100_000, 30);
            let claims = verifier.verify(&jwt, NOW, Some("acme")).unwrap();
            cache.insert(&jwt, std::sync::Arc::new(claims), NOW);
            group.bench_function("verify_already_seen", |b| {
                b.iter(|| black_box(cache.get(black_box(&jwt), NOW).unwrap()));
            });
        }
        group.bench_function(format!("issue_{name}"), |b| {
            b.iter(|| black_box(issue(&settings, &key, grantee(), NOW).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
