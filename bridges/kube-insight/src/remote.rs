//! The HTTP client of the read API (`/api/v1/*`) for the CLI's `--server`
//! mode: a base URL, an optional bearer token, connect and request
//! timeouts, a bounded response size, and errors that name the URL, the
//! HTTP status, the server's own message and what to do about it.
//!
//! `--server URL` (env `KUBE_INSIGHT_SERVER`) and `--token` (env
//! `KUBE_INSIGHT_API_TOKEN`) are the flags of [`ServerArgs`].

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The largest response body read (64 MiB): the API's own limits keep
/// answers far smaller; this only stops a wrong URL from filling memory.
pub const MAX_BODY_BYTES: usize = 64 << 20;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The flags of every command that can read a server instead of a store.
/// With `--server`, the store flags are ignored (`--server` wins).
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// Read the HTTP API of a running kube-insight (its api listener, e.g.
    /// http://kube-insight:8080) instead of a store; wins over --store.
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
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("joining {path:?} to {}", self.base))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// GETs `path` and returns the body, bounded by [`MAX_BODY_BYTES`].
    pub async fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>> {
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
        if !status.is_success() {
            return Err(status_error(&url, status, &body));
        }
        Ok(body)
    }

    /// GETs `path` and decodes its JSON body.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let body = self.get_bytes(path, query).await?;
        let url = self.url(path, query)?;
        serde_json::from_slice(&body)
            .map_err(|e| anyhow!("GET {url}: the response is not the expected JSON: {e}"))
    }
}

/// The error of a non-2xx answer: the URL, the status, the server's
/// message (`{"error": "..."}` or the text) and what to do.
fn status_error(url: &reqwest::Url, status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| {
            let s = String::from_utf8_lossy(body);
            s.chars().take(500).collect::<String>().trim().to_string()
        });
    let hint = match status.as_u16() {
        401 => "; set --token or KUBE_INSIGHT_API_TOKEN to the API's token",
        403 => "; the token is not allowed to read this",
        404 => {
            "; check --server (the api listener's URL) and the object's kind, namespace and name"
        }
        429 | 503 => "; the server is busy or unavailable, retry later",
        _ => "",
    };
    let msg = if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    };
    anyhow!("GET {url}: HTTP {status}{msg}{hint}")
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
        let u = reqwest::Url::parse("http://h:1/api/v1/x").unwrap();
        let e = status_error(
            &u,
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
