//! The built-in web UI, served by the api listener at `/`.
//!
//! Every asset is embedded at compile time (`include_str!`), so the binary
//! needs no files at run time and `cargo build` no Node toolchain. The UI is
//! plain HTML, CSS and JavaScript written for kube-insight (no third-party
//! code); it reads only the public API (`/api/v1/*`, `/prometheus/api/v1/*`)
//! with the user's bearer token, so everything it shows a script can get too.
//!
//! Routes: `/` and `/ui/` answer the page (`index.html`), `/ui/<asset>` the
//! scripts and the stylesheet. The page routes by URL hash (`#/topology?…`,
//! `#/workload/…`), so every view is a link. The assets carry no secret and
//! are served without the token: the page asks for the token itself.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its URL path.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its text.
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One file of `assets/`, served at `/ui/<name>`.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            path: concat!("/ui/", $name),
            content_type: $content_type,
            body: include_str!(concat!("../assets/", $name)),
        }
    };
}

/// The UI's files, in load order.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", CSS),
    asset!("core.js", JS),
    asset!("graph.js", JS),
    asset!("chart.js", JS),
    asset!("pages.js", JS),
    asset!("favicon.svg", SVG),
];

/// The page and the scripts change only with the binary; the browser
/// revalidates the page (its URL never changes) and keeps the assets an hour.
const PAGE_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=3600";

/// Total size of the embedded assets in bytes.
pub fn assets_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// The embedded asset at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn respond(a: &Asset, cache: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        a.body,
    )
        .into_response()
}

async fn page() -> Response {
    match asset("/ui/index.html") {
        Some(a) => respond(a, PAGE_CACHE),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match asset(&format!("/ui/{name}")) {
        Some(a) if a.content_type == HTML => respond(a, PAGE_CACHE),
        Some(a) => respond(a, ASSET_CACHE),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no ui asset {name:?}\n"),
        )
            .into_response(),
    }
}

/// The UI's routes, to merge into the api listener's router (outside its
/// token check: the assets are public, the data they fetch is not).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/{name}", get(file))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn assets_stay_small_and_local() {
        assert!(assets_bytes() < 300 * 1024, "{} bytes", assets_bytes());
        let html = asset("/ui/index.html").unwrap().body;
        for a in ASSETS.iter().filter(|a| a.content_type != HTML) {
            assert!(html.contains(a.path), "index.html does not load {}", a.path);
        }
        for a in ASSETS {
            for remote in ["src=\"http", "@import", "url(http"] {
                assert!(
                    !a.body.contains(remote),
                    "{} loads a remote resource",
                    a.path
                );
            }
        }
    }

    #[tokio::test]
    async fn serves_each_asset_with_its_type_over_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app: Router = router();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let c = reqwest::Client::new();
        let r = c.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], HTML);
        assert_eq!(r.headers()["cache-control"], PAGE_CACHE);
        assert!(r.text().await.unwrap().contains("<title>kube-insight"));
        for a in ASSETS {
            let r = c
                .get(format!("http://{addr}{}", a.path))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", a.path);
            assert_eq!(r.headers()["content-type"], a.content_type, "{}", a.path);
            assert_eq!(r.text().await.unwrap(), a.body, "{}", a.path);
        }
        let r = c
            .get(format!("http://{addr}/ui/nope.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
}
