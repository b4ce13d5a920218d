//! Trusting external OpenID Connect issuers (Amazon Cognito first) by configuration alone.
//!
//! [`TrustedIssuers`] is the verifier the APIs use: it reads the token's `iss` (unverified,
//! only to choose) and hands the token to the verifier of that issuer, the built-in one or an
//! [`OidcVerifier`]; a token of any other issuer is refused before any key is looked at.
//! Several issuers can be trusted at once, so a deployment can migrate from the built-in
//! issuer to Cognito without a flag day.
//!
//! An external issuer's tokens do not look like ours. Cognito's access tokens carry
//! `client_id` and no `aud`, its ID tokens `aud`, both `token_use`; its permissions come as
//! groups (`cognito:groups`) and as resource-server scopes (`{prefix}/{name}` in `scope`),
//! and the merchant as a custom attribute (`custom:merchant_id`) that only ID tokens carry
//! unless a pre-token-generation trigger adds it. So an [`OidcVerifier`] checks `token_use`,
//! the client against the accepted app clients, and maps groups and prefixed scopes to ours.
//! A token without the merchant claim gets its merchant from an identity link of its subject
//! or (a machine-to-machine token) its client, which may cap its scopes ([`crate::links`]);
//! with neither, it is refused with a 401 naming the missing claim and link.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cashflow_domain::MerchantId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::jwks::{JwksCache, JwksError};
use crate::links::{LinkKind, Links};
use crate::verifier::{
    checked_header, describe, invalid, select_key, truncate, VerifyFuture, DEFAULT_LEEWAY_SECS, MAX_TOKEN_LEN,
};
use crate::{AuthError, Principal, Scope, Scopes, TokenVerifier};

/// The merchant claim Cognito writes for a custom attribute `merchant_id`.
pub const DEFAULT_OIDC_MERCHANT_CLAIM: &str = "custom:merchant_id";

/// The only algorithms an external issuer's tokens may use: RSA (Cognito) and P-256.
pub const OIDC_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// What every trusted external issuer's tokens must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcPolicy {
    /// The app clients accepted: an access token's `client_id`, an ID token's `aud`.
    pub client_ids: Vec<String>,
    /// Accept ID tokens (`token_use: id`) too; by default only access tokens.
    pub accept_id_tokens: bool,
    /// The claim holding the merchant id.
    pub merchant_claim: String,
    /// Our scopes granted by each group of `cognito:groups`.
    pub group_scopes: Vec<(String, Scopes)>,
    /// The resource-server identifier: `{prefix}/{scope}` in `scope` grants `{scope}`.
    pub scope_prefix: Option<String>,
    /// Tolerated clock skew for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for OidcPolicy {
    fn default() -> Self {
        Self {
            client_ids: Vec::new(),
            accept_id_tokens: false,
            merchant_claim: DEFAULT_OIDC_MERCHANT_CLAIM.to_owned(),
            group_scopes: Vec::new(),
            scope_prefix: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// Parses one group mapping, `group=scope scope …` (as `--oidc-group-scopes` takes it).
pub fn parse_group_scopes(s: &str) -> Result<(String, Scopes), String> {
    let (group, scopes) = s.split_once('=').ok_or_else(|| format!("`{s}` is not `group=scope scope …`"))?;
    let group = group.trim();
    if group.is_empty() {
        return Err(format!("`{s}` names no group"));
    }
    let scopes = Scopes::parse_list(scopes.trim()).map_err(|e| e.to_string())?;
    Ok((group.to_owned(), scopes))
}

/// Why an external token was refused: the `reason` label of
/// `cashflow_token_verification_failures_total`, a fixed set so an attacker cannot mint series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Malformed,
    UntrustedIssuer,
    Algorithm,
    UnknownKey,
    Signature,
    Expired,
    TokenUse,
    Client,
    Merchant,
    /// No merchant claim and no identity link.
    Unlinked,
    /// Refused by the built-in issuer's verifier (its own reasons are in the debug log).
    Builtin,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::UntrustedIssuer => "untrusted_issuer",
            Failure::Algorithm => "algorithm",
            Failure::UnknownKey => "unknown_kid",
            Failure::Signature => "signature",
            Failure::Expired => "expired",
            Failure::TokenUse => "token_use",
            Failure::Client => "client",
            Failure::Merchant => "merchant",
            Failure::Unlinked => "unlinked",
            Failure::Builtin => "builtin",
        }
    }
}

