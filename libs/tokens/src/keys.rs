//! Signing keys: generation, their public JWK, encryption at rest under the
//! key-encryption key (KEK), and loading them back for signing and verifying.
//!
//! Private keys exist in plaintext only in memory. At rest they are
//! AES-256-GCM ciphertext (`nonce || ciphertext+tag`) with the key id as
//! associated data, so a ciphertext copied onto another key's row does not
//! decrypt.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use rand_core::{OsRng, RngCore};
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The signature algorithms Gatehouse issues tokens with; pinned per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// Ed25519 (the default: small, fast, no parameter choices).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// RSA PKCS#1 v1.5 with SHA-256, 2048-bit keys (for verifiers that know nothing else).
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
}

impl SigningAlgorithm {
    /// The JOSE name (`EdDSA`, `RS256`, `ES256`), as stored in `signing_keys.alg`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    /// Parses a JOSE name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    pub(crate) fn jose(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

/// Key failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Generating a key failed (the OS random source or the RSA generator).
    #[error("key generation failed: {0}")]
    Generate(String),
    /// The stored key does not decrypt under this KEK (wrong KEK, or the row
    /// was tampered with or moved).
    #[error("signing key {kid} does not decrypt with the configured key-encryption key")]
    Decrypt {
        /// The key id.
        kid: String,
    },
    /// The stored key material or JWK is malformed.
    #[error("signing key {kid} is malformed: {reason}")]
    Malformed {
        /// The key id.
        kid: String,
        /// What is wrong.
        reason: String,
    },
}

/// The key-encryption key: 32 bytes from configuration.
pub struct Kek(SecretBox<[u8; 32]>);

impl Kek {
    /// Wraps the configured key.
    #[must_use]
    pub fn new(key: SecretBox<[u8; 32]>) -> Self {
        Self(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.expose_secret().into())
    }

    /// Encrypts `plaintext` bound to `kid`: `nonce (12) || ciphertext+tag`.
    #[must_use]
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: kid.as_bytes(),
                },
            )
            // AES-GCM encryption only fails for messages beyond 64 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Kek::seal`] produced for the same `kid`.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<SecretBox<Vec<u8>>, KeyError> {
        let fail = || KeyError::Decrypt {
            kid: kid.to_owned(),
        };
        if sealed.len() < 12 + 16 {
            return Err(fail());
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let plaintext = self
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        Ok(SecretBox::new(Box::new(plaintext)))
    }
}

/// A freshly generated key, ready to be stored.
pub struct GeneratedKey {
    /// Key id (`kid` header), random, URL-safe.
    pub kid: String,
    /// Algorithm the key is pinned to.
    pub alg: SigningAlgorithm,
    /// Private key DER (PKCS#8; PKCS#1 for RSA), to be sealed before storing.
    pub private_der: SecretBox<Vec<u8>>,
    /// Public JWK (with `kid`, `alg`, `use`).
    pub public_jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new random key id: 16 random bytes, base64url (22 characters).
#[must_use]
pub fn new_kid() -> String {
    let mut raw = [0u8; 16];
    OsRng.fill_bytes(&mut raw);
    b64(&raw)
}

/// Generates a key pair for `alg`.
pub fn generate(alg: SigningAlgorithm) -> Result<GeneratedKey, KeyError> {
    let kid = new_kid();
    let gen_err = |e: &dyn std::fmt::Display| KeyError::Generate(e.to_string());
    let (private_der, mut jwk) = match alg {
        SigningAlgorithm::EdDsa => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let der = key
                .to_pkcs8_der()
                .map_err(|e| gen_err(&e))?
                .as_bytes()
                .to_vec();
            (
                der,
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())}),
            )
        }
        SigningAlgorithm::Es256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            use p256::pkcs8::EncodePrivateKey;
            let key = p256::SecretKey::random(&mut OsRng);
            let der = key
                .to_pkcs8_der()
                .map_err(|e| gen_err(&e))?
                .as_bytes()
                .to_vec();
            let point = key.public_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(KeyError::Generate(
                    "P-256 point has no coordinates".to_owned(),
                ));
            };
            (
                der,
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}),
            )
        }
        SigningAlgorithm::Rs256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| gen_err(&e))?;
            let der = key
                .to_pkcs1_der()
                .map_err(|e| gen_err(&e))?
                .as_bytes()
                .to_vec();
            (
                der,
                json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}),
            )
        }
    };
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg.as_str());
    jwk["use"] = json!("sig");
    Ok(GeneratedKey {
        kid,
        alg,
        private_der: SecretBox::new(Box::new(private_der)),
        public_jwk: jwk,
    })
}

