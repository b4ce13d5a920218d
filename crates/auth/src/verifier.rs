//! Access-token verification: the resource-server half of OAuth 2.0.
//!
//! The same code verifies tokens of the built-in issuer and of Amazon Cognito, so the checks
//! here are the production ones whichever issuer is configured. The order matters: the header
//! `alg` is checked against the allow-list before any key is chosen, HMAC is never allowed (a
//! public key used as an HMAC secret would otherwise verify a forged token), and the key must
//! be of the type the algorithm needs.
//!
//! Verifying a signature costs far more CPU than anything else a request does before its
//! database write, and a client sends the same token for every request of its lifetime, so
//! successful verifications are cached (see [`JwtVerifier::verify`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cashflow_domain::MerchantId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{AuthError, Principal, Scope, Scopes};

/// Default name of the claim carrying the merchant id.
pub const DEFAULT_MERCHANT_CLAIM: &str = "merchant_id";

/// Default tolerated clock skew, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Tokens longer than this are rejected before any parsing: ours are well under 1 KiB and
/// Cognito's under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Most verified tokens remembered at once (a few MiB at most).
pub const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Turns a bearer token into a [`Principal`], or says why it cannot.
///
/// A trait so that handlers and their tests do not depend on JWT at all.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` (the part after `Bearer `).
    fn verify(&self, token: &str) -> Result<Principal, AuthError>;

    /// Verifies `token`, possibly waiting for I/O first: an external issuer's verifier may
    /// fetch its JWKS again when a token names a key it does not know yet. The request
    /// extractor calls this; the default is [`TokenVerifier::verify`].
    fn verify_async<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(std::future::ready(self.verify(token)))
    }
}

/// What [`TokenVerifier::verify_async`] returns.
pub type VerifyFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Principal, AuthError>> + Send + 'a>>;

/// What a token must look like to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Exact expected `iss`, e.g. `https://cognito-idp.<region>.amazonaws.com/<pool id>`.
    pub issuer: String,
    /// A value `aud` must contain: this API's identifier.
    pub audience: String,
    /// Allowed header `alg`s. HMAC (`HS*`) is refused by [`JwtVerifier::new`].
    pub algorithms: Vec<Algorithm>,
    /// Claim holding the merchant id (`merchant_id`; with Cognito, e.g. `custom:merchant_id`).
    pub merchant_claim: String,
    /// Tolerated clock skew for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl VerifierConfig {
    /// A config with the default merchant claim and leeway, allowing the asymmetric
    /// algorithms we support: RS256 (Cognito), ES256 and EdDSA (the built-in issuer).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            merchant_claim: DEFAULT_MERCHANT_CLAIM.to_owned(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// Verifies JWT access tokens against a JWKS.
pub struct JwtVerifier {
    config: VerifierConfig,
    /// Swapped whole by [`JwtVerifier::set_jwks`] when the issuer rotates its keys.
    keys: RwLock<Arc<[VerificationKey]>>,
    /// Tokens that verified, so that a client's next requests skip the signature check.
    cache: Mutex<TokenCache>,
}

/// Successful verifications, keyed by the SHA-256 of the token (a leaked cache does not leak
/// usable tokens).
#[derive(Default)]
struct TokenCache {
    entries: HashMap<[u8; 32], CachedToken>,
}

struct CachedToken {
    principal: Principal,
    /// The token's `exp` (seconds since the epoch): past it (and the leeway) the entry is dead.
    exp: u64,
}

