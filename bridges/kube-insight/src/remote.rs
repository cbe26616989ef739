//! How the CLI's read commands (`get`, `diff`, `changes`, `logs`,
//! `topology`, `suspects`) read: always through the read API (`/api/v1/*`),
//! either a running server's over HTTP (`--server`), or the same router
//! answered in-process over a store (`--store`). One request and one
//! answer shape for both, so each command has one renderer and prints the
//! same text from either ([`Api`]).
//!
//! The HTTP side ([`Client`]): a base URL, an optional bearer token,
//! connect and request timeouts, a bounded response size, and errors that
//! name the URL, the HTTP status, the server's own message and what to do
//! about it. `--server URL` (env `KUBE_INSIGHT_SERVER`) and `--token` (env
//! `KUBE_INSIGHT_API_TOKEN`) are the flags of [`ServerArgs`]; `--server`
//! with `--store` on one command line is an error (`cli::parse`), a
//! `KUBE_INSIGHT_STORE` from the environment is ignored by `--server`.

use crate::config::StoreSettings;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// The largest response body read (64 MiB): the API's own limits keep
/// answers far smaller; this only stops a wrong URL from filling memory.
pub const MAX_BODY_BYTES: usize = 64 << 20;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The flags of every command that can read a server instead of a store.
/// With `--server`, the store settings are not used; `--server` and
/// `--store` on one command line are an error.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// Read the HTTP API of a running kube-insight (its api listener, e.g.
    /// http://kube-insight:8080) instead of a store; not with --store.
    #[arg(long, env = "KUBE_INSIGHT_SERVER")]
    pub server: Option<String>,
    /// Bearer token of the API (KUBE_INSIGHT_API_TOKEN); used with --server.
    #[arg(long, env = "KUBE_INSIGHT_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    /// The client, when `--server` is set.
    pub fn client(&self) -> Result<Option<Client>> {
        match &self.server {
            None => Ok(None),
            Some(url) => Client::new(url, self.token.clone()).map(Some),
        }
    }

    /// The API to read: the server's, or the store's answered in-process.
    pub async fn api(&self, store: &StoreSettings) -> Result<Api> {
        match self.client()? {
            Some(c) => Ok(Api::Server(c)),
            None => Api::local(store).await,
        }
    }
}

/// The read API a command reads: a server's over HTTP, or the same router
/// (`kube_insight_api::router`) over a store, in this process.
pub enum Api {
    Server(Client),
    Local {
        router: axum::Router,
        /// The store URL, for errors.
        store: String,
    },
}

impl Api {
    /// The read API over the store of `settings` (no token, default limits).
    pub async fn local(settings: &StoreSettings) -> Result<Api> {
        settings.validate()?;
        let store = crate::store_open::open(&settings.store, settings.options())
            .await
            .with_context(|| {
                format!(
                    "opening the store {} (--store, KUBE_INSIGHT_STORE)",
                    settings.store
                )
            })?;
        let router = kube_insight_api::router(
            store,
            Arc::new(kube_insight_telemetry::Telemetry::new()),
            kube_insight_api::ApiConfig::default(),
        );
        Ok(Api::Local {
            router,
            store: settings.store.clone(),
        })
    }

    /// GETs `path` (e.g. `api/v1/changes`) with its query pairs: the status
    /// and the body (bounded by [`MAX_BODY_BYTES`]), and how to name the
    /// request in an error.
    async fn fetch(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, Vec<u8>, Request)> {
        match self {
            Api::Server(c) => c.fetch(path, query).await,
            Api::Local { router, store } => {
                use tower::ServiceExt as _;
                // The in-process request's URI: path and query only.
                let base = reqwest::Url::parse("http://store.local/")?;
                let url = join(&base, path, query)?;
                let uri = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                let what = Request::Local(format!("reading {uri} from the store {store}"));
                let req = axum::http::Request::get(uri.as_str())
                    .body(axum::body::Body::empty())
                    .with_context(|| what.to_string())?;
                let resp = match router.clone().oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                let status = reqwest::StatusCode::from_u16(resp.status().as_u16())
                    .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
                let body = axum::body::to_bytes(resp.into_body(), MAX_BODY_BYTES)
                    .await
                    .map_err(|e| anyhow!("{what}: {e}; narrow the query"))?;
                Ok((status, body.to_vec(), what))
            }
        }
    }

    /// GETs `path` and returns the body of a 2xx answer.
    pub async fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>> {
        let (status, body, what) = self.fetch(path, query).await?;
        if !status.is_success() {
            return Err(status_error(&what, status, &body));
        }
        Ok(body)
    }