/// A refusal: its metric label and the reason for the log.
type Refusal = (Failure, AuthError);

fn refuse(failure: Failure, reason: impl Into<String>) -> Refusal {
    (failure, invalid(reason))
}

/// What a verified ID token says about the person who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    /// `sub`: the same subject as the access token issued with it.
    pub subject: String,
}

/// The verifier of one external issuer.
#[derive(Debug)]
pub struct OidcVerifier {
    issuer: String,
    policy: Arc<OidcPolicy>,
    jwks: Arc<JwksCache>,
    /// The identity links of tokens without the merchant claim (none unless given).
    links: Arc<Links>,
}

impl OidcVerifier {
    /// Trusts `issuer` (the exact `iss`) with keys from `jwks_url`. The keys are not fetched
    /// yet: call [`JwksCache::refresh`] on [`OidcVerifier::jwks`].
    pub fn new(
        issuer: impl Into<String>,
        jwks_url: impl Into<String>,
        policy: Arc<OidcPolicy>,
        min_refresh_interval: Duration,
    ) -> Result<Self, AuthError> {
        let issuer = issuer.into();
        if issuer.is_empty() || policy.merchant_claim.is_empty() {
            return Err(AuthError::Config("an OIDC issuer and its merchant claim must be set".into()));
        }
        if policy.client_ids.is_empty() {
            return Err(AuthError::Config(format!("no client id is accepted for the OIDC issuer {issuer}")));
        }
        let jwks = JwksCache::new(jwks_url, OIDC_ALGORITHMS.to_vec(), min_refresh_interval)
            .map_err(|e: JwksError| AuthError::Config(e.to_string()))?;
        Ok(Self { issuer, policy, jwks: Arc::new(jwks), links: Arc::default() })
    }

    /// Resolves the merchant of tokens without the merchant claim through `links` (kept
    /// current by the process's [`crate::Refresher`]).
    #[must_use]
    pub fn with_links(mut self, links: Arc<Links>) -> Self {
        self.links = links;
        self
    }

    /// The `iss` this verifier trusts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer's keys, to refresh and to probe.
    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    /// Verifies with the cached keys.
    fn verify_cached(&self, token: &str) -> Result<Principal, Refusal> {
        self.principal(&self.decode(token)?)
    }

