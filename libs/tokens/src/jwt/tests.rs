#![allow(
    clippy::too_many_lines,
    reason = "one table of rejection cases reads best together"
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::keys::{PublicKey, SigningAlgorithm, generate};

const NOW: i64 = 1_795_424_400;

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: "https://gate.example".into(),
        audience: "gatehouse".into(),
        access_ttl_s: 600,
        leeway_s: 30,
    }
}

fn key(alg: SigningAlgorithm) -> SigningKey {
    let generated = generate(alg).unwrap();
    SigningKey::from_der(
        &generated.kid,
        alg,
        secrecy::ExposeSecret::expose_secret(&generated.private_der),
        &generated.public_jwk,
    )
    .unwrap()
}

fn grantee() -> Grantee<'static> {
    Grantee {
        user_id: Uuid::nil(),
        username: "bob",
        tenant: "acme",
        tenant_id: Uuid::nil(),
        session_id: "sess-1",
        roles: vec!["member".into()],
    }
}

fn token(key: &SigningKey, settings: &TokenSettings) -> (String, AccessClaims) {
    issue(settings, key, grantee(), NOW).unwrap()
}

fn verifier(keys: &[&SigningKey]) -> Verifier {
    Verifier::new(settings(), keys.iter().map(|k| k.public.clone()))
}

fn part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[test]
fn tokens_of_every_algorithm_round_trip_with_the_contract_claims() {
    for alg in [
        SigningAlgorithm::EdDsa,
        SigningAlgorithm::Es256,
        SigningAlgorithm::Rs256,
    ] {
        let key = key(alg);
        let (jwt, issued) = token(&key, &settings());
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.public.kid.as_str()));
        let claims = verifier(&[&key])
            .verify(&jwt, NOW + 1, Some("acme"))
            .unwrap();
        assert_eq!(claims, issued);
        assert_eq!(
            (
                claims.exp - claims.iat,
                claims.tid.as_str(),
                claims.sid.as_str()
            ),
            (600, "acme", "sess-1")
        );
        let raw: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        for claim in [
            "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tid", "sid", "roles",
        ] {
            assert!(raw.get(claim).is_some(), "{alg:?} token lacks {claim}");
        }
    }
}

#[test]
fn an_independent_jwt_library_verifies_our_tokens() {
    use jwt_simple::prelude::*;
    let decode = |v: &Value, f: &str| URL_SAFE_NO_PAD.decode(v[f].as_str().unwrap()).unwrap();
    for alg in [
        SigningAlgorithm::EdDsa,
        SigningAlgorithm::Es256,
        SigningAlgorithm::Rs256,
    ] {
        let key = key(alg);
        // jwt-simple checks expiry against the system clock, so issue "now".
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let (jwt, _) = issue(&settings(), &key, grantee(), now).unwrap();
        let jwk = &key.public.jwk;
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from_strings(&["https://gate.example"])),
            allowed_audiences: Some(HashSet::from_strings(&["gatehouse"])),
            ..VerificationOptions::default()
        };
        let claims: JWTClaims<Value> = match alg {
            SigningAlgorithm::EdDsa => Ed25519PublicKey::from_bytes(&decode(jwk, "x"))
                .unwrap()
                .verify_token(&jwt, Some(options)),
            SigningAlgorithm::Es256 => {
                let mut point = vec![4u8];
                point.extend(decode(jwk, "x"));
                point.extend(decode(jwk, "y"));
                ES256PublicKey::from_bytes(&point)
                    .unwrap()
                    .verify_token(&jwt, Some(options))
            }
            SigningAlgorithm::Rs256 => {
                RS256PublicKey::from_components(&decode(jwk, "n"), &decode(jwk, "e"))
                    .unwrap()
                    .verify_token(&jwt, Some(options))
            }
        }
        .unwrap_or_else(|e| panic!("{alg:?}: jwt-simple refused our token: {e}"));
        assert_eq!(claims.custom["tid"], "acme");
        assert_eq!(
            claims.subject.as_deref(),
            Some(Uuid::nil().to_string().as_str())
        );
    }
}

