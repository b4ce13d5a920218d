//! The static files, embedded in the binary (no build step, nothing to install). Their URLs
//! carry a hash of their content, so a browser may keep them for a year and still never runs
//! a stale script after an upgrade. The service worker ([`service_worker`]) caches them for
//! offline use under the same version.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../assets/app.css") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../assets/app.js") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_bytes!("../assets/icon.svg") },
    // Rendered from icon.svg by `e2e/icons.mjs`; the manifest's icons for launchers that want PNG.
    Asset { name: "icon-192.png", content_type: "image/png", body: include_bytes!("../assets/icon-192.png") },
    Asset { name: "icon-512.png", content_type: "image/png", body: include_bytes!("../assets/icon-512.png") },
];

const SERVICE_WORKER: &str = include_str!("../assets/sw.js");

const MANIFEST: &[u8] = include_bytes!("../assets/manifest.webmanifest");

/// A short hash of every asset, computed once.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for asset in ASSETS {
        context.update(asset.body);
    }
    context.finish().as_ref().iter().take(6).map(|b| format!("{b:02x}")).collect()
});

/// The URL of asset `name`, with the version.
pub fn url(name: &str) -> String {
    format!("/assets/{name}?v={}", *VERSION)
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        ],
        asset.body,
    )
        .into_response()
}

/// `GET /sw.js`: the service worker, at the root so that its scope is the whole app, with
/// this build's asset version in it (a new build is a new worker, which drops the old cache).
/// Browsers check it for updates on navigation; `no-cache` makes them ask every time.
pub async fn service_worker() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        SERVICE_WORKER.replace("__VERSION__", &VERSION),
    )
        .into_response()
}

/// `GET /manifest.webmanifest`.
pub async fn manifest() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/manifest+json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        MANIFEST,
    )
        .into_response()
}