    /// The claims of a token signed by a cached key of this issuer, with its `iss`, `exp` and
    /// `nbf` checked; what the claims mean is for the caller to check.
    fn decode(&self, token: &str) -> Result<Map<String, Value>, Refusal> {
        let header = checked_header(token, &OIDC_ALGORITHMS).map_err(|e| (Failure::Algorithm, e))?;
        let keys = self.jwks.keys();
        if let Some(kid) = &header.kid {
            if !keys.iter().any(|k| k.kid.as_deref() == Some(kid.as_str())) {
                return Err(refuse(Failure::UnknownKey, format!("unknown key id {:?}", truncate(kid))));
            }
        }
        let key = select_key(&keys, &header).map_err(|e| (Failure::UnknownKey, e))?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.policy.leeway_secs;
        validation.set_issuer(&[&self.issuer]);
        // Cognito's access tokens have no `aud`: the client is checked below, by token type.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| {
                let failure = match e.kind() {
                    ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => Failure::Expired,
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => Failure::Signature,
                    _ => Failure::Malformed,
                };
                refuse(failure, describe(e.kind()))
            })?
            .claims;
        Ok(claims)
    }

    /// Verifies the ID token the token endpoint returned to the web app's authorization code
    /// flow: signed by this issuer's keys (one JWKS refetch for an unknown `kid`, as for access
    /// tokens), unexpired, issued to `client_id` (`aud`, and `azp` when there are several
    /// audiences), and carrying the `nonce` the flow sent, so a token minted for another
    /// sign-in cannot be replayed into this one (OpenID Connect Core §3.1.3.7). A Cognito ID
    /// token says `token_use: id`; another issuer's may say nothing, but never `access`.
    pub async fn verify_id_token(&self, token: &str, client_id: &str, nonce: &str) -> Result<IdToken, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("ID token too long"));
        }
        let decoded = match self.decode(token) {
            Err((Failure::UnknownKey, _)) if self.jwks.refresh_for_unknown_kid().await => self.decode(token),
            other => other,
        };
        let claims = decoded.map_err(|(_, error)| error)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
        if text("token_use").is_some_and(|used| used != "id") {
            return Err(invalid("not an ID token"));
        }
        let audiences = audiences(claims.get("aud"));
        if !audiences.iter().any(|aud| aud == client_id) {
            return Err(invalid("the ID token was not issued to this client"));
        }
        if audiences.len() > 1 && text("azp") != Some(client_id) {
            return Err(invalid("the ID token's authorized party is another client"));
        }
        if text("nonce") != Some(nonce) {
            return Err(invalid("the ID token's nonce is not this sign-in's"));
        }
        let subject = text("sub").ok_or_else(|| invalid("the ID token has no subject"))?.to_owned();
        Ok(IdToken { subject })
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, Refusal> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
        let client = match text("token_use") {
            Some("access") => text("client_id").map(str::to_owned),
            Some("id") if self.policy.accept_id_tokens => audiences(claims.get("aud")).into_iter().next(),
            Some("id") => return Err(refuse(Failure::TokenUse, "an ID token where an access token is required")),
            _ => return Err(refuse(Failure::TokenUse, "no `token_use` of `access` or `id`")),
        };
        let client = client
            .filter(|c| self.policy.client_ids.iter().any(|accepted| accepted == c))
            .ok_or_else(|| refuse(Failure::Client, "the token's client is not an accepted app client"))?;
        let claim = &self.policy.merchant_claim;
        let sub = text("sub");
        let scopes = self.scopes(claims);
        let (merchant_id, scopes) = match text(claim) {
            Some(merchant) => {
                let merchant_id = MerchantId::parse(merchant)
                    .map_err(|_| refuse(Failure::Merchant, format!("`{claim}` claim is not a UUID")))?;
                (merchant_id, scopes)
            }
            None => {
                // A machine-to-machine token: an access token whose subject, if any, is its
                // client (Cognito's client-credentials tokens). Only these may use a client
                // link; a person's token is never bound by the app client they signed in with.
                let machine = text("token_use") == Some("access") && sub.is_none_or(|s| s == client);
                let table = self.links.table();
                let link = sub
                    .and_then(|s| table.get(LinkKind::Subject, s))
                    .or_else(|| machine.then(|| table.get(LinkKind::Client, &client)).flatten())
                    .ok_or_else(|| (Failure::Unlinked, AuthError::NoMerchant(self.missing(sub, &client, machine))))?;
                (link.merchant_id, link.scopes.map_or(scopes, |cap| scopes.intersection(cap)))
            }
        };
        let subject = sub.unwrap_or(&client).to_owned();
        Ok(Principal { merchant_id, subject, client_id: Some(client), scopes })
    }

    /// What a token without the merchant claim lacks, and the command that would supply it.
    fn missing(&self, sub: Option<&str>, client: &str, machine: bool) -> String {
        let claim = &self.policy.merchant_claim;
        let (what, flag, id) = match (machine, sub) {
            (true, _) => ("client", "client-id", client),
            (false, Some(sub)) => ("subject", "subject", sub),
            (false, None) => return format!("The token has no `{claim}` claim and no `sub` to link to a merchant"),
        };
        let id = truncate(id);
        format!(
            "The token has no `{claim}` claim and its {what} `{id}` is not linked to a merchant \
             (an operator links it with `cashflow identity link --merchant M --{flag} {id}`)"
        )
    }

    /// The scopes the token's groups and prefixed resource-server scopes grant.
    fn scopes(&self, claims: &Map<String, Value>) -> Scopes {
        let mut scopes = Scopes::empty();
        if let Some(Value::Array(groups)) = claims.get("cognito:groups") {
            for group in groups.iter().filter_map(Value::as_str) {
                for (name, granted) in &self.policy.group_scopes {
                    if name == group {
                        granted.iter().for_each(|s| scopes.insert(s));
                    }
                }
            }
        }
        if let (Some(prefix), Some(scope)) = (&self.policy.scope_prefix, claims.get("scope").and_then(Value::as_str)) {
            let prefix = prefix.trim_end_matches('/');
            scope
                .split_ascii_whitespace()
                .filter_map(|item| item.strip_prefix(prefix)?.strip_prefix('/'))
                .filter_map(|name| Scope::parse(name).ok())
                .for_each(|s| scopes.insert(s));
        }
        scopes
    }
}