impl TokenCache {
    /// Remembers a verification, making room first: expired entries go, and if that is not
    /// enough everything goes (simple, and harmless: the next requests verify again).
    fn insert(&mut self, key: [u8; 32], token: CachedToken, now: u64, leeway: u64) {
        if self.entries.len() >= TOKEN_CACHE_CAPACITY {
            self.entries.retain(|_, cached| !expired(cached.exp, now, leeway));
            if self.entries.len() >= TOKEN_CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(key, token);
    }
}

/// `exp` judged exactly as `jsonwebtoken` judges it, so a cached token is never accepted
/// after a fresh verification would have refused it as expired.
fn expired(exp: u64, now: u64, leeway: u64) -> bool {
    exp < now.saturating_sub(leeway)
}

/// Seconds since the epoch, from the clock `jsonwebtoken` uses.
fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One JWK, ready to verify.
pub(crate) struct VerificationKey {
    pub(crate) kid: Option<String>,
    /// The algorithms this key may verify: those its type supports, narrowed to its own `alg`
    /// if it declares one, and to the configured allow-list.
    algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl JwtVerifier {
    /// Builds a verifier. Fails on a config that would be unsafe or useless: an `HS*`
    /// algorithm, no algorithm, an empty issuer or audience, or a key set with no key usable
    /// for the allowed algorithms.
    pub fn new(config: VerifierConfig, jwks: JwkSet) -> Result<Self, AuthError> {
        if let Some(hmac) = config.algorithms.iter().find(|alg| is_hmac(**alg)) {
            return Err(AuthError::Config(format!(
                "{hmac:?} is not allowed: HMAC algorithms would let a public key act as a secret"
            )));
        }
        if config.algorithms.is_empty() {
            return Err(AuthError::Config("no token algorithm is allowed".into()));
        }
        if config.issuer.is_empty() || config.audience.is_empty() || config.merchant_claim.is_empty() {
            return Err(AuthError::Config("issuer, audience and merchant claim must be set".into()));
        }
        let keys = key_ring(&config, &jwks)?;
        Ok(Self { config, keys: RwLock::new(keys.into()), cache: Mutex::new(TokenCache::default()) })
    }

    /// Replaces the key set, for an issuer that rotated its keys, and forgets every cached
    /// verification (a removed key must stop vouching for its tokens). On error the old keys
    /// stay. The built-in issuer only removes a key once every token it signed has expired.
    pub fn set_jwks(&self, jwks: JwkSet) -> Result<(), AuthError> {
        let keys = key_ring(&self.config, &jwks)?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys.into();
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).entries.clear();
        Ok(())
    }

    /// Verifies the signature and every claim, without the cache.
    fn verify_uncached(&self, token: &str) -> Result<(Principal, Map<String, Value>), AuthError> {
        let header = checked_header(token, &self.config.algorithms)?;
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner));
        let key = select_key(&keys, &header)?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway_secs;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| invalid(describe(e.kind())))?;
        let principal = self.principal(&data.claims)?;
        Ok((principal, data.claims))
    }

    /// The configuration this verifier enforces.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        // Cognito also signs ID tokens with the same keys; only access tokens grant access.
        if let Some(token_use) = claims.get("token_use") {
            if token_use.as_str() != Some("access") {
                return Err(invalid("not an access token (token_use)"));
            }
        }
        let claim = &self.config.merchant_claim;
        let merchant =
            claims.get(claim).and_then(Value::as_str).ok_or_else(|| invalid(format!("missing `{claim}` claim")))?;
        let merchant_id = MerchantId::parse(merchant).map_err(|_| invalid(format!("`{claim}` claim is not a UUID")))?;
        let subject = ["sub", "client_id"]
            .iter()
            .filter_map(|name| claims.get(*name).and_then(Value::as_str))
            .find(|s| !s.is_empty())
            .ok_or_else(|| invalid("no `sub` or `client_id` claim"))?
            .to_owned();
        let client_id = claims.get("client_id").and_then(Value::as_str).map(str::to_owned);
        Ok(Principal { merchant_id, subject, client_id, scopes: scopes_claim(claims.get("scope"))? })
    }
}

