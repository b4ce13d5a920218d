//! The Ed25519 key that signs access tokens. Its own module because both the issuer (which
//! signs with it) and the identity store (which persists it) need it, and neither owns it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse,
};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

/// A signing key could not be generated or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyError(String);

/// An Ed25519 key pair that signs access tokens (`alg: EdDSA`).
///
/// Ed25519 rather than RSA: small keys and signatures, fast, and no parameters to get wrong.
/// The private half is zeroized on drop and never printed.
#[derive(Clone)]
pub struct SigningKey {
    /// PKCS#8 v2 DER, the form ring and jsonwebtoken load and the store persists.
    pkcs8: SecretSlice<u8>,
    /// The 32-byte public key, published in the JWKS.
    public: Vec<u8>,
    /// Derived from the public key, so it is stable across restarts and never collides
    /// between two keys in practice.
    kid: String,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| KeyError("the system random generator failed".into()))?;
        Self::from_pkcs8(document.as_ref())
    }

    /// Loads a key from PKCS#8 DER (v2 as generated here, or v1 as `openssl genpkey` writes).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError(format!("not an Ed25519 PKCS#8 key ({e})")))?;
        let public = pair.public_key().as_ref().to_vec();
        let digest = URL_SAFE_NO_PAD.encode(Sha256::digest(&public));
        let kid = digest.chars().take(16).collect();
        Ok(Self { pkcs8: SecretSlice::from(der.to_vec()), public, kid })
    }

    /// The private key as PKCS#8 DER, for storage.
    pub fn pkcs8_der(&self) -> &[u8] {
        self.pkcs8.expose_secret()
    }

    /// The key id: the first 16 characters of base64url(SHA-256(public key)).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty: OKP`, `crv: Ed25519`, `alg: EdDSA`, `use: sig`).
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(&self.public),
            }),
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_key_when_reloaded_from_its_pkcs8_then_it_has_the_same_kid_and_public_key() {
        let key = SigningKey::generate().unwrap();

        let reloaded = SigningKey::from_pkcs8(key.pkcs8_der()).unwrap();

        assert_eq!(reloaded.kid(), key.kid());
        assert_eq!(reloaded.public_jwk(), key.public_jwk());
        assert_eq!(key.kid().len(), 16);
    }

    #[test]
    fn given_a_key_when_debug_printed_then_no_key_material_appears() {
        let key = SigningKey::generate().unwrap();

        let printed = format!("{key:?}");

        assert!(printed.contains(key.kid()));
        let AlgorithmParameters::OctetKeyPair(okp) = key.public_jwk().algorithm else { panic!() };
        assert!(!printed.contains(&okp.x));
        assert!(!printed.contains(&URL_SAFE_NO_PAD.encode(key.pkcs8_der())));
        assert!(!printed.contains(&format!("{:?}", &key.pkcs8_der()[..8])));
    }

    #[test]
    fn given_a_public_jwk_when_serialized_then_it_has_the_rfc_8037_members() {
        let key = SigningKey::generate().unwrap();

        let json = serde_json::to_value(key.public_jwk()).unwrap();

        assert_eq!(json["kty"], "OKP");
        assert_eq!(json["crv"], "Ed25519");
        assert_eq!(json["alg"], "EdDSA");
        assert_eq!(json["use"], "sig");
        assert_eq!(json["kid"], key.kid());
        assert_eq!(URL_SAFE_NO_PAD.decode(json["x"].as_str().unwrap()).unwrap().len(), 32);
    }

    #[test]
    fn given_bytes_that_are_not_a_key_when_loaded_then_it_fails() {
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
    }
}