/// `aud`: a string or a list of strings.
fn audiences(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The `iss` of a token, read without verifying anything: only to choose its verifier.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// The verifier of every trusted issuer, chosen by the token's `iss`.
pub struct TrustedIssuers {
    /// The built-in issuer's `iss` and verifier, unless `--no-builtin-issuer`.
    builtin: Option<(String, Arc<dyn TokenVerifier>)>,
    external: Vec<Arc<OidcVerifier>>,
}

impl TrustedIssuers {
    pub fn new(builtin: Option<(String, Arc<dyn TokenVerifier>)>, external: Vec<Arc<OidcVerifier>>) -> Self {
        Self { builtin, external }
    }

    /// The external issuers' verifiers.
    pub fn external(&self) -> &[Arc<OidcVerifier>] {
        &self.external
    }

    fn route(&self, token: &str) -> Result<Route<'_>, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(refuse(Failure::Malformed, "token too long"));
        }
        let iss = unverified_issuer(token).ok_or_else(|| refuse(Failure::Malformed, "no readable `iss` claim"))?;
        if let Some((builtin_iss, verifier)) = &self.builtin {
            if *builtin_iss == iss {
                return Ok(Route::Builtin(verifier.as_ref()));
            }
        }
        self.external
            .iter()
            .find(|v| v.issuer == iss)
            .map(|v| Route::External(v.as_ref()))
            .ok_or_else(|| refuse(Failure::UntrustedIssuer, format!("untrusted issuer {:?}", truncate(&iss))))
    }
}

enum Route<'a> {
    Builtin(&'a dyn TokenVerifier),
    External(&'a OidcVerifier),
}

fn counted(result: Result<Principal, Refusal>) -> Result<Principal, AuthError> {
    result.map_err(|(failure, error)| {
        metrics::counter!("cashflow_token_verification_failures_total", "reason" => failure.as_str()).increment(1);
        error
    })
}

impl TokenVerifier for TrustedIssuers {
    /// With the cached keys only: an unknown `kid` is refused (see `verify_async`).
    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        counted(match self.route(token) {
            Ok(Route::Builtin(verifier)) => verifier.verify(token).map_err(|e| (Failure::Builtin, e)),
            Ok(Route::External(verifier)) => verifier.verify_cached(token),
            Err(refusal) => Err(refusal),
        })
    }

    /// As `verify`, but a token of an external issuer naming a key not cached waits for one
    /// JWKS fetch (at most one per the cache's minimum interval), then is checked again.
    fn verify_async<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            counted(match self.route(token) {
                Ok(Route::Builtin(verifier)) => verifier.verify_async(token).await.map_err(|e| (Failure::Builtin, e)),
                Ok(Route::External(verifier)) => match verifier.verify_cached(token) {
                    Err((Failure::UnknownKey, _)) if verifier.jwks.refresh_for_unknown_kid().await => {
                        verifier.verify_cached(token)
                    }
                    other => other,
                },
                Err(refusal) => Err(refusal),
            })
        })
    }
}

impl std::fmt::Debug for TrustedIssuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuers")
            .field("builtin", &self.builtin.as_ref().map(|(iss, _)| iss))
            .field("external", &self.external)
            .finish()
    }
}

/// Which issuers a process trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Each external issuer's exact `iss` and its JWKS URL.
    pub issuers: Vec<(String, String)>,
    pub policy: OidcPolicy,
    /// Whether the built-in issuer's tokens are accepted too.
    pub trust_builtin: bool,
    /// The app client the web app signs people in with, through the issuer's hosted UI.
    pub web: Option<WebClient>,
}

/// An app client of a trusted issuer that the web app signs people in with: the authorization
/// code flow with PKCE through the issuer's hosted UI (Cognito's), then the same session as the
/// built-in issuer's password sign-in. Its access tokens are verified like any other, so its
/// id is one of the policy's accepted clients.
#[derive(Debug, Clone)]
pub struct WebClient {
    /// The `iss` of the issuer, one of [`OidcConfig::issuers`].
    pub issuer: String,
    pub client_id: String,
    /// A confidential app client's secret, sent with HTTP Basic to the token endpoint; `None`
    /// for a public client (PKCE alone binds the code to the browser that asked for it).
    pub client_secret: Option<secrecy::SecretString>,
    /// Where the authorization, token and logout endpoints are.
    pub endpoints: WebEndpoints,
    /// The scopes asked for, space-separated (`openid` at least).
    pub scopes: String,
    /// The provider's name on the sign-in button ("Entrar com Cognito").
    pub display_name: String,
}