impl TokenVerifier for JwtVerifier {
    /// A token that verified before is answered from the cache until its `exp` (plus the
    /// leeway) passes, exactly when a fresh verification would start refusing it: nothing else
    /// a verification checks changes with time (`nbf` only gets more true), and a key rotation
    /// empties the cache. Only successes are cached, so a bad token costs a full verification
    /// every time, as before.
    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too long"));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let leeway = self.config.leeway_secs;
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.entries.get(&key) {
                Some(cached) if !expired(cached.exp, now_secs(), leeway) => return Ok(cached.principal.clone()),
                Some(_) => {
                    cache.entries.remove(&key);
                }
                None => {}
            }
        }
        let (principal, claims) = self.verify_uncached(token)?;
        // `exp` was validated as a number of seconds; one we cannot read back is not cached.
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.insert(key, CachedToken { principal: principal.clone(), exp }, now_secs(), leeway);
        }
        Ok(principal)
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner));
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("JwtVerifier").field("config", &self.config).field("kids", &kids).finish()
    }
}

/// Decodes the header and checks its `alg` against the allow-list, before anything else.
pub(crate) fn checked_header(token: &str, algorithms: &[Algorithm]) -> Result<Header, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("not a compact JWS (three dot-separated parts)"));
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| invalid("header is not base64url"))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid("header is not JSON"))?;
    let alg_name = value.get("alg").and_then(Value::as_str).ok_or_else(|| invalid("header has no alg"))?;
    let alg = Algorithm::from_str(alg_name)
        .ok()
        .filter(|alg| algorithms.contains(alg))
        .ok_or_else(|| invalid(format!("algorithm {:?} is not allowed", truncate(alg_name))))?;
    // RFC 7515 §4.1.11: extensions marked critical must be understood; we understand none.
    if value.get("crit").is_some() {
        return Err(invalid("header has critical extensions"));
    }
    let header: Header = serde_json::from_value(value).map_err(|_| invalid("malformed header"))?;
    debug_assert_eq!(header.alg, alg);
    Ok(header)
}

fn key_ring(config: &VerifierConfig, jwks: &JwkSet) -> Result<Vec<VerificationKey>, AuthError> {
    let keys = usable_keys(jwks, &config.algorithms);
    if keys.is_empty() {
        return Err(AuthError::Config(format!("the key set has no signing key usable with {:?}", config.algorithms)));
    }
    Ok(keys)
}

/// The keys of `jwks` usable with `allowed`; the others are skipped.
pub(crate) fn usable_keys(jwks: &JwkSet, allowed: &[Algorithm]) -> Vec<VerificationKey> {
    jwks.keys.iter().filter_map(|jwk| usable_key(jwk, allowed)).collect()
}

/// The key, if it is a signature key of a type matching an allowed algorithm.
fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerificationKey> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
        // Symmetric (`oct`) keys never verify here, whatever they claim.
        _ => &[],
    };
    // A key that names its algorithm may only be used with that one; an unknown name (an
    // encryption algorithm, say) makes the key unusable.
    let declared = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
        None => None,
    };
    let algorithms: Vec<_> =
        by_type.iter().copied().filter(|alg| allowed.contains(alg) && declared.is_none_or(|d| d == *alg)).collect();
    if algorithms.is_empty() {
        return None;
    }
    match DecodingKey::from_jwk(jwk) {
        Ok(key) => Some(VerificationKey { kid: jwk.common.key_id.clone(), algorithms, key }),
        Err(error) => {
            tracing::warn!(kid = ?jwk.common.key_id, %error, "ignoring malformed JWK");
            None
        }
    }
}

/// The key named by the header `kid`; without a `kid`, the only key there is.
pub(crate) fn select_key<'k>(keys: &'k [VerificationKey], header: &Header) -> Result<&'k VerificationKey, AuthError> {
    let alg = header.alg;
    match &header.kid {
        Some(kid) => {
            let mut named = keys.iter().filter(|k| k.kid.as_deref() == Some(kid.as_str())).peekable();
            if named.peek().is_none() {
                return Err(invalid(format!("unknown key id {:?}", truncate(kid))));
            }
            named
                .find(|k| k.algorithms.contains(&alg))
                .ok_or_else(|| invalid(format!("key {:?} cannot verify {alg:?}", truncate(kid))))
        }
        None => match keys {
            [only] if only.algorithms.contains(&alg) => Ok(only),
            [_] => Err(invalid(format!("the key cannot verify {alg:?}"))),
            _ => Err(invalid("token has no kid and the key set has several keys")),
        },
    }
}

