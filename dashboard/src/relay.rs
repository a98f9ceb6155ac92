//! The relays: the systems' health and monitoring documents, fetched by this server for the page.
//!
//! Why relay at all: the page is served from the dashboard's origin, the documents live on four other
//! ports; fetching them from the browser would need CORS headers on every system. Relaying keeps the
//! systems untouched and lets a reverse proxy expose one origin.
//!
//! One request of the page (`GET /api/status/system1`) fetches every document of that system at once,
//! each bounded by `--relay-timeout-ms` and by [`MAX_DOCUMENT_BYTES`], and answers `200` with one
//! object per document: what the system answered (`status`, `body`, `ms`), or why there is no answer
//! (`error`: refused, timed out, too large, not JSON). The relay itself never fails the page's request
//! because a system is down: being down is the news the page must show.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// The largest document relayed, in bytes. System 2's monitoring lists at most 100 servers and one
/// queue depth per dashboard: a few tens of KiB. A bigger answer is refused, not buffered without end.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// One document to fetch: its name in the answer, and its URL.
#[derive(Debug, Clone)]
pub struct Source {
    /// `api.health`, `workers.monitoring`, …
    pub name: &'static str,
    /// Where it is.
    pub url: reqwest::Url,
}

/// Fetches every source at once; the answer maps each name to its outcome.
pub async fn fetch_all(client: &reqwest::Client, sources: &[Source], timeout: Duration) -> Value {
    let fetches = sources
        .iter()
        .map(|s| async move { (s.name, fetch(client, s, timeout).await) });
    let outcomes = futures_util::future::join_all(fetches).await;
    let mut map = Map::new();
    for (name, outcome) in outcomes {
        map.insert(name.to_string(), outcome);
    }
    Value::Object(map)
}

/// One fetch: `{"url","status","ms","body"}` or `{"url","error"}`.
pub async fn fetch(client: &reqwest::Client, source: &Source, timeout: Duration) -> Value {
    let started = Instant::now();
    let url = source.url.as_str();
    let attempt = async {
        let mut response = client.get(source.url.clone()).send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("answer larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let body: Value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "answered {status} with a body that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            )
        })?;
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((status, body))) => json!({
            "url": url,
            "status": status,
            "ms": started.elapsed().as_secs_f64() * 1e3,
            "body": body,
        }),
        Ok(Err(error)) => json!({"url": url, "error": error}),
        Err(_) => json!({"url": url, "error": format!("timed out after {} ms", timeout.as_millis())}),
    }
}

/// A client error in a few words: "connection refused", not a chain of wrappers.
fn describe(error: reqwest::Error) -> String {
    if error.is_connect() {
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return format!("cannot connect: {io}");
            }
            source = e.source();
        }
        return "cannot connect".to_string();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
