//! # System 2: fast and ephemeral
//!
//! Metrics arrive over WebSocket, are aggregated in memory in per-server sliding windows, and the
//! derived metrics go straight back out to dashboards over the same kind of socket. No broker, no disk:
//! the lesson is how fast that is, and what is lost when the process dies.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | flags and environment variables |
//! | [`hub`] | the shared state: server windows (sharded), the dashboard registry, the counters |
//! | [`connection`] | what one WebSocket connection's messages mean: registration, metrics, acks, limits (the loop around it is lab-core's [`lab_core::delivery`], the one System 1's broadcaster runs too) |
//! | [`stats`] | counters and close reasons, exposed to Prometheus and the monitoring JSON |
//!
//! A metric's way through: `connection` parses it (lab-core) → `hub` aggregates it (lab-core's
//! windows) and pushes one serialized update to each matching outbox (lab-core's) → each dashboard's own
//! `connection` task sends it (lab-core's delivery loop). The producer gets its ack from its own task, right after.
//!
//! Run with `cargo run --release -p system2-ws --bin system2`; see `--help`.

pub mod cli;
pub mod config;
pub mod connection;
pub mod hub;
pub mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use lab_ops::http::WebSocketHealth;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection::{Auth, constant_time_eq};
use crate::hub::Hub;

/// The write buffer a connection fills before it writes to the socket, in bytes.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// How much a connection reads from its socket at once, in bytes. tungstenite zero-fills this much
/// before every read, so its default (128 KiB) cost a 128 KiB `memset` per read: 10 % of the server's
/// time under load, found with `perf`. 16 KiB still holds about a hundred metrics per read.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What the HTTP handlers share.
#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    /// Tells every connection task to close (code 1001).
    shutdown: CancellationToken,
    /// Tracks connection tasks, so shutdown can wait for them.
    tasks: TaskTracker,
}

/// A bound, not yet running System 2 server. Binding first lets a caller (a test, `lab up`) learn the
/// port before anything runs: `Server::bind` with port 0, then `local_addr`, then `run`.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Binds the configured address; fails for a port in use or an invalid configuration.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let address = SocketAddr::new(config.host, config.port);
        let hub = Arc::new(Hub::new(config).context("invalid configuration")?);
        let listener = lab_ops::listen(address, "--port or SYSTEM2_WS_PORT").await?;
        let state = AppState {
            hub,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        Ok(Server { listener, state })
    }

    /// The address it listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state, for tests that look inside.
    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// Serves until `shutdown` completes, then closes every connection with 1001 and returns once
    /// they are closed or `--shutdown-timeout-ms` has passed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Server { listener, state } = self;
        let hub = state.hub.clone();
        let stop = state.shutdown.clone();
        let background = tokio::spawn(background(hub.clone(), stop.clone()));
        let app = router(state.clone());
        let signal_stop = stop.clone();
        // TCP_NODELAY: send each small frame at once. With Nagle's algorithm on (the default), a small
        // write waits for the peer's ACK of the previous one, and delayed ACKs make that up to 40 ms:
        // a latency lab must not measure its kernel's batching. (The original's `ws` does the same.)
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = signal_stop.cancelled() => {}
                }
                signal_stop.cancel();
            })
            .await
            .context("server failed")?;
        // New connections are no longer accepted; tell the open ones, and wait for them.
        stop.cancel();
        state.tasks.close();
        let limit = Duration::from_millis(hub.config.shutdown_timeout_ms);
        if tokio::time::timeout(limit, state.tasks.wait()).await.is_err() {
            tracing::warn!(
                remaining = state.tasks.len(),
                ?limit,
                "connections did not close in time"
            );
        }
        background.abort();
        Ok(())
    }
}

/// The routes: the WebSocket at `/`, the ops endpoints beside it.
fn router(state: AppState) -> Router {
    lab_ops::http::ops_routes(
        get(health),
        get(monitoring),
        get(prometheus),
        Some(get(websocket_health)),
    )
    .route("/", get(websocket))
    .route("/api/monitoring/server/{id}", get(server_monitoring))
    .with_state(state)
}

/// Periodic chores: the ingest-rate sample (every second) and idle-server eviction.
async fn background(hub: Arc<Hub>, stop: CancellationToken) {
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut sweep = tokio::time::interval(hub.sweep_period());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = second.tick() => hub.sample_rate(),
            _ = sweep.tick() => {
                let evicted = hub.evict_idle();
                if evicted > 0 {
                    tracing::info!(evicted, tracked = hub.servers_tracked(), "forgot idle servers");
                }
            }
        }
    }
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    Query(query): Query<HashMap<String, String>>,
    State(state): State<AppState>,
) -> Response {
    let config = &state.hub.config;
    let auth = match (&config.auth_token, query.get("token")) {
        (None, _) => Auth::Ok,
        (Some(expected), Some(given)) if constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) => {
            Auth::Ok
        }
        (Some(_), Some(_)) => Auth::Refused,
        (Some(_), None) => Auth::Pending,
    };
    let limit = config.max_message_bytes as usize;
    let AppState { hub, shutdown, tasks } = state;
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        // Room for the largest frame the server writes (a snapshot of every server), on top of what
        // is already buffered: a frame that does not fit fails the write and kills the connection.
        .max_write_buffer_size(WRITE_BUFFER_BYTES + (2 * limit).max(lab_core::limits::MAX_SNAPSHOT_BYTES))
        .on_upgrade(move |socket| tasks.track_future(connection::serve(socket, hub, auth, shutdown)))
}

/// `GET /api/health`: System 2 has no dependency that can fail, so it is healthy while it answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `"ok"`.
    pub status: &'static str,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Servers with windows in memory.
    pub servers_tracked: usize,
}

async fn health(State(state): State<AppState>) -> Response {
    let body = Health {
        status: "ok",
        uptime_secs: state.hub.started.elapsed().as_secs(),
        servers_tracked: state.hub.servers_tracked(),
    };
    lab_ops::http::health(true, body)
}

/// `GET /api/health/websocket` (the original's path): the connections, by role.
async fn websocket_health(State(state): State<AppState>) -> Json<WebSocketHealth> {
    let hub = &state.hub;
    let role = |r: &'static str| hub.stats.connections_of(r).get();
    Json(WebSocketHealth {
        status: WebSocketHealth::status(state.shutdown.is_cancelled()),
        connections: Some(hub.connections.load(std::sync::atomic::Ordering::Relaxed)),
        producers: Some(role("producer")),
        dashboards: role("dashboard"),
        unregistered: Some(role("unregistered")),
        max_connections: hub.config.max_connections,
    })
}

async fn monitoring(State(state): State<AppState>) -> Json<hub::Monitoring> {
    Json(state.hub.monitoring())
}

/// The `404` of `GET /api/monitoring/server/{id}` for a server not tracked.
#[derive(Debug, Serialize)]
struct NotTracked {
    /// `server "…" is not tracked`.
    error: String,
}

async fn server_monitoring(Path(id): Path<String>, State(state): State<AppState>) -> Response {
    match state.hub.server_monitoring(&id) {
        Some(doc) => Json(doc).into_response(),
        None => {
            let body = NotTracked {
                error: format!("server {id:?} is not tracked"),
            };
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

async fn prometheus(State(state): State<AppState>) -> Response {
    lab_ops::http::prometheus_page(state.hub.stats.prometheus_text())
}

/// Completes on Ctrl-C or SIGTERM: what a binary passes to [`Server::run`] (see
/// [`lab_core::signal::shutdown`]).
pub use lab_core::signal::shutdown as shutdown_signal;