/// The `scope` claim: a space-separated string (RFC 8693, Cognito) or, leniently, an array.
/// Names we do not know are other APIs' scopes and are ignored.
pub(crate) fn scopes_claim(value: Option<&Value>) -> Result<Scopes, AuthError> {
    let parse = |name: &str| Scope::parse(name).ok();
    match value {
        None | Some(Value::Null) => Ok(Scopes::empty()),
        Some(Value::String(s)) => Ok(s.split_ascii_whitespace().filter_map(parse).collect()),
        Some(Value::Array(items)) => Ok(items.iter().filter_map(Value::as_str).filter_map(parse).collect()),
        Some(_) => Err(invalid("`scope` claim is neither a string nor a list")),
    }
}

pub(crate) fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing `{claim}` claim"),
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key".into(),
        other => format!("malformed token ({other:?})"),
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

pub(crate) fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::InvalidToken(reason.into())
}

/// Attacker-chosen text going to logs stays short.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::jwk::{CommonParameters, EllipticCurveKeyParameters, EllipticCurveKeyType, KeyAlgorithm};
    use jsonwebtoken::{encode, EncodingKey};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    use super::*;
    use crate::key::SigningKey;

    const ISSUER: &str = "https://issuer.test";
    const AUDIENCE: &str = "cashflow";

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn config(algorithms: &[Algorithm]) -> VerifierConfig {
        VerifierConfig { algorithms: algorithms.to_vec(), ..VerifierConfig::new(ISSUER, AUDIENCE) }
    }

    fn claims(merchant: MerchantId) -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "pos-terminal-1",
            "exp": now() + 600,
            "iat": now(),
            "scope": "entries:write entries:read",
            "merchant_id": merchant.to_string(),
        })
    }

    fn ed_header(key: &SigningKey) -> Header {
        Header { kid: Some(key.kid().to_owned()), ..Header::new(Algorithm::EdDSA) }
    }

    fn sign_ed(key: &SigningKey, header: &Header, claims: &Value) -> String {
        encode(header, claims, &EncodingKey::from_ed_der(key.pkcs8_der())).unwrap()
    }

    /// A verifier trusting `key`, and a token signed by it with `claims`.
    fn ed_setup(claims: &Value) -> (JwtVerifier, String) {
        let key = SigningKey::generate().unwrap();
        let verifier = JwtVerifier::new(config(&[Algorithm::EdDSA]), JwkSet { keys: vec![key.public_jwk()] }).unwrap();
        (verifier, sign_ed(&key, &ed_header(&key), claims))
    }

    fn rejected_because(result: Result<Principal, AuthError>, expected: &str) {
        match result {
            Err(AuthError::InvalidToken(reason)) => {
                assert!(reason.contains(expected), "rejected for `{reason}`, expected `{expected}`")
            }
            other => panic!("expected an invalid token ({expected}), got {other:?}"),
        }
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn given_a_valid_eddsa_token_when_verified_then_merchant_subject_and_scopes_are_taken_from_it() {
        let merchant = MerchantId::new();
        let (verifier, token) = ed_setup(&claims(merchant));

        let principal = verifier.verify(&token).unwrap();

        assert_eq!(principal.merchant_id, merchant);
        assert_eq!(principal.subject, "pos-terminal-1");
        assert_eq!(principal.scopes, Scopes::from_iter([Scope::EntriesWrite, Scope::EntriesRead]));
    }

    #[test]
    fn given_an_expired_token_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims["exp"] = json!(now() - 3600);
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "expired");
    }

    #[test]
    fn given_a_token_expired_within_the_leeway_when_verified_then_it_is_accepted() {
        let mut claims = claims(MerchantId::new());
        claims["exp"] = json!(now() - 5);
        let (verifier, token) = ed_setup(&claims);

        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn given_a_token_without_exp_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims.as_object_mut().unwrap().remove("exp");
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "`exp`");
    }

    #[test]
    fn given_a_token_not_yet_valid_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims["nbf"] = json!(now() + 3600);
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "nbf");
    }

    #[test]
    fn given_a_token_from_another_issuer_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims["iss"] = json!("https://issuer.test.evil");
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "issuer");
    }

    #[test]
    fn given_a_token_without_issuer_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims.as_object_mut().unwrap().remove("iss");
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "`iss`");
    }

    #[test]
    fn given_a_token_for_another_audience_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims["aud"] = json!(["billing", "crm"]);
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "audience");
    }

    #[test]
    fn given_a_token_whose_audience_list_contains_ours_when_verified_then_it_is_accepted() {
        let mut claims = claims(MerchantId::new());
        claims["aud"] = json!(["billing", AUDIENCE]);
        let (verifier, token) = ed_setup(&claims);

        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn given_a_token_signed_by_another_key_with_the_same_kid_when_verified_then_the_signature_fails() {
        let trusted = SigningKey::generate().unwrap();
        let attacker = SigningKey::generate().unwrap();
        let verifier =
            JwtVerifier::new(config(&[Algorithm::EdDSA]), JwkSet { keys: vec![trusted.public_jwk()] }).unwrap();
        let forged = sign_ed(&attacker, &ed_header(&trusted), &claims(MerchantId::new()));

        rejected_because(verifier.verify(&forged), "signature");
    }

    #[test]
    fn given_a_token_whose_payload_was_altered_when_verified_then_the_signature_fails() {
        let (verifier, token) = ed_setup(&claims(MerchantId::new()));
        let parts: Vec<_> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64(&claims(MerchantId::new())), parts[2]);

        rejected_because(verifier.verify(&tampered), "signature");
    }

    #[test]
    fn given_an_unsigned_alg_none_token_when_verified_then_it_is_rejected() {
        let (verifier, _) = ed_setup(&claims(MerchantId::new()));
        let header = json!({"alg": "none", "typ": "JWT"});
        let token = format!("{}.{}.", b64(&header), b64(&claims(MerchantId::new())));

        rejected_because(verifier.verify(&token), "not allowed");
    }

    #[test]
    fn given_an_hs256_token_keyed_with_the_public_key_when_verified_then_it_is_rejected() {
        let key = SigningKey::generate().unwrap();
        let jwk = key.public_jwk();
        let verifier = JwtVerifier::new(config(&[Algorithm::EdDSA]), JwkSet { keys: vec![jwk.clone()] }).unwrap();
        let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else { panic!("not an OKP key") };
        let header = Header { kid: Some(key.kid().to_owned()), ..Header::new(Algorithm::HS256) };
        let claims = claims(MerchantId::new());
        // Both forms an attacker might try: the raw public key and its JWK text.
        for secret in [URL_SAFE_NO_PAD.decode(&okp.x).unwrap(), okp.x.as_bytes().to_vec()] {
            let token = encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            rejected_because(verifier.verify(&token), "not allowed");
        }
    }

    #[test]
    fn given_a_config_allowing_hmac_when_building_the_verifier_then_it_is_refused() {
        let key = SigningKey::generate().unwrap();
        let result =
            JwtVerifier::new(config(&[Algorithm::EdDSA, Algorithm::HS256]), JwkSet { keys: vec![key.public_jwk()] });

        assert!(matches!(result, Err(AuthError::Config(_))), "{result:?}");
    }

    #[test]
    fn given_a_token_with_an_unknown_kid_when_verified_then_it_is_rejected() {
        let key = SigningKey::generate().unwrap();
        let verifier = JwtVerifier::new(config(&[Algorithm::EdDSA]), JwkSet { keys: vec![key.public_jwk()] }).unwrap();
        let header = Header { kid: Some("rotated-away".into()), ..Header::new(Algorithm::EdDSA) };
        let token = sign_ed(&key, &header, &claims(MerchantId::new()));

        rejected_because(verifier.verify(&token), "unknown key id");
    }

    #[test]
    fn given_no_kid_and_a_single_key_when_verified_then_that_key_is_used() {
        let key = SigningKey::generate().unwrap();
        let verifier = JwtVerifier::new(config(&[Algorithm::EdDSA]), JwkSet { keys: vec![key.public_jwk()] }).unwrap();
        let token = sign_ed(&key, &Header::new(Algorithm::EdDSA), &claims(MerchantId::new()));

        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn given_no_kid_and_several_keys_when_verified_then_it_is_rejected() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let jwks = JwkSet { keys: vec![key.public_jwk(), other.public_jwk()] };
        let verifier = JwtVerifier::new(config(&[Algorithm::EdDSA]), jwks).unwrap();
        let token = sign_ed(&key, &Header::new(Algorithm::EdDSA), &claims(MerchantId::new()));

        rejected_because(verifier.verify(&token), "no kid");
    }

    #[test]
    fn given_a_token_without_the_merchant_claim_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims.as_object_mut().unwrap().remove("merchant_id");
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "`merchant_id`");
    }

    #[test]
    fn given_a_merchant_claim_that_is_not_a_uuid_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims["merchant_id"] = json!("acme");
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "not a UUID");
    }

    #[test]
    fn given_a_configured_merchant_claim_name_when_verified_then_that_claim_is_read() {
        let merchant = MerchantId::new();
        let key = SigningKey::generate().unwrap();
        let config = VerifierConfig { merchant_claim: "custom:merchant_id".into(), ..config(&[Algorithm::EdDSA]) };
        let verifier = JwtVerifier::new(config, JwkSet { keys: vec![key.public_jwk()] }).unwrap();
        let mut claims = claims(MerchantId::new());
        claims["custom:merchant_id"] = json!(merchant.to_string());

        let principal = verifier.verify(&sign_ed(&key, &ed_header(&key), &claims)).unwrap();

        assert_eq!(principal.merchant_id, merchant);
    }

    #[test]
    fn given_cognito_style_scopes_when_verified_then_known_ones_are_kept_and_others_ignored() {
        let mut claims = claims(MerchantId::new());
        claims["scope"] =
            json!("https://api.cashflow/entries:write cashflow/reports:read aws.cognito.signin.user.admin openid");
        let (verifier, token) = ed_setup(&claims);

        let principal = verifier.verify(&token).unwrap();

        assert_eq!(principal.scopes, Scopes::from_iter([Scope::EntriesWrite, Scope::ReportsRead]));
    }

    #[test]
    fn given_a_token_without_sub_when_verified_then_client_id_is_the_subject() {
        let mut claims = claims(MerchantId::new());
        claims.as_object_mut().unwrap().remove("sub");
        claims["client_id"] = json!("cf_abc");
        let (verifier, token) = ed_setup(&claims);

        assert_eq!(verifier.verify(&token).unwrap().subject, "cf_abc");
    }

    #[test]
    fn given_a_cognito_id_token_when_verified_then_it_is_rejected() {
        let mut claims = claims(MerchantId::new());
        claims["token_use"] = json!("id");
        let (verifier, token) = ed_setup(&claims);

        rejected_because(verifier.verify(&token), "token_use");
    }

    #[test]
    fn given_garbage_when_verified_then_it_is_rejected() {
        let (verifier, _) = ed_setup(&claims(MerchantId::new()));

        for garbage in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(matches!(verifier.verify(garbage), Err(AuthError::InvalidToken(_))), "{garbage:?}");
        }
    }

    // --- RS256: Cognito's algorithm -------------------------------------------------------

    /// A fixed 2048-bit test key pair (PKCS#1 PEM and its public JWK), generated with
    /// `openssl genrsa -traditional 2048` for these tests only.
    const RSA_PEM: &str = include_str!("../testdata/rsa_test_key.pem");
    const RSA_JWK: &str = include_str!("../testdata/rsa_test_key.jwk.json");

    fn rsa_encoding_key() -> EncodingKey {
        let body: String = RSA_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        EncodingKey::from_rsa_der(&STANDARD.decode(body).unwrap())
    }

    fn rsa_jwk() -> Jwk {
        serde_json::from_str(RSA_JWK).unwrap()
    }

    fn rs256_header() -> Header {
        Header { kid: Some("rsa-test-1".into()), ..Header::new(Algorithm::RS256) }
    }

    #[test]
    fn given_an_rs256_token_and_an_rsa_jwk_when_verified_then_it_is_accepted() {
        let merchant = MerchantId::new();
        let verifier = JwtVerifier::new(config(&[Algorithm::RS256]), JwkSet { keys: vec![rsa_jwk()] }).unwrap();
        let token = encode(&rs256_header(), &claims(merchant), &rsa_encoding_key()).unwrap();

        assert_eq!(verifier.verify(&token).unwrap().merchant_id, merchant);
    }

    #[test]
    fn given_an_rs256_token_when_only_eddsa_is_allowed_then_it_is_rejected_before_key_lookup() {
        let key = SigningKey::generate().unwrap();
        let jwks = JwkSet { keys: vec![key.public_jwk(), rsa_jwk()] };
        let verifier = JwtVerifier::new(config(&[Algorithm::EdDSA]), jwks).unwrap();
        let token = encode(&rs256_header(), &claims(MerchantId::new()), &rsa_encoding_key()).unwrap();

        rejected_because(verifier.verify(&token), "not allowed");
    }

    #[test]
    fn given_a_header_alg_that_does_not_match_the_jwk_type_when_verified_then_it_is_rejected() {
        let ed = SigningKey::generate().unwrap();
        let verifier =
            JwtVerifier::new(config(&[Algorithm::RS256, Algorithm::EdDSA]), JwkSet { keys: vec![rsa_jwk()] }).unwrap();
        // An EdDSA token naming the RSA key.
        let header = Header { kid: Some("rsa-test-1".into()), ..Header::new(Algorithm::EdDSA) };
        let token = sign_ed(&ed, &header, &claims(MerchantId::new()));

        rejected_because(verifier.verify(&token), "cannot verify");
    }

    #[test]
    fn given_a_jwk_whose_alg_contradicts_its_type_when_building_the_verifier_then_no_key_is_usable() {
        let mut jwk = SigningKey::generate().unwrap().public_jwk();
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);

        let result = JwtVerifier::new(config(&[Algorithm::RS256, Algorithm::EdDSA]), JwkSet { keys: vec![jwk] });

        assert!(matches!(result, Err(AuthError::Config(_))), "{result:?}");
    }

    #[test]
    fn given_a_cognito_jwks_document_when_parsed_then_the_rsa_key_verifies() {
        // The shape Cognito serves at /.well-known/jwks.json.
        let jwk = rsa_jwk();
        let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else { panic!("not RSA") };
        let document = json!({"keys": [{"alg": "RS256", "e": rsa.e, "kid": "rsa-test-1", "kty": "RSA", "n": rsa.n, "use": "sig"}]});
        let jwks: JwkSet = serde_json::from_value(document).unwrap();
        let verifier = JwtVerifier::new(VerifierConfig::new(ISSUER, AUDIENCE), jwks).unwrap();
        let token = encode(&rs256_header(), &claims(MerchantId::new()), &rsa_encoding_key()).unwrap();

        assert!(verifier.verify(&token).is_ok());
    }

    // --- ES256 ----------------------------------------------------------------------------

    #[test]
    fn given_an_es256_token_and_a_p256_jwk_when_verified_then_it_is_accepted() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let jwk = Jwk {
            common: CommonParameters { key_id: Some("ec-1".into()), ..Default::default() },
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: URL_SAFE_NO_PAD.encode(&point[1..33]),
                y: URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        };
        let verifier = JwtVerifier::new(config(&[Algorithm::ES256]), JwkSet { keys: vec![jwk] }).unwrap();
        let header = Header { kid: Some("ec-1".into()), ..Header::new(Algorithm::ES256) };
        let token = encode(&header, &claims(MerchantId::new()), &EncodingKey::from_ec_der(pkcs8.as_ref())).unwrap();

        assert!(verifier.verify(&token).is_ok());
    }

    fn cached_tokens(verifier: &JwtVerifier) -> usize {
        verifier.cache.lock().unwrap().entries.len()
    }

    #[test]
    fn given_a_verified_token_when_verified_again_then_the_cache_answers_with_the_same_principal() {
        let merchant = MerchantId::new();
        let (verifier, token) = ed_setup(&claims(merchant));

        let first = verifier.verify(&token).unwrap();
        let second = verifier.verify(&token).unwrap();

        assert_eq!(second, first);
        assert_eq!(second.merchant_id, merchant);
        assert_eq!(cached_tokens(&verifier), 1);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert!(verifier.cache.lock().unwrap().entries.contains_key(&key), "keyed by the token's SHA-256");
    }

    #[test]
    fn given_a_cached_token_when_its_exp_passes_then_it_is_rejected_like_a_fresh_one() {
        // Given a verifier without leeway and a token expiring in two seconds, verified (cached)
        let key = SigningKey::generate().unwrap();
        let verifier = JwtVerifier::new(
            VerifierConfig { leeway_secs: 0, ..config(&[Algorithm::EdDSA]) },
            JwkSet { keys: vec![key.public_jwk()] },
        )
        .unwrap();
        let mut claims = claims(MerchantId::new());
        let exp = now() + 2;
        claims["exp"] = json!(exp);
        let token = sign_ed(&key, &ed_header(&key), &claims);
        assert!(verifier.verify(&token).is_ok());
        assert_eq!(cached_tokens(&verifier), 1);

        // When its exp has passed
        while now() <= exp {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }

        // Then the cache does not vouch for it any more
        rejected_because(verifier.verify(&token), "expired");
        assert_eq!(cached_tokens(&verifier), 0);
    }

    #[test]
    fn given_a_cached_token_when_the_leeway_has_not_run_out_then_it_is_still_accepted() {
        let mut claims = claims(MerchantId::new());
        claims["exp"] = json!(now() - 5);
        let (verifier, token) = ed_setup(&claims);

        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.verify(&token).is_ok(), "within the 30 s leeway, as a fresh verification");
    }

    #[test]
    fn given_a_cached_token_when_another_token_has_the_same_claims_then_it_is_verified_on_its_own() {
        // Given a cached token
        let trusted = SigningKey::generate().unwrap();
        let attacker = SigningKey::generate().unwrap();
        let verifier =
            JwtVerifier::new(config(&[Algorithm::EdDSA]), JwkSet { keys: vec![trusted.public_jwk()] }).unwrap();
        let claims = claims(MerchantId::new());
        let genuine = sign_ed(&trusted, &ed_header(&trusted), &claims);
        verifier.verify(&genuine).unwrap();

        // When a token with the very same header and claims but another signature comes
        let forged = sign_ed(&attacker, &ed_header(&trusted), &claims);

        // Then it is verified (and refused), not taken from the cache
        rejected_because(verifier.verify(&forged), "signature");
        assert_eq!(cached_tokens(&verifier), 1, "refusals are not cached");
    }

    #[test]
    fn given_a_full_cache_when_a_token_is_added_then_expired_entries_go_first_and_the_size_stays_bounded() {
        let principal = Principal {
            merchant_id: MerchantId::new(),
            subject: "s".into(),
            client_id: None,
            scopes: Scopes::from_iter([Scope::EntriesRead]),
        };
        let cached = |exp| CachedToken { principal: principal.clone(), exp };
        let now = now();
        let mut cache = TokenCache::default();
        for i in 0..TOKEN_CACHE_CAPACITY as u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            // Half of them long expired
            cache.insert(key, cached(if i % 2 == 0 { now - 3600 } else { now + 600 }), now, 30);
        }
        assert_eq!(cache.entries.len(), TOKEN_CACHE_CAPACITY);

        cache.insert([0xff; 32], cached(now + 600), now, 30);
        assert_eq!(cache.entries.len(), TOKEN_CACHE_CAPACITY / 2 + 1, "only the expired ones were evicted");

        for i in 0..TOKEN_CACHE_CAPACITY as u32 {
            let mut key = [0xee; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(key, cached(now + 600), now, 30);
        }
        assert!(cache.entries.len() <= TOKEN_CACHE_CAPACITY);
    }
}
