//! The browser session and the CSRF defence.
//!
//! The session is one cookie holding the API access token: `HttpOnly` (no page script can
//! read it), `SameSite=Strict` (the browser never sends it on a request started by another
//! site; every flow of ours is same-site, so nothing needs `Lax`), `Secure` when the public URL
//! is https, and expiring with the token. Every form carries a CSRF token, an HMAC of the
//! session under a key of this process, checked on every POST; the sign-in form, before there
//! is a session, is bound the same way to a random pre-session cookie (no login CSRF). By
//! default the keys are drawn at start, so a restart changes them and a form rendered before it
//! is refused once and shown again. Several processes behind one front (the split deployment
//! scaled out, Lambda's execution environments) must share them, or a form rendered by one is
//! refused by the next: given one secret (`--web-secret`), every process derives the same keys
//! from it ([`Sessions::from_secret`]).
//!
//! A sign-in through an OpenID Provider keeps its secrets (state, nonce, PKCE verifier) in one
//! more cookie, sealed (AES-256-GCM under another key of this process, so the browser can
//! neither read nor alter it), `HttpOnly`, limited to the callback's path and ten minutes. It is
//! the one `SameSite=Lax` cookie: the provider sends the browser back with a cross-site
//! navigation, on which a `Strict` cookie would not be sent.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};

/// The cookie holding the access token.
pub const SESSION: &str = "cf_session";
/// The cookie binding the sign-in form before a session exists.
pub const PRE_SESSION: &str = "cf_pre";
/// The language chosen with the switch.
pub const LANG: &str = "cf_lang";
/// The sealed secrets of an OpenID sign-in in progress.
pub const FLOW: &str = "cf_oidc";
/// The only path the flow cookie is sent to.
pub const FLOW_PATH: &str = "/auth/callback";
/// The shortest secret the keys of several processes may be derived from, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// How long a sign-in at the provider may take, in seconds.
pub const FLOW_MAX_AGE_SECS: u64 = 600;

/// Makes and checks CSRF tokens, seals the sign-in flow, and writes the cookies with the right
/// flags.
pub struct Sessions {
    key: hmac::Key,
    /// Seals the flow cookie; `None` only if the system had no randomness for it (then an
    /// OpenID sign-in cannot start, and says so).
    sealing: Option<LessSafeKey>,
    secure: bool,
}

impl Sessions {
    /// Fresh random keys, this process's own; `secure` adds the `Secure` flag (public URL on
    /// https).
    pub fn new(secure: bool) -> Self {
        let mut secret = [0u8; 32];
        // The system RNG failing is not recoverable in any useful way; the failure is logged and
        // the sign-in flow refuses to start (no sealing key) rather than use a guessable one.
        if SystemRandom::new().fill(&mut secret).is_err() {
            tracing::error!("no system randomness for the web app's keys");
            return Self { key: hmac::Key::new(hmac::HMAC_SHA256, &secret), sealing: None, secure };
        }
        Self::from_secret(&secret, secure)
    }

