//! System 2's configuration: flags, each with an environment variable (the original's names where it
//! had them), checked at start-up so that a bad value fails before the first connection, not during it.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use lab_core::aggregate::{WindowSpec, WindowSpecError};
use lab_core::logging::LogArgs;
use lab_core::secret::Secret;

/// System 2 of the telemetry lab: metrics in over WebSocket, aggregated in memory over sliding windows,
/// pushed straight back out to dashboards.
///
/// Producers and dashboards connect to ws://HOST:PORT/ and speak the lab's JSON protocol
/// (docs/protocol.md). The same port serves the ops endpoints: GET /api/health, /api/health/websocket,
/// /api/monitoring, /api/monitoring/server/{id}, and Prometheus metrics at GET /metrics.
#[derive(Debug, Clone, Parser)]
#[command(name = "system2", version, next_line_help = false)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SYSTEM2_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port of the WebSocket endpoint (`ws://host:PORT/`) and of the ops endpoints. 0 picks a free one.
    #[arg(long, env = "SYSTEM2_WS_PORT", default_value_t = 4100)]
    pub port: u16,

    /// The shortest aggregation window, in milliseconds; the others are 5× and 10× it.
    #[arg(long, env = "SYSTEM2_AGG_WINDOW_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=8_640_000))]
    pub agg_window_ms: u64,

    /// Explicit window lengths in ms, comma-separated (e.g. `1000,60000`); overrides --agg-window-ms.
    #[arg(long, env = "SYSTEM2_WINDOWS_MS", value_delimiter = ',')]
    pub windows_ms: Vec<u64>,

    /// How many recent samples each server's circular buffer keeps.
    #[arg(long, env = "SYSTEM2_BUFFER_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub buffer_size: u64,

    /// Most distinct servers tracked at once. A metric for a new server beyond this is refused with an
    /// error naming the limit; servers idle for --server-idle-secs are forgotten, making room.
    #[arg(long, env = "SYSTEM2_MAX_SERVERS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_servers: u64,

    /// Seconds without a metric after which a server's windows are forgotten.
    #[arg(long, env = "SYSTEM2_SERVER_IDLE_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub server_idle_secs: u64,

    /// Most WebSocket connections at once; one more is closed with code 1013 (try again later).
    #[arg(long, env = "SYSTEM2_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Largest WebSocket message (and frame), in bytes; a larger one closes the connection with 1009.
    #[arg(long, env = "SYSTEM2_MAX_MESSAGE_BYTES", default_value_t = lab_core::limits::MAX_MESSAGE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=1_048_576))]
    pub max_message_bytes: u64,

    /// Most messages per second one connection may send, sustained (bursts of one second's worth are
    /// fine). Past it the connection is closed with 1008. 0 means no limit.
    #[arg(long, env = "SYSTEM2_MAX_MESSAGES_PER_SEC", default_value_t = 200_000)]
    pub max_messages_per_sec: u64,

    /// Updates queued per dashboard before they are coalesced to the latest per server (and then,
    /// past as many coalesced servers again, dropped and counted).
    #[arg(long, env = "SYSTEM2_DASHBOARD_QUEUE", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub dashboard_queue: u64,

    /// Milliseconds a dashboard may stay backed up (queue full, or a write blocked) before it is
    /// closed with 1008.
    #[arg(long, env = "SYSTEM2_SLOW_DASHBOARD_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub slow_dashboard_ms: u64,

    /// Milliseconds between heartbeat pings. A client that has sent nothing (not even the pong) by the
    /// next ping is dropped with close code 4000.
    #[arg(long, env = "SYSTEM2_PING_INTERVAL_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub ping_interval_ms: u64,

    /// Most milliseconds a metric's timestamp may be ahead of this server's clock.
    #[arg(long, env = "SYSTEM2_MAX_CLOCK_SKEW_MS", default_value_t = 60_000)]
    pub max_clock_skew_ms: u64,

    /// Shared secret clients must present, in the URL (`?token=…`) or in their `register` frame, before
    /// anything else. Unset: no authentication.
    #[arg(long, env = "SYSTEM2_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,

    /// Milliseconds to wait, on Ctrl-C or SIGTERM, for clients to be told (close 1001) before exiting.
    #[arg(long, env = "SYSTEM2_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,

    /// Print the effective configuration (flags, environment, defaults; secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Config {
    /// The configuration of a test server: free port on loopback, defaults otherwise.
    pub fn for_tests() -> Self {
        Config::parse_from(["system2", "--host", "127.0.0.1", "--port", "0"])
    }

    /// The aggregation windows this configuration asks for.
    pub fn window_spec(&self) -> Result<WindowSpec, WindowSpecError> {
        if self.windows_ms.is_empty() {
            WindowSpec::from_base(self.agg_window_ms)
        } else {
            WindowSpec::new(self.windows_ms.iter().copied())
        }
    }

    /// The heartbeat interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// How long a dashboard may stay backed up.
    pub fn slow_dashboard(&self) -> Duration {
        Duration::from_millis(self.slow_dashboard_ms)
    }

    /// How long idle servers are kept.
    pub fn server_idle(&self) -> Duration {
        Duration::from_secs(self.server_idle_secs)
    }
}