#[test]
fn every_rejection_case_is_refused_for_its_own_reason() {
    let ed = key(SigningAlgorithm::EdDsa);
    let rsa = key(SigningAlgorithm::Rs256);
    let trusting = verifier(&[&ed, &rsa]);
    let (good, claims) = token(&ed, &settings());
    let [head, payload, signature]: [&str; 3] =
        good.split('.').collect::<Vec<_>>().try_into().unwrap();

    // alg "none", with and without a signature.
    let none = format!(
        "{}.{payload}.",
        part(&json!({"alg": "none", "kid": ed.public.kid, "typ": "JWT"}))
    );
    assert_eq!(
        trusting.verify(&none, NOW, None),
        Err(VerifyError::AlgorithmMismatch)
    );
    let none_no_kid = format!("{}.{payload}.", part(&json!({"alg": "none"})));
    assert_eq!(
        trusting.verify(&none_no_kid, NOW, None),
        Err(VerifyError::UnknownKey)
    );
    // Algorithm confusion: HS256 keyed with the RSA public modulus, under the RSA key's kid.
    let modulus = URL_SAFE_NO_PAD
        .decode(rsa.public.jwk["n"].as_str().unwrap())
        .unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(rsa.public.kid.clone());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&modulus),
    )
    .unwrap();
    assert_eq!(
        trusting.verify(&confused, NOW, None),
        Err(VerifyError::AlgorithmMismatch)
    );
    // An EdDSA key's kid with an RS256 header.
    let swapped = format!(
        "{}.{payload}.{signature}",
        part(&json!({"alg": "RS256", "kid": ed.public.kid}))
    );
    assert_eq!(
        trusting.verify(&swapped, NOW, None),
        Err(VerifyError::AlgorithmMismatch)
    );
    // Tampered payload: same header and signature, another tenant.
    let mut forged = claims.clone();
    forged.tid = "globex".into();
    assert_eq!(
        trusting.verify(
            &format!("{head}.{}.{signature}", part(&json!(forged))),
            NOW,
            None
        ),
        Err(VerifyError::BadSignature)
    );
    // Unknown or missing kid; a key we do not trust.
    let stranger = key(SigningAlgorithm::EdDsa);
    assert_eq!(
        trusting.verify(&token(&stranger, &settings()).0, NOW, None),
        Err(VerifyError::UnknownKey)
    );
    let no_kid = format!("{}.{payload}.{signature}", part(&json!({"alg": "EdDSA"})));
    assert_eq!(
        trusting.verify(&no_kid, NOW, None),
        Err(VerifyError::UnknownKey)
    );
    // Issuer, audience, tenant.
    let other_iss = TokenSettings {
        issuer: "https://evil.example".into(),
        ..settings()
    };
    assert_eq!(
        trusting.verify(&token(&ed, &other_iss).0, NOW, None),
        Err(VerifyError::WrongIssuer)
    );
    let other_aud = TokenSettings {
        audience: "someone-else".into(),
        ..settings()
    };
    assert_eq!(
        trusting.verify(&token(&ed, &other_aud).0, NOW, None),
        Err(VerifyError::WrongAudience)
    );
    assert_eq!(
        trusting.verify(&good, NOW, Some("globex")),
        Err(VerifyError::WrongTenant)
    );
    // Time, with the 30 s leeway on both sides.
    assert!(
        trusting.verify(&good, NOW + 600 + 29, None).is_ok(),
        "inside the leeway"
    );
    assert_eq!(
        trusting.verify(&good, NOW + 600 + 30, None),
        Err(VerifyError::Expired)
    );
    assert!(
        trusting.verify(&good, NOW - 30, None).is_ok(),
        "inside the leeway"
    );
    assert_eq!(
        trusting.verify(&good, NOW - 31, None),
        Err(VerifyError::NotYetValid)
    );
    // Garbage.
    for junk in ["", "a.b", "a.b.c", "....", &"x".repeat(10_000)] {
        assert_eq!(
            trusting.verify(junk, NOW, None),
            Err(VerifyError::Malformed),
            "{junk:.20}"
        );
    }
}

#[test]
fn sealed_private_keys_open_only_with_the_same_kek_and_kid() {
    use secrecy::{ExposeSecret, SecretBox};
    let kek = crate::keys::Kek::new(SecretBox::new(Box::new([7u8; 32])));
    let other = crate::keys::Kek::new(SecretBox::new(Box::new([8u8; 32])));
    let generated = generate(SigningAlgorithm::EdDsa).unwrap();
    let sealed = kek.seal(&generated.kid, generated.private_der.expose_secret());
    assert_ne!(
        &sealed[12..],
        generated.private_der.expose_secret().as_slice(),
        "ciphertext, not plaintext"
    );
    let opened = SigningKey::open(
        &kek,
        &generated.kid,
        SigningAlgorithm::EdDsa,
        &sealed,
        &generated.public_jwk,
    )
    .unwrap();
    assert_eq!(opened.public.kid, generated.kid);
    assert!(
        SigningKey::open(
            &other,
            &generated.kid,
            SigningAlgorithm::EdDsa,
            &sealed,
            &generated.public_jwk
        )
        .is_err(),
        "wrong KEK"
    );
    assert!(
        SigningKey::open(
            &kek,
            "another-kid",
            SigningAlgorithm::EdDsa,
            &sealed,
            &generated.public_jwk
        )
        .is_err(),
        "moved to another row"
    );
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(
        SigningKey::open(
            &kek,
            &generated.kid,
            SigningAlgorithm::EdDsa,
            &tampered,
            &generated.public_jwk
        )
        .is_err()
    );
    // A private key that does not belong to the stored public key is refused.
    let stranger = generate(SigningAlgorithm::EdDsa).unwrap();
    let mismatched = SigningKey::from_der(
        &generated.kid,
        SigningAlgorithm::EdDsa,
        stranger.private_der.expose_secret(),
        &generated.public_jwk,
    );
    assert!(mismatched.is_err());
}

#[test]
fn weak_or_mismatched_public_keys_are_refused_at_load() {
    use rsa::traits::PublicKeyParts as _;
    let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
    let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(small.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(small.e().to_bytes_be())});
    assert!(
        PublicKey::from_jwk("k", SigningAlgorithm::Rs256, &jwk).is_err(),
        "RSA-1024 refused"
    );
    let ed = generate(SigningAlgorithm::EdDsa).unwrap();
    assert!(
        PublicKey::from_jwk("k", SigningAlgorithm::Rs256, &ed.public_jwk).is_err(),
        "OKP key under RS256"
    );
    assert!(
        PublicKey::from_jwk("k", SigningAlgorithm::Es256, &ed.public_jwk).is_err(),
        "OKP key under ES256"
    );
    let mut short = ed.public_jwk.clone();
    short["x"] = json!("AAAA");
    assert!(PublicKey::from_jwk("k", SigningAlgorithm::EdDsa, &short).is_err());
}