    /// The keys every process given `secret` derives alike (HKDF-SHA256, one label per use), so
    /// that each accepts the forms and sign-in flows of the others. `secret` should be at least
    /// [`MIN_SECRET_LEN`] random bytes (the caller checks; see `--web-secret`).
    pub fn from_secret(secret: &[u8], secure: bool) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"cashflow-web/v1").extract(secret);
        let derive = |label: &[u8]| {
            let mut key = [0u8; 32];
            let info = [label];
            prk.expand(&info, hkdf::HKDF_SHA256).and_then(|okm| okm.fill(&mut key)).ok().map(|()| key)
        };
        let csrf = derive(b"csrf").unwrap_or_default();
        let sealing =
            derive(b"sign-in-flow").and_then(|key| UnboundKey::new(&AES_256_GCM, &key).ok()).map(LessSafeKey::new);
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, &csrf), sealing, secure }
    }

    /// Whether cookies carry the `Secure` flag.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// `plaintext` encrypted and authenticated for `purpose` (a value sealed for one purpose
    /// does not open for another), URL-safe; `None` without a key or randomness.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Option<String> {
        let key = self.sealing.as_ref()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose.as_bytes()), &mut sealed)
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// What [`Sessions::seal`] sealed for `purpose` under this process's key; `None` for
    /// anything else (altered, another purpose, another process, not ours at all).
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        let key = self.sealing.as_ref()?;
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buffer).ok()?;
        Some(plaintext.to_vec())
    }

    /// `Set-Cookie` for the sealed flow of a sign-in through the provider: sent back only to
    /// the callback, on the provider's cross-site redirect (`Lax`), for ten minutes.
    pub fn flow_cookie(&self, sealed: &str) -> Option<HeaderValue> {
        self.flow_cookie_for(sealed, FLOW_MAX_AGE_SECS)
    }

    /// `Set-Cookie` that removes the flow cookie (a flow is used once).
    pub fn clear_flow(&self) -> Option<HeaderValue> {
        self.flow_cookie_for("", 0)
    }

    fn flow_cookie_for(&self, value: &str, max_age_secs: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{FLOW}={value}; Path={FLOW_PATH}; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
        ))
        .ok()
    }

    /// The CSRF token for a session (or pre-session) value.
    pub fn csrf(&self, session: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, format!("csrf|{session}").as_bytes()))
    }

    /// Whether `token` is the CSRF token of `session` (constant time).
    pub fn csrf_ok(&self, session: &str, token: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else { return false };
        hmac::verify(&self.key, format!("csrf|{session}").as_bytes(), &tag).is_ok()
    }

    /// `Set-Cookie` for the session, living as long as the token.
    pub fn session_cookie(&self, token: &str, max_age_secs: u64) -> Option<HeaderValue> {
        self.cookie(SESSION, token, max_age_secs)
    }

    /// `Set-Cookie` for a new pre-session value, and that value.
    pub fn pre_session_cookie(&self) -> (String, Option<HeaderValue>) {
        let value = random_token();
        let cookie = self.cookie(PRE_SESSION, &value, 3600);
        (value, cookie)
    }

    /// `Set-Cookie` that removes `name`.
    pub fn clear(&self, name: &str) -> Option<HeaderValue> {
        self.cookie(name, "", 0)
    }

    /// `Set-Cookie` for the language switch (a year).
    pub fn lang_cookie(&self, tag: &str) -> Option<HeaderValue> {
        self.cookie(LANG, tag, 365 * 24 * 3600)
    }

    fn cookie(&self, name: &str, value: &str, max_age_secs: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
        ))
        .ok()
    }
}

/// What the signed-in user's role allows, read from the `scope` claim of the access token, so
/// that a page shows only what its user may do (a cashier sees no reports, an accountant no
/// record form). It decides what is *shown* only: the token's signature is not checked here,
/// and the API checks it, with the scopes, on every call the page makes, so a forged claim gains
/// nothing but a 403.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Can {
    /// `entries:write`: record and reverse.
    pub record: bool,
    /// `entries:read`: list entries.
    pub read_entries: bool,
    /// `reports:read`: balances, reports, the CSV.
    pub read_reports: bool,
    /// `days:close`: close the till.
    pub close_day: bool,
}

impl Can {
    /// From a space-separated OAuth 2.0 scope list.
    pub fn of_scopes(scopes: &str) -> Self {
        let has = |wanted: &str| scopes.split_whitespace().any(|s| s == wanted);
        Self {
            record: has("entries:write"),
            read_entries: has("entries:read"),
            read_reports: has("reports:read"),
            close_day: has("days:close"),
        }
    }

    /// From the scopes a verifier granted.
    pub fn of_granted(scopes: cashflow_auth::Scopes) -> Self {
        use cashflow_auth::Scope;
        Self {
            record: scopes.contains(Scope::EntriesWrite),
            read_entries: scopes.contains(Scope::EntriesRead),
            read_reports: scopes.contains(Scope::ReportsRead),
            close_day: scopes.contains(Scope::DaysClose),
        }
    }

    /// From a JWT access token's payload; nothing for a token that is not a readable JWT.
    pub fn of_token(token: &str) -> Self {
        Self::of_scopes(&claim(token, "scope").unwrap_or_default())
    }
}

/// Who the session is (the token's `sub`), to keep one user's offline entries from being sent
/// in another's session on a shared device. Unverified, like [`Can`]: the API decides.
pub fn subject(token: &str) -> Option<String> {
    claim(token, "sub")
}

/// The token's issuer (`iss`), unverified: whether the session came through the OpenID
/// Provider, whose logout endpoint signing out then visits.
pub fn issuer(token: &str) -> Option<String> {
    claim(token, "iss")
}