impl PartialEq for WebClient {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.issuer == other.issuer
            && self.client_id == other.client_id
            && self.client_secret.as_ref().map(|s| s.expose_secret().to_owned())
                == other.client_secret.as_ref().map(|s| s.expose_secret().to_owned())
            && self.endpoints == other.endpoints
            && self.scopes == other.scopes
            && self.display_name == other.display_name
    }
}

impl Eq for WebClient {}

/// How the web app finds an issuer's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebEndpoints {
    /// From the OpenID Provider's discovery document at this URL
    /// (`{issuer}/.well-known/openid-configuration`): `authorization_endpoint`,
    /// `token_endpoint`, and `end_session_endpoint` (RP-initiated logout) if it has one.
    Discovery(String),
    /// A Cognito user pool's hosted UI domain, e.g. `https://padaria.auth.us-east-1.amazoncognito.com`:
    /// `/oauth2/authorize`, `/oauth2/token` and `/logout` (Cognito's `logout_uri` parameter).
    CognitoDomain(String),
}

/// Where an OpenID Provider's discovery document is: `{issuer}/.well-known/openid-configuration`.
pub fn default_discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

impl Default for OidcConfig {
    /// The built-in issuer alone.
    fn default() -> Self {
        Self { issuers: Vec::new(), policy: OidcPolicy::default(), trust_builtin: true, web: None }
    }
}

