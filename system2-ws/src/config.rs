//! System 2's configuration: flags, each with an environment variable (the original's names).

use std::net::IpAddr;

use clap::Parser;
use lab_core::logging::LogArgs;

/// System 2 of the telemetry lab: WebSocket ingest, in-memory windows, direct push to dashboards.
#[derive(Debug, Clone, Parser)]
#[command(name = "system2", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SYSTEM2_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port of the WebSocket endpoint (`ws://host:PORT/`) and of the ops endpoints.
    #[arg(long, env = "SYSTEM2_WS_PORT", default_value_t = 4100)]
    pub port: u16,

    /// The shortest aggregation window, in milliseconds; the others are 5× and 10× it.
    #[arg(long, env = "SYSTEM2_AGG_WINDOW_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=8_640_000))]
    pub agg_window_ms: u64,

    /// How many recent samples each server's circular buffer keeps.
    #[arg(long, env = "SYSTEM2_BUFFER_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub buffer_size: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,

    /// Print the effective configuration (flags, environment, defaults; secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}