/// A string claim of a JWT's payload, read without checking the signature.
fn claim(token: &str, name: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims = serde_json::from_slice::<serde_json::Value>(&json).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// 32 random bytes, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // Without randomness, a UUID v4 (its own RNG) is still unpredictable enough here.
        return uuid::Uuid::new_v4().simple().to_string();
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_is_valid_only_for_its_own_session() {
        let sessions = Sessions::new(false);
        let token = sessions.csrf("session-a");
        assert!(sessions.csrf_ok("session-a", &token));
        assert!(!sessions.csrf_ok("session-b", &token));
        assert!(!sessions.csrf_ok("session-a", "forged"));
        assert!(!Sessions::new(false).csrf_ok("session-a", &token), "another process key refuses it");
    }

    #[test]
    fn processes_given_one_secret_accept_each_others_forms_and_flows_and_no_one_elses() {
        // Given two processes (two Lambda environments) started with the same secret
        let secret = b"0123456789abcdef0123456789abcdef";
        let (a, b) = (Sessions::from_secret(secret, true), Sessions::from_secret(secret, true));

        // Then a form rendered by one is accepted by the other, and a flow sealed by one opens there
        assert!(b.csrf_ok("session-a", &a.csrf("session-a")));
        let sealed = a.seal("flow", b"state=s").unwrap();
        assert_eq!(b.open("flow", &sealed).as_deref(), Some(&b"state=s"[..]));

        // And a process with another secret, or with keys of its own, accepts neither
        let other = Sessions::from_secret(b"fedcba9876543210fedcba9876543210", true);
        assert!(!other.csrf_ok("session-a", &a.csrf("session-a")));
        assert_eq!(other.open("flow", &sealed), None);
        assert_eq!(Sessions::new(true).open("flow", &sealed), None);
        // And the CSRF key is not the sealing key: a CSRF token reveals nothing of the flow key
        assert_ne!(
            a.csrf("x"),
            URL_SAFE_NO_PAD.encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), b"csrf|x"))
        );
    }

    #[test]
    fn what_a_user_can_do_is_read_from_the_tokens_scope_claim() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"ana","scope":"entries:write entries:read"}"#);
        let cashier = Can::of_token(&format!("eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln"));
        assert_eq!(cashier, Can { record: true, read_entries: true, read_reports: false, close_day: false });
        assert_eq!(subject(&format!("h.{payload}.s")).as_deref(), Some("ana"));
        let accountant = Can::of_scopes("entries:read reports:read");
        assert!(!accountant.record && accountant.read_reports && accountant.read_entries);
        assert_eq!(Can::of_token("not-a-jwt"), Can::default(), "an unreadable token shows nothing");
        assert!(!Can::of_scopes("entries:writer").record, "whole scope names only");
    }

    #[test]
    fn a_sealed_value_opens_only_unaltered_for_its_purpose_under_its_process_key() {
        let sessions = Sessions::new(true);
        let sealed = sessions.seal("flow", b"state=s;verifier=v").unwrap();
        assert!(!sealed.contains("verifier"), "the browser cannot read it");
        assert_eq!(sessions.open("flow", &sealed).as_deref(), Some(&b"state=s;verifier=v"[..]));
        assert_eq!(sessions.open("other", &sealed), None, "sealed for another purpose");
        assert_eq!(Sessions::new(true).open("flow", &sealed), None, "another process's key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(sessions.open("flow", &URL_SAFE_NO_PAD.encode(bytes)), None, "altered");
        assert_eq!(sessions.open("flow", "c2hvcnQ"), None, "shorter than a nonce");
        assert_ne!(sessions.seal("flow", b"x"), sessions.seal("flow", b"x"), "a fresh nonce each time");
        let cookie = sessions.flow_cookie(&sealed).unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("Path=/auth/callback; HttpOnly; SameSite=Lax; Max-Age=600; Secure"), "{cookie}");
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; cf_session=tok"));
        headers.append(header::COOKIE, HeaderValue::from_static("cf_lang=en"));
        assert_eq!(cookie(&headers, SESSION), Some("tok"));
        assert_eq!(cookie(&headers, LANG), Some("en"));
        assert_eq!(cookie(&headers, PRE_SESSION), None);
    }
}