/// Where an issuer publishes its keys unless told otherwise: `{issuer}/.well-known/jwks.json`.
pub fn default_jwks_url(issuer: &str) -> String {
    format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    //! The merchant of a verified token: claim, subject link, client link (machines only).
    use super::*;
    use crate::links::IdentityLink;

    fn verifier(links: Vec<IdentityLink>) -> OidcVerifier {
        let policy = OidcPolicy {
            client_ids: vec!["app".into()],
            accept_id_tokens: true,
            group_scopes: vec![parse_group_scopes("owner=entries:write entries:read reports:read").unwrap()],
            ..OidcPolicy::default()
        };
        let table = Arc::new(Links::default());
        table.set(links);
        OidcVerifier::new("https://issuer.test", "http://127.0.0.1:9/jwks.json", Arc::new(policy), Duration::ZERO)
            .unwrap()
            .with_links(table)
    }

    fn link(kind: LinkKind, id: &str, merchant: MerchantId, scopes: Option<&str>) -> IdentityLink {
        IdentityLink {
            kind,
            external_id: id.into(),
            merchant_id: merchant,
            scopes: scopes.map(|s| Scopes::parse_list(s).unwrap()),
            created_at_ms: 1,
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn person(sub: &str) -> Map<String, Value> {
        claims(serde_json::json!({"token_use": "access", "client_id": "app", "sub": sub, "cognito:groups": ["owner"]}))
    }

    fn machine() -> Map<String, Value> {
        claims(
            serde_json::json!({"token_use": "access", "client_id": "app", "sub": "app", "cognito:groups": ["owner"]}),
        )
    }

    #[test]
    fn the_merchant_claim_wins_over_any_link() {
        let (claimed, linked) = (MerchantId::new(), MerchantId::new());
        let v = verifier(vec![link(LinkKind::Subject, "maria", linked, None)]);
        let mut token = person("maria");
        token.insert(DEFAULT_OIDC_MERCHANT_CLAIM.into(), Value::String(claimed.to_string()));
        assert_eq!(v.principal(&token).unwrap().merchant_id, claimed);
    }

    #[test]
    fn a_linked_subject_acts_for_its_merchant_with_its_scopes_capped_by_the_link() {
        let merchant = MerchantId::new();
        let v = verifier(vec![link(LinkKind::Subject, "maria", merchant, Some("entries:read reports:read"))]);
        let principal = v.principal(&person("maria")).unwrap();
        assert_eq!(principal.merchant_id, merchant);
        assert_eq!(principal.subject, "maria");
        assert_eq!(
            principal.scopes,
            Scopes::parse_list("entries:read reports:read").unwrap(),
            "owner's write is capped"
        );
    }

    #[test]
    fn a_client_link_binds_machine_tokens_but_never_a_persons_token_of_that_app_client() {
        let merchant = MerchantId::new();
        let v = verifier(vec![link(LinkKind::Client, "app", merchant, None)]);
        let principal = v.principal(&machine()).unwrap();
        assert_eq!((principal.merchant_id, principal.scopes), (merchant, Scopes::all()), "no cap: the token's scopes");

        let (failure, error) = v.principal(&person("joao")).unwrap_err();
        assert_eq!(failure, Failure::Unlinked);
        let AuthError::NoMerchant(message) = error else { panic!("{error:?}") };
        assert!(message.contains("`custom:merchant_id` claim") && message.contains("subject `joao`"), "{message}");
        assert!(message.contains("--subject joao"), "{message}");
    }

    #[test]
    fn an_id_token_without_a_subject_is_refused_saying_there_is_nothing_to_link() {
        let token = claims(serde_json::json!({"token_use": "id", "aud": "app"}));
        let (failure, error) =
            verifier(vec![link(LinkKind::Client, "app", MerchantId::new(), None)]).principal(&token).unwrap_err();
        assert_eq!(failure, Failure::Unlinked, "an ID token is a person's: the client link does not apply");
        assert!(error.to_string().contains("no `sub`"), "{error}");
    }

    /// The claims of an ID token of `https://issuer.test` for client `web`, `sub` maria, nonce
    /// `n-1`, valid for five minutes, with `changes` applied (`null` removes a claim).
    fn id_claims(changes: Value) -> Value {
        let now = chrono::Utc::now().timestamp();
        let mut claims = serde_json::json!({
            "iss": "https://issuer.test", "aud": "web", "sub": "maria", "nonce": "n-1", "exp": now + 300, "iat": now,
        });
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                v => claims.as_object_mut().unwrap().insert(name.clone(), v.clone()),
            };
        }
        claims
    }

    #[tokio::test]
    async fn an_id_token_is_accepted_only_for_its_client_and_the_nonce_of_its_sign_in() {
        use jsonwebtoken::{EncodingKey, Header};
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        // An ES256 key of the issuer's, its JWKS served on a loopback port.
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref().to_vec(); // 0x04 ‖ x ‖ y
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let policy = OidcPolicy { client_ids: vec!["web".into()], ..OidcPolicy::default() };
        let verifier = OidcVerifier::new("https://issuer.test", url, Arc::new(policy), Duration::ZERO).unwrap();
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let sign = |claims: Value| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("k1".into());
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        let verify = |token: String, nonce: &'static str| {
            let verifier = &verifier;
            async move { verifier.verify_id_token(&token, "web", nonce).await }
        };

        // The issuer's keys are fetched for the first token (an unknown `kid`).
        let person = verify(sign(id_claims(serde_json::json!({}))), "n-1").await.unwrap();
        assert_eq!(person.subject, "maria");
        let cognito = serde_json::json!({"token_use": "id", "aud": ["web", "other"], "azp": "web"});
        assert!(verify(sign(id_claims(cognito)), "n-1").await.is_ok(), "Cognito's shape, several audiences");

        for (case, claims, nonce) in [
            ("another sign-in's nonce", id_claims(serde_json::json!({})), "n-2"),
            ("no nonce", id_claims(serde_json::json!({"nonce": null})), "n-1"),
            ("another client's", id_claims(serde_json::json!({"aud": "other"})), "n-1"),
            ("authorized for another", id_claims(serde_json::json!({"aud": ["web", "other"], "azp": "other"})), "n-1"),
            ("an access token", id_claims(serde_json::json!({"token_use": "access"})), "n-1"),
            ("expired", id_claims(serde_json::json!({"exp": chrono::Utc::now().timestamp() - 3600})), "n-1"),
            ("another issuer's", id_claims(serde_json::json!({"iss": "https://evil.test"})), "n-1"),
            ("no subject", id_claims(serde_json::json!({"sub": null})), "n-1"),
        ] {
            assert!(verify(sign(claims), nonce).await.is_err(), "{case} is refused");
        }
        let forged = format!("{}x", sign(id_claims(serde_json::json!({}))));
        assert!(verify(forged, "n-1").await.is_err(), "a bad signature is refused");
    }

    #[test]
    fn an_unlinked_machine_token_is_refused_naming_its_client() {
        let (failure, error) = verifier(vec![]).principal(&machine()).unwrap_err();
        assert_eq!(failure, Failure::Unlinked);
        let AuthError::NoMerchant(message) = error else { panic!("{error:?}") };
        assert!(message.contains("client `app`") && message.contains("--client-id app"), "{message}");
    }
}
