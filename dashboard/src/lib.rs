//! # Dashboard: one page that shows both systems live, latency side by side
//!
//! The server is small on purpose; the work is in the page (`assets/`), which connects to each
//! system's dashboard WebSocket **itself** and measures, per metric, receipt time − the metric's
//! `timestamp`: the latency "seen by this browser". Nothing of that path goes through this server.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | flags and environment variables: where to listen, where the page and the relays connect |
//! | [`relay`] | the systems' health and monitoring documents, fetched for the page with a timeout |
//! | [`agents`] | the agents' own per-second figures, fed by `lab up` on stdin |
//! | [`cli`] | what the `dashboard` binary (and `lab child dashboard`) runs |
//!
//! Routes: `/` and the assets (embedded at build time by memory-serve, see `build.rs`: ETag and
//! `304 Not Modified`, gzip and brotli by the client's `Accept-Encoding`); `/config.json` (the
//! WebSocket URLs for the page); `/api/status/system1`, `/api/status/system2` (the relays);
//! `/api/agents`; `/api/health`.
//!
//! Run with `cargo run --release -p dashboard -- --help`, or let `cargo lab up` start it.

pub mod agents;
pub mod cli;
pub mod config;
pub mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use memory_serve::CacheControl;
use serde_json::json;
use tokio::net::TcpListener;

use crate::agents::AgentFigures;
use crate::config::Config;
use crate::relay::Source;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// One HTTP client (one connection pool) for every relay.
    client: reqwest::Client,
    /// Each system's documents to relay.
    system1: Vec<Source>,
    system2: Vec<Source>,
    /// The agents' figures (empty unless fed).
    agents: Arc<AgentFigures>,
    started: Instant,
}

/// A bound, not yet running dashboard: `bind` (port 0 allowed), `local_addr`, then `run`.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Binds the configured address; fails for a port in use.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let address = SocketAddr::new(config.host, config.port);
        let listener = lab_ops::listen(address, "--port or DASHBOARD_PORT").await?;
        // No timeout of the client's own: each relay is bounded as a whole (connect, answer, body)
        // by `--relay-timeout-ms` in `relay::fetch`, which says so in its error.
        let client = reqwest::Client::builder()
            .build()
            .context("cannot build the relay's HTTP client")?;
        let join = |base: &reqwest::Url, path: &str| base.join(path).expect("a path joins any http base");
        let system1 = vec![
            Source {
                name: "api.health",
                url: join(&config.system1_api, "/healthz"),
            },
            Source {
                name: "api.monitoring",
                url: join(&config.system1_api, "/api/monitoring"),
            },
            Source {
                name: "workers.health",
                url: join(&config.system1_ops, "/healthz"),
            },
            Source {
                name: "workers.monitoring",
                url: join(&config.system1_ops, "/api/monitoring"),
            },
            Source {
                name: "broadcaster.health",
                url: join(&config.system1_broadcaster, "/api/health"),
            },
            Source {
                name: "broadcaster.monitoring",
                url: join(&config.system1_broadcaster, "/api/monitoring"),
            },
        ];
        let system2 = vec![
            Source {
                name: "health",
                url: join(&config.system2_http, "/api/health"),
            },
            Source {
                name: "monitoring",
                url: join(&config.system2_http, "/api/monitoring"),
            },
        ];
        let inner = Inner {
            config,
            client,
            system1,
            system2,
            agents: Arc::new(AgentFigures::default()),
            started: Instant::now(),
        };
        Ok(Server {
            listener,
            state: AppState {
                inner: Arc::new(inner),
            },
        })
    }

    /// The address it listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the agents' figures go (see [`agents`]).
    pub fn agent_figures(&self) -> Arc<AgentFigures> {
        self.state.inner.agents.clone()
    }

    /// The routes, for tests that call them in-process.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = router(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("dashboard server failed")
    }
}

/// The page's assets, embedded at build time (see `build.rs`).
///
/// Cache policy: `index.html` is revalidated on every load (`no-cache`: the browser asks with
/// `If-None-Match` and gets a `304` without a body while nothing changed), so a new build is seen at
/// once; the other files are cached briefly (`Short`) and revalidated the same way after.
fn assets() -> Router<AppState> {
    memory_serve::load!()
        .index_file(Some("/index.html"))
        .enable_gzip(true)
        .enable_brotli(true)
        .html_cache_control(CacheControl::NoCache)
        .cache_control(CacheControl::Short)
        .into_router()
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/config.json", get(page_config))
        .route("/api/health", get(health))
        .route("/api/status/{system}", get(status))
        .route("/api/agents", get(agent_figures))
        .merge(assets())
        .layer(axum::middleware::map_response(cross_origin_isolated))
        .with_state(state)
}

/// Makes the page "cross-origin isolated", which is what lets it read the clock precisely.
///
/// Browsers coarsen `performance.now()` against timing attacks: Chrome to 100 µs with jitter for an
/// ordinary page, 5 µs for an isolated one (Firefox: 1 ms against 20 µs). The page measures latencies
/// of a few hundred microseconds, so it needs the fine clock. Isolation asks that every resource the
/// page loads be same-origin or opt in; ours all are (WebSockets are not subject to it). A browser
/// only isolates a secure context: `localhost`/`127.0.0.1`, or HTTPS behind a proxy; elsewhere the
/// page still works, with the coarse clock (it says which in `window.lab.clock`).
async fn cross_origin_isolated(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "cross-origin-opener-policy",
        header::HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-embedder-policy",
        header::HeaderValue::from_static("require-corp"),
    );
    response
}

/// Where the page connects; what it polls, and how often.
async fn page_config(State(state): State<AppState>) -> Response {
    let c = &state.inner.config;
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "system1": {"ws": c.system1_ws, "status": "/api/status/system1"},
            "system2": {"ws": c.system2_ws, "status": "/api/status/system2"},
            "agents": "/api/agents",
            "pollMs": 1000,
            "relayTimeoutMs": c.relay_timeout_ms,
        })),
    )
        .into_response()
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "uptimeSecs": state.inner.started.elapsed().as_secs(),
    }))
}

/// One system's health and monitoring documents, relayed (see [`relay`]).
async fn status(Path(system): Path<String>, State(state): State<AppState>) -> Response {
    let inner = &state.inner;
    let sources = match system.as_str() {
        "system1" => &inner.system1,
        "system2" => &inner.system2,
        other => {
            let body = json!({"error": format!("unknown system {other:?}: use system1 or system2")});
            return (StatusCode::NOT_FOUND, Json(body)).into_response();
        }
    };
    let documents = relay::fetch_all(&inner.client, sources, inner.config.relay_timeout()).await;
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"system": system, "documents": documents})),
    )
        .into_response()
}

async fn agent_figures(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(state.inner.agents.document()),
    )
        .into_response()
}

/// Completes on Ctrl-C or SIGTERM.
pub use lab_core::signal::shutdown as shutdown_signal;
