//! The dashboard's configuration: where it listens, and where the page and the relays connect.
//!
//! Two kinds of address, kept apart on purpose:
//! - the **WebSocket URLs** are handed to the browser (in `/config.json`): the page opens them itself,
//!   so that the latency it measures is the one a real dashboard sees, with no hop through this
//!   server. They may be relative (`/system1/ws`) for a reverse proxy: the page then builds
//!   `ws(s)://<its own host>/system1/ws`.
//! - the **HTTP bases** are used by this server, which relays the systems' health and monitoring
//!   documents to the page (same origin: no CORS), each fetch bounded by `--relay-timeout-ms`.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use lab_core::logging::LogArgs;

/// The telemetry lab's dashboard: one page that shows System 1 and System 2 live, side by side.
///
/// Serves the page (embedded in this binary) on http://HOST:PORT/, `/config.json` (where the page
/// connects), `/api/status/system1` and `/api/status/system2` (the systems' health and monitoring,
/// relayed), `/api/agents` (the agents' own figures, when started by `lab up`) and `/api/health`.
#[derive(Debug, Clone, Parser)]
#[command(name = "dashboard", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "DASHBOARD_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port of the page. 0 picks a free one.
    #[arg(long, env = "DASHBOARD_PORT", default_value_t = 8080)]
    pub port: u16,

    /// System 1's dashboard WebSocket (its broadcaster), as the *browser* reaches it: `ws://…`,
    /// `wss://…`, or a path such as `/system1/ws` (then relative to the page's own host).
    #[arg(long, env = "DASHBOARD_SYSTEM1_WS", default_value = "ws://127.0.0.1:4002/", value_parser = ws_url)]
    pub system1_ws: String,

    /// System 2's WebSocket, as the browser reaches it (same forms as --system1-ws).
    #[arg(long, env = "DASHBOARD_SYSTEM2_WS", default_value = "ws://127.0.0.1:4100/", value_parser = ws_url)]
    pub system2_ws: String,

    /// System 1's API, as this server reaches it: `/healthz` and `/api/monitoring` are relayed.
    #[arg(long, env = "DASHBOARD_SYSTEM1_API", default_value = "http://127.0.0.1:4000", value_parser = http_base)]
    pub system1_api: reqwest::Url,

    /// System 1's workers' ops port: `/healthz` and `/api/monitoring` (stream, group, trimmed).
    #[arg(long, env = "DASHBOARD_SYSTEM1_OPS", default_value = "http://127.0.0.1:4003", value_parser = http_base)]
    pub system1_ops: reqwest::Url,

    /// System 1's broadcaster's ops endpoints (the WebSocket's port): `/api/health`, `/api/monitoring`.
    #[arg(long, env = "DASHBOARD_SYSTEM1_BROADCASTER", default_value = "http://127.0.0.1:4002", value_parser = http_base)]
    pub system1_broadcaster: reqwest::Url,

    /// System 2's ops endpoints (its WebSocket's port): `/api/health`, `/api/monitoring`.
    #[arg(long, env = "DASHBOARD_SYSTEM2_HTTP", default_value = "http://127.0.0.1:4100", value_parser = http_base)]
    pub system2_http: reqwest::Url,

    /// Bound on each relayed request, in milliseconds: a system that does not answer in time is shown
    /// as "timed out", and the page's next poll is not held up.
    #[arg(long, env = "DASHBOARD_RELAY_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub relay_timeout_ms: u64,

    /// Read the agents' live figures from stdin, one JSON line per system and second
    /// (`{"system":"system1","second":{…}}`), and stop when stdin closes. `lab up` uses this.
    #[arg(long)]
    pub agents_stdin: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

impl Config {
    /// A test configuration: a free port on loopback, the given addresses otherwise defaults.
    pub fn for_tests() -> Self {
        Config::parse_from(["dashboard", "--host", "127.0.0.1", "--port", "0"])
    }

    /// The relay bound.
    pub fn relay_timeout(&self) -> Duration {
        Duration::from_millis(self.relay_timeout_ms)
    }
}

/// A WebSocket URL for the page: absolute `ws://`/`wss://`, or a path on the page's own host.
pub fn ws_url(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        return Ok(text.to_string());
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "ws" | "wss" if url.host().is_some() => Ok(url.to_string()),
        "ws" | "wss" => Err(format!("{text:?} has no host")),
        other => Err(format!(
            "{text:?}: the scheme must be ws or wss (got {other}), or give a path such as /system1/ws"
        )),
    }
}

/// An HTTP base URL for the relays: `http://host:port`.
pub fn http_base(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(url),
        "http" => Err(format!("{text:?} has no host")),
        // The relay's client is built without TLS (the systems' ops ports are cleartext).
        other => Err(format!("{text:?}: the scheme must be http (got {other})")),
    }
}
