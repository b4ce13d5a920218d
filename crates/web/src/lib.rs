//! The merchant's web app, served by the same binary at `/`: sign in, today's balance updated
//! live, record an entry in seconds on a phone, list and reverse entries, a period's report
//! (chart, table, CSV), and closing the till with the cash counted.
//!
//! Pages are rendered on the server (maud) and every form is a plain POST answered by a
//! redirect (closing the till answers with its result), so all of it works without JavaScript;
//! one small script of ours adds the keypad amount field, background form submission, the live
//! balance and the offline queue, and a service worker keeps the app shell for offline use.
//! Everything it serves is embedded in the binary.
//!
//! A page shows what the user's role allows ([`session::Can`]): the scopes the API's own
//! verifier grants the session's token (given with [`WebState::with_sign_in`]; the token's
//! `scope` claim without one). That only decides what is shown; the API checks every call.
//!
//! Sign-in is the built-in issuer's password grant, done by the server, and, with an OpenID
//! Provider's app client configured (Amazon Cognito's hosted UI), the authorization code flow
//! with PKCE ([`oidc`]); both end in the same session.
//!
//! The app is a client of the `/v1` API, not of the stores ([`api`]): in `serve` it calls the
//! combined API router in process, so the rules, validation messages and problem `type`s are
//! exactly the API's. Live updates come from the consolidation side ([`live`]).
//!
//! # Layout
//! - [`api`]: the `Api` port, its in-process implementation and the typed client.
//! - [`handlers`]: one function per route; [`pages`]: the markup; [`chart`]: the report's SVG.
//! - [`session`]: the session cookie and CSRF tokens; [`oidc`]: sign-in through an OpenID
//!   Provider's hosted UI; [`i18n`]: texts and formats;
//!   [`money`]: amounts as people read and type them; [`assets`]: the embedded files.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub mod api;
pub mod assets;
pub mod chart;
pub mod handlers;
pub mod i18n;
pub mod live;
pub mod money;
pub mod oidc;
pub mod pages;
pub mod session;

pub use api::{Api, Client, InProcessApi};
pub use live::Live;
pub use oidc::OidcSignIn;

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    pub(crate) client: Client,
    pub(crate) sessions: Arc<session::Sessions>,
    pub(crate) live: Live,
    /// Set where the front cannot stream server-sent events (API Gateway HTTP APIs): the
    /// "today" panel is polled at this interval with `If-None-Match` instead ([`handlers::today_panel`]).
    pub(crate) poll: Option<std::time::Duration>,
    pub(crate) sign_in: Arc<SignIn>,
}

/// How people sign in, and who decides what their pages show.
pub(crate) struct SignIn {
    /// The built-in issuer's password form (off when its tokens are not trusted).
    pub(crate) password: bool,
    /// An OpenID Provider's hosted UI.
    pub(crate) oidc: Option<OidcSignIn>,
    /// The API's verifier: the scopes it grants a session's token are what its pages show.
    pub(crate) verifier: Option<Arc<dyn cashflow_auth::TokenVerifier>>,
}

impl WebState {
    /// A web app calling `api`, hearing commits on `live`; `secure_cookies` when served on https.
    /// Sign-in is the password form alone until [`WebState::with_sign_in`].
    pub fn new(api: Arc<dyn Api>, live: Live, secure_cookies: bool) -> Self {
        Self {
            client: Client::new(api),
            sessions: Arc::new(session::Sessions::new(secure_cookies)),
            live,
            sign_in: Arc::new(SignIn { password: true, oidc: None, verifier: None }),
            poll: None,
        }
    }

    /// Pages show what `verifier` (the API's) grants the session's token; the sign-in page
    /// offers `oidc`'s provider when given, and the password form only when `password` (the
    /// built-in issuer's tokens are trusted).
    #[must_use]
    pub fn with_sign_in(
        mut self,
        verifier: Arc<dyn cashflow_auth::TokenVerifier>,
        password: bool,
        oidc: Option<OidcSignIn>,
    ) -> Self {
        self.sign_in = Arc::new(SignIn { password, oidc, verifier: Some(verifier) });
        self
    }

    /// Keys derived from `secret`, shared by every process given it (see [`session`]), instead
    /// of this process's own.
    #[must_use]
    pub fn with_secret(mut self, secret: &[u8]) -> Self {
        self.sessions = Arc::new(session::Sessions::from_secret(secret, self.sessions.secure()));
        self
    }

    /// The same, with the live panel polled every `every` (conditionally, by its `ETag`)
    /// instead of listening to server-sent events: for a front that cannot stream them.
    #[must_use]
    pub fn polling(mut self, every: std::time::Duration) -> Self {
        self.poll = Some(every);
        self
    }

    /// The web app of `serve`: the API router in the same process, cookies `Secure` when the
    /// public URL is https.
    pub fn in_process(api_router: Router, live: Live, public_url: &str) -> Self {
        Self::new(Arc::new(InProcessApi::new(api_router)), live, public_url.starts_with("https://"))
    }
}

/// The web app's routes; merge them into the API router (it owns the fallback).
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(handlers::today))
        .route("/today/panel", get(handlers::today_panel))
        .route("/events", get(handlers::events))
        .route("/signin", get(handlers::sign_in_page).post(handlers::sign_in))
        .route("/signout", post(handlers::sign_out))
        .route("/auth/start", get(handlers::auth_start))
        .route("/auth/callback", get(handlers::auth_callback))
        .route("/record", get(handlers::record_page))
        .route("/entries", get(handlers::entries).post(handlers::record))
        .route("/entries/{id}/reverse", get(handlers::reverse_page).post(handlers::reverse))
        .route("/reports", get(handlers::reports))
        .route("/reports/export", get(handlers::reports_export))
        .route("/close", get(handlers::close_page).post(handlers::close))
        .route("/lang/{tag}", get(handlers::switch_lang))
        .route("/assets/{name}", get(assets::asset))
        .route("/manifest.webmanifest", get(assets::manifest))
        .route("/sw.js", get(assets::service_worker))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The content security policy: only our own files; no inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Security headers on every response of the web app; pages (private data) are never stored.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let html =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
    if html && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