    /// GETs `path` and decodes its JSON body.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        self.get_json_opt(path, query, false)
            .await?
            .ok_or_else(|| anyhow!("GET {path}: no answer"))
    }

    /// GETs `path` and decodes its JSON body; with `absent_ok`, the API's
    /// own 404 (`{"error": …}`) is `None` (an object that did not exist
    /// then), while a 404 without it (a wrong `--server` path) stays an error.
    pub async fn get_json_opt<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        absent_ok: bool,
    ) -> Result<Option<T>> {
        let (status, body, what) = self.fetch(path, query).await?;
        if absent_ok && status == reqwest::StatusCode::NOT_FOUND && api_error(&body).is_some() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(&what, status, &body));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| anyhow!("{what}: the response is not the expected JSON: {e}"))
    }

    /// GETs `path` and returns its body as text (DOT).
    pub async fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String> {
        let body = self.get_bytes(path, query).await?;
        String::from_utf8(body).map_err(|e| anyhow!("GET {path}: the response is not UTF-8: {e}"))
    }
}

/// A request as errors name it: `GET URL` of a server, or the path read
/// from a store.
#[derive(Debug, Clone)]
enum Request {
    Server(String),
    Local(String),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Server(s) | Request::Local(s) => f.write_str(s),
        }
    }
}

/// `path` joined to `base`, with the query pairs.
fn join(base: &reqwest::Url, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url> {
    let mut url = base
        .join(path.trim_start_matches('/'))
        .with_context(|| format!("joining {path:?} to {base}"))?;
    if !query.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in query {
            q.append_pair(k, v);
        }
    }
    Ok(url)
}

/// A client of one server's read API.
#[derive(Debug, Clone)]
pub struct Client {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the api listener's URL (http or https), with or without a
    /// trailing slash or path prefix.
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        let mut url = reqwest::Url::parse(base).map_err(|e| {
            anyhow!("--server {base:?}: not a URL ({e}); use e.g. http://kube-insight:8080")
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            bail!("--server {base:?}: use an http:// or https:// URL");
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            base: url,
            token: token.filter(|t| !t.trim().is_empty()),
            http,
        })
    }

    /// The URL of `path` (e.g. `api/v1/changes`) with its query pairs.
    pub fn url(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url> {
        join(&self.base, path, query)
    }

    /// GETs `path`: the status and the body, bounded by [`MAX_BODY_BYTES`],
    /// and the request as errors name it (`GET URL`).
    async fn fetch(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, Vec<u8>, Request)> {
        let url = self.url(path, query)?;
        tracing::debug!(%url, "GET");
        let mut req = self.http.get(url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|e| {
            anyhow!("GET {url}: {e}; check --server (KUBE_INSIGHT_SERVER) and that the api target runs there")
        })?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| anyhow!("GET {url}: reading the response: {e}"))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                bail!("GET {url}: the response is larger than {MAX_BODY_BYTES} bytes; narrow the query");
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body, Request::Server(format!("GET {url}"))))
    }
}

/// The message of the API's error body, `{"error": "..."}`.
fn api_error(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
}

/// The error of a non-2xx answer: the request (`GET URL`), the status, the
/// server's message (`{"error": "..."}` or the text) and what to do.
fn status_error(what: &Request, status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let msg = api_error(body).unwrap_or_else(|| {
        let s = String::from_utf8_lossy(body);
        s.chars().take(500).collect::<String>().trim().to_string()
    });
    let server = matches!(what, Request::Server(_));
    let hint = match status.as_u16() {
        401 => "; set --token or KUBE_INSIGHT_API_TOKEN to the API's token",
        403 => "; the token is not allowed to read this",
        404 if server => {
            "; check --server (the api listener's URL) and the object's kind, namespace and name"
        }
        404 => "; check the object's kind, namespace and name",
        429 | 503 if server => "; the server is busy or unavailable, retry later",
        429 | 503 => "; the store is busy or unavailable, retry later",
        _ => "",
    };
    let msg = if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    };
    anyhow!("{what}: HTTP {status}{msg}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths_and_queries() {
        let c = Client::new("http://127.0.0.1:8080/prefix", None).unwrap();
        let u = c
            .url("/api/v1/changes", &[("namespace", "shop a".into())])
            .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/prefix/api/v1/changes?namespace=shop+a"
        );
        assert!(Client::new("ftp://x", None).is_err());
        assert!(Client::new("not a url", None).is_err());
    }

    #[test]
    fn status_errors_name_the_url_status_and_fix() {
        let e = status_error(
            &Request::Server("GET http://h:1/api/v1/x".into()),
            reqwest::StatusCode::UNAUTHORIZED,
            br#"{"error":"bad token"}"#,
        )
        .to_string();
        assert!(e.contains("http://h:1/api/v1/x"), "{e}");
        assert!(e.contains("401"), "{e}");
        assert!(e.contains("bad token"), "{e}");
        assert!(e.contains("KUBE_INSIGHT_API_TOKEN"), "{e}");
    }
}
