//! How credentials are minted, validated, hashed and compared: the primitives
//! [`crate::identities`] builds its checks from.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cashflow_domain::MerchantId;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::store::StoreError;
use crate::Scopes;

/// Password hashing with argon2id, off the async worker threads.
#[derive(Clone)]
pub(crate) struct Passwords {
    /// Cost of new password hashes. Verification reads the cost from each stored hash.
    params: Params,
    /// A hash with `params` that unknown usernames are verified against, so that a login for a
    /// user who does not exist costs the same as one who does.
    dummy_hash: Arc<OnceLock<String>>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new(Params::DEFAULT)
    }
}

impl Passwords {
    pub(crate) fn new(params: Params) -> Self {
        Self { params, dummy_hash: Arc::default() }
    }

    /// The PHC string of a new password.
    pub(crate) async fn hash(&self, password: &SecretString) -> Result<String, StoreError> {
        let salt = SaltString::encode_b64(&random::<16>()?).map_err(|e| StoreError::Crypto(e.to_string()))?;
        let password = password.clone();
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            argon2id(params).hash_password(password.expose_secret().as_bytes(), &salt).map(|hash| hash.to_string())
        })
        .await
        .map_err(|e| StoreError::Crypto(e.to_string()))?
        .map_err(|e| StoreError::Crypto(e.to_string()))
    }

    /// Whether `password` matches `stored`. Without a stored hash (unknown user) the password is
    /// verified against a dummy hash anyway and the answer is no, in the same time.
    pub(crate) async fn verify(&self, stored: Option<String>, password: &str) -> Result<bool, StoreError> {
        let password = SecretString::from(password);
        let params = self.params.clone();
        let dummy = Arc::clone(&self.dummy_hash);
        tokio::task::spawn_blocking(move || {
            let password = password.expose_secret().as_bytes();
            match stored {
                Some(hash) => verify_password(password, &hash),
                None => {
                    let _ = verify_password(password, dummy_hash(&dummy, params));
                    Ok(false)
                }
            }
        })
        .await
        .map_err(|e| StoreError::Crypto(e.to_string()))?
    }
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Verifies with the algorithm and cost recorded in the hash itself.
fn verify_password(password: &[u8], hash: &str) -> Result<bool, StoreError> {
    let parsed = PasswordHash::new(hash).map_err(|e| StoreError::Corrupt(format!("password hash: {e}")))?;
    Ok(Argon2::default().verify_password(password, &parsed).is_ok())
}

fn dummy_hash(cell: &OnceLock<String>, params: Params) -> &str {
    cell.get_or_init(|| {
        let salt = SaltString::encode_b64(b"cashflow-dummy-salt").ok();
        salt.and_then(|salt| argon2id(params).hash_password(b"not a password", &salt).ok().map(|hash| hash.to_string()))
            .unwrap_or_default()
    })
}

/// A client's optional display name, trimmed; at most 120 characters, no control characters.
pub(crate) fn client_name(name: Option<&str>) -> Result<Option<&str>, StoreError> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 120 || n.chars().any(char::is_control)) {
        return Err(StoreError::Invalid(
            "client name must be at most 120 characters without control characters".into(),
        ));
    }
    Ok(name)
}

/// A new client id (`cf_` and 128 random bits) and secret (256 random bits).
pub(crate) fn new_client_credentials() -> Result<(String, String), StoreError> {
    let client_id = format!("cf_{}", URL_SAFE_NO_PAD.encode(random::<16>()?));
    let secret = URL_SAFE_NO_PAD.encode(random::<32>()?);
    Ok((client_id, secret))
}

/// Whether `presented` is the secret whose SHA-256 is `stored`. An unknown client (`None`)
/// costs the same comparison, against a hash no secret has.
pub(crate) fn client_secret_matches(stored: Option<&str>, presented: &str) -> bool {
    let presented = sha256_hex(presented);
    match stored {
        Some(stored) => constant_time_eq(presented.as_bytes(), stored.as_bytes()),
        None => {
            let _ = constant_time_eq(presented.as_bytes(), &[b'0'; 64]);
            false
        }
    }
}

/// The rules of a new user's credentials.
pub(crate) fn check_new_user(username: &str, password: &SecretString) -> Result<(), StoreError> {
    if !valid_username(username) {
        return Err(StoreError::Invalid(
            "username must be 3 to 64 characters: letters, digits, `.`, `_`, `@` or `-`".into(),
        ));
    }
    if password.expose_secret().is_empty() {
        return Err(StoreError::Invalid("password must not be empty".into()));
    }
    Ok(())
}

pub(crate) fn valid_username(username: &str) -> bool {
    (3..=64).contains(&username.len())
        && username.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Crypto("the system random generator failed".into()))?;
    Ok(bytes)
}

/// Lowercase hex SHA-256: how client secrets are stored.
pub(crate) fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal-length comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn parse_merchant(text: &str) -> Result<MerchantId, StoreError> {
    MerchantId::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn parse_scopes(text: &str) -> Result<Scopes, StoreError> {
    Scopes::parse_list(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}
