//! The web app in a real browser: `cashflow serve` on a free port and a temporary data
//! directory, and the playwright-core suite in `crates/web/e2e` driving Debian's chromium
//! against it (sign in, record a credit typed "1.234,56" and watch the balance change live,
//! record a debit, reverse it, the report and its CSV, a cashier refused the reports, closing
//! the till, axe-core, screenshots under `target/screenshots/`, and the live
//! delay and first-page figures in `target/screenshots/figures.json`).
//!
//! A second scenario signs in through an OpenID Provider's hosted UI (`crates/web/e2e/oidc.mjs`
//! against `scripts/oidc-provider`, a certified provider): an owner and a cashier see their
//! roles, an entry is recorded, signing out visits the provider's logout.
//!
//! Needs `/usr/bin/chromium` and `npm ci` in `crates/web/e2e`; runs with
//! `CASHFLOW_TEST_BROWSER=1`, and is reported as ignored otherwise. The OpenID scenario also
//! needs `npm ci` in `scripts/oidc-provider`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cashflow");

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[cfg_attr(not(browser_tests), ignore = "set CASHFLOW_TEST_BROWSER=1 (chromium and npm ci in crates/web/e2e) to run")]
fn the_web_app_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let e2e = root.join("crates/web/e2e");
    assert!(e2e.join("node_modules/playwright-core").exists(), "run `npm ci` in {}", e2e.display());
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);

    // The first start prints the demo credentials.
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !banner.contains("password:") {
        assert!(Instant::now() < deadline, "no demo credentials printed:\n{banner}");
        let line = lines.next().expect("serve printed its banner").unwrap();
        banner.push_str(&line);
        banner.push('\n');
    }
    std::thread::spawn(move || for _ in lines {});
    let field = |name: &str| {
        banner
            .split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} in:\n{banner}"))
            .to_owned()
    };
    // A cashier (entries only) for the roles scenario and a manager who may close the till,
    // added with the CLI beside the running server.
    let password = "senha-de-teste-123";
    let create_user = |username: &str, scopes: &str| {
        let created = Command::new(BIN)
            .args(["user", "create", "--username", username, "--scopes", scopes, "--merchant"])
            .arg(field("merchant_id:"))
            .env("CASHFLOW_USER_PASSWORD", password)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(created.status.success(), "user create: {}", String::from_utf8_lossy(&created.stderr));
    };
    create_user("caixa", "entries:write,entries:read");
    create_user("gerente", "entries:write,entries:read,reports:read,days:close");
    let shots = root.join("target/screenshots");
    let status = Command::new("node")
        .arg("run.mjs")
        .current_dir(&e2e)
        .env("CASHFLOW_WEB_URL", format!("http://127.0.0.1:{port}"))
        .env("CASHFLOW_WEB_USER", field("username:"))
        .env("CASHFLOW_WEB_PASSWORD", field("password:"))
        .env("CASHFLOW_CLIENT_ID", field("client_id:"))
        .env("CASHFLOW_CLIENT_SECRET", field("client_secret:"))
        .env("CASHFLOW_CASHIER_USER", "caixa")
        .env("CASHFLOW_MANAGER_USER", "gerente")
        .env("CASHFLOW_ROLE_PASSWORD", password)
        .env("CASHFLOW_SCREENSHOTS", &shots)
        .status()
        .expect("run node");
    drop(server);
    assert!(status.success(), "the browser suite failed (screenshots in {})", shots.display());
}

#[test]
#[cfg_attr(not(browser_tests), ignore = "set CASHFLOW_TEST_BROWSER=1 (chromium and npm ci in crates/web/e2e) to run")]
fn signing_in_through_an_openid_providers_hosted_ui_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let e2e = root.join("crates/web/e2e");
    let provider_dir = root.join("scripts/oidc-provider");
    assert!(e2e.join("node_modules/playwright-core").exists(), "run `npm ci` in {}", e2e.display());
    assert!(provider_dir.join("node_modules/oidc-provider").exists(), "run `npm ci` in {}", provider_dir.display());
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let accounts = dir.path().join("accounts.json");

    // The provider first (the app trusts its issuer from the start), as another site.
    let clients = serde_json::json!([{
        "client_id": "cashflow-web",
        "client_secret": "segredo-do-app-client",
        "redirect_uris": [format!("{base}/auth/callback")],
        "post_logout_redirect_uris": [format!("{base}/signin")],
    }]);
    let mut provider = Command::new("node")
        .arg("server.mjs")
        .current_dir(&provider_dir)
        .env("OIDC_HOST", "localhost")
        .env("OIDC_CLIENTS", clients.to_string())
        .env("OIDC_ACCOUNTS_FILE", &accounts)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(provider.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _provider = Server(provider);
    let issuer = serde_json::from_str::<serde_json::Value>(&line).unwrap()["issuer"].as_str().unwrap().to_owned();

    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .args(["--oidc-issuer", &issuer, "--oidc-jwks-url", &format!("{issuer}/jwks")])
        .args(["--oidc-web-client-id", "cashflow-web", "--oidc-web-client-secret", "segredo-do-app-client"])
        .args(["--oidc-group-scopes", "owner=entries:write entries:read reports:read days:close"])
        .args(["--oidc-group-scopes", "cashier=entries:write entries:read"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !banner.contains("merchant_id:") {
        assert!(Instant::now() < deadline, "no merchant printed:\n{banner}");
        banner.push_str(&lines.next().expect("serve printed its banner").unwrap());
        banner.push('\n');
    }
    std::thread::spawn(move || for _ in lines {});
    let merchant = banner.split_whitespace().skip_while(|w| *w != "merchant_id:").nth(1).unwrap().to_owned();
    let accounts_json = serde_json::json!({
        "maria": {"custom:merchant_id": merchant, "cognito:groups": ["owner"]},
        "joao": {"custom:merchant_id": merchant, "cognito:groups": ["cashier"]},
    });
    std::fs::write(&accounts, accounts_json.to_string()).unwrap();

    let shots = root.join("target/screenshots");
    let status = Command::new("node")
        .arg("oidc.mjs")
        .current_dir(&e2e)
        .env("CASHFLOW_WEB_URL", &base)
        .env("OIDC_ISSUER", &issuer)
        .env("CASHFLOW_SCREENSHOTS", &shots)
        .status()
        .expect("run node");
    drop(server);
    assert!(status.success(), "the OpenID sign-in scenario failed (screenshots in {})", shots.display());
}