/// A verifying key parsed once, so a verification is the signature check and
/// nothing else.
#[derive(Clone)]
pub(crate) enum VerifyingKey {
    Ed(ed25519_dalek::VerifyingKey),
    Es(p256::ecdsa::VerifyingKey),
    Rs(rsa::pkcs1v15::VerifyingKey<sha2::Sha256>),
}

impl VerifyingKey {
    /// Whether `signature` signs `message`. Ed25519 uses strict verification
    /// (no malleable or small-order signatures).
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match self {
            Self::Ed(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify_strict(message, &s).is_ok()),
            Self::Es(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
            Self::Rs(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
        }
    }
}

/// The public half of a key: what verifiers (and JWKS) need.
#[derive(Clone)]
pub struct PublicKey {
    /// Key id.
    pub kid: String,
    /// Pinned algorithm: a token for this `kid` with another `alg` is refused.
    pub alg: SigningAlgorithm,
    /// The JWK as published.
    pub jwk: Value,
    pub(crate) verifying: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Builds the verifying key from a public JWK (as stored or fetched from
    /// JWKS). The JWK's `kty`/`crv` must fit `alg`; RSA moduli below 2048 bits
    /// are refused.
    pub fn from_jwk(kid: &str, alg: SigningAlgorithm, jwk: &Value) -> Result<Self, KeyError> {
        let malformed = |reason: &str| KeyError::Malformed {
            kid: kid.to_owned(),
            reason: reason.to_owned(),
        };
        let field = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(&format!("JWK lacks {name}")))
        };
        let bytes = |name: &str| {
            URL_SAFE_NO_PAD
                .decode(field(name)?)
                .map_err(|_| malformed(&format!("JWK {name} is not base64url")))
        };
        let verifying = match (alg, field("kty")?) {
            (SigningAlgorithm::EdDsa, "OKP") if field("crv")? == "Ed25519" => {
                let x: [u8; 32] = bytes("x")?
                    .try_into()
                    .map_err(|_| malformed("Ed25519 x must be 32 bytes"))?;
                VerifyingKey::Ed(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| malformed("not an Ed25519 point"))?,
                )
            }
            (SigningAlgorithm::Es256, "EC") if field("crv")? == "P-256" => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(malformed("P-256 coordinates must be 32 bytes"));
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                VerifyingKey::Es(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| malformed("not a P-256 point"))?,
                )
            }
            (SigningAlgorithm::Rs256, "RSA") => {
                let n = rsa::BigUint::from_bytes_be(&bytes("n")?);
                let e = rsa::BigUint::from_bytes_be(&bytes("e")?);
                if n.bits() < 2048 {
                    return Err(malformed("RSA modulus shorter than 2048 bits"));
                }
                let key = rsa::RsaPublicKey::new(n, e).map_err(|e| malformed(&e.to_string()))?;
                VerifyingKey::Rs(rsa::pkcs1v15::VerifyingKey::new(key))
            }
            _ => return Err(malformed("JWK key type does not fit the algorithm")),
        };
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            jwk: jwk.clone(),
            verifying,
        })
    }
}

/// A key that can sign: private half in memory only.
pub struct SigningKey {
    /// The public half.
    pub public: PublicKey,
    pub(crate) encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a stored key: decrypts the private half with the KEK and checks
    /// it belongs to the stored public JWK (a sign-then-verify round).
    pub fn open(
        kek: &Kek,
        kid: &str,
        alg: SigningAlgorithm,
        sealed: &[u8],
        jwk: &Value,
    ) -> Result<Self, KeyError> {
        let der = kek.open(kid, sealed)?;
        Self::from_der(kid, alg, der.expose_secret(), jwk)
    }

    /// Builds a signing key from its private DER and public JWK.
    pub fn from_der(
        kid: &str,
        alg: SigningAlgorithm,
        der: &[u8],
        jwk: &Value,
    ) -> Result<Self, KeyError> {
        let encoding = match alg {
            SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(der),
            SigningAlgorithm::Es256 => EncodingKey::from_ec_der(der),
            SigningAlgorithm::Rs256 => EncodingKey::from_rsa_der(der),
        };
        let key = Self {
            public: PublicKey::from_jwk(kid, alg, jwk)?,
            encoding,
        };
        let probe = jsonwebtoken::encode(&key.header(), &json!({"probe": true}), &key.encoding)
            .map_err(|e| KeyError::Malformed {
                kid: kid.to_owned(),
                reason: e.to_string(),
            })?;
        let (input, signature) = probe.rsplit_once('.').unwrap_or_default();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
        if !key.public.verifying.verifies(input.as_bytes(), &signature) {
            return Err(KeyError::Malformed {
                kid: kid.to_owned(),
                reason: "private key does not match the stored public key".to_owned(),
            });
        }
        Ok(key)
    }

    pub(crate) fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(self.public.alg.jose());
        header.kid = Some(self.public.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        header
    }
}
