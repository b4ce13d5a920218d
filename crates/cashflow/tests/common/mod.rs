//! What several test binaries share: the merchant of their given, the served router asked
//! for pages as a browser asks for them (`oneshot`, no socket), and the ports the tests that
//! start processes listen on, so that each test file holds only its own set-up and specs. Each
//! test binary uses its own subset.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use cashflow::app::Application;
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};

/// The merchant "Padaria" (BRL, the default time zone), created in `app`'s ledger.
pub async fn create_merchant(app: &Application) -> MerchantId {
    app.ledger
        .create_merchant(MerchantName::parse("Padaria").unwrap(), Currency::BRL, MerchantTimeZone::DEFAULT)
        .await
        .unwrap()
        .id
}

/// A response as the browser gets it: the status, the headers and the body as text.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Page {
    /// The value of `name`'s `Set-Cookie`, whole (with its attributes).
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The cookie's value as the browser would keep it (`None` when cleared or not set).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let set = self.set_cookie(name)?;
        let value = set.split(';').next()?.split_once('=')?.1.to_owned();
        (!value.is_empty()).then_some(value)
    }

    pub fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The first hidden `csrf` field of the page.
    pub fn csrf(&self) -> String {
        hidden(&self.text, "csrf")
    }
}

/// The value of the first hidden field `name` in `html`.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} field in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// A served router asked for pages with the cookies a browser would send; a test's `Web`
/// implements it by naming its router.
pub trait Site {
    fn router(&self) -> &Router;

    async fn send(&self, request: Request<Body>) -> Page {
        let response = self.router().clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Page { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn get(&self, path: &str, cookies: &str) -> Page {
        self.send(Request::get(path).header(header::COOKIE, cookies).body(Body::empty()).unwrap()).await
    }

    /// `form` sent as `application/x-www-form-urlencoded`, as a page's form is.
    async fn post(&self, path: &str, cookies: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", cashflow_web::api::percent_encode(k), cashflow_web::api::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::COOKIE, cookies)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }
}

/// A free port no other test of this process has been given: the tests run in parallel and
/// some restart a server on its port, so a port the system handed out twice made a test's
/// server fail to bind while the test talked to another test's server (CI, session 27).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}
