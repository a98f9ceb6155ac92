//! The agents' command line: every flag has an environment variable (the original lab's `FAKE_*`
//! names where it had them); flags win over env vars; bad values are refused before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lab_core::logging::LogArgs;

/// Fake metric sources and an open-loop load generator for the telemetry lab.
///
/// Simulated servers (server-1 … server-N) send metrics to System 1 (HTTP/1.1 or HTTP/2) or System 2
/// (WebSocket) at a fixed total rate. Every metric is due at a fixed time and carries that time as its
/// `timestamp`; latency counts from it, so a server that stalls shows up as latency (no coordinated
/// omission). With --dashboard, a built-in subscriber measures end-to-end latency (receipt − timestamp)
/// and counts lost and duplicated metrics by `seq`.
///
/// Examples:
///   agents --target ws://localhost:4100 --rate 1000 --duration 30s --dashboard ws://localhost:4100
///   agents --target http://localhost:4000 --protocol http2 --batch 50 --rate 50000 --json run.json
///   agents merge a.json b.json --json total.json
#[derive(Debug, Clone, Parser)]
#[command(name = "agents", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Another task than sending metrics.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

/// The subcommands besides the default (sending metrics).
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Merge the --json reports of agents run in several processes into one (histograms merge exactly).
    Merge {
        /// The reports to merge.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Write the merged report here (else only the summary is printed).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A discard sink: acks every metric at once and does nothing else. For measuring the agents' own
    /// ceiling, so that the lab measures the systems, not its load generator.
    Sink {
        /// Port to listen on (WebSocket at /, HTTP POST /metrics).
        #[arg(long, default_value_t = 4999)]
        port: u16,
    },
}

/// How metrics travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// System 1: `POST /metrics` over HTTP/1.1, one request at a time per connection.
    Http1,
    /// System 1: `POST /metrics` over cleartext HTTP/2 (prior knowledge), many streams per connection.
    Http2,
    /// System 2: `metric` frames over WebSocket.
    Ws,
}

/// Which fields a metric carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wire {
    /// The lab's protocol with its extensions (`seq`; batches).
    Lab,
    /// The original Node.js lab's protocol: no `seq`, no batches (so no loss counting), cpu ≤ 100.
    Original,
}

pub use lab_core::duration::parse_duration;

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("must be between 0 and 1 (got {p})"));
    }
    Ok(p)
}

fn positive_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !r.is_finite() || r <= 0.0 || r > 100_000_000.0 {
        return Err(format!(
            "must be above 0 and at most 100000000 metrics/s (got {r})"
        ));
    }
    Ok(r)
}

fn multiplier(s: &str) -> Result<f64, String> {
    let m: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !m.is_finite() || !(1.0..=100.0).contains(&m) {
        return Err(format!("must be between 1 and 100 (got {m})"));
    }
    Ok(m)
}

fn id_prefix(s: &str) -> Result<String, String> {
    let probe = format!("{s}1");
    lab_core::problem::check_server_id(&probe).map_err(|e| format!("server ids {probe:?}… {e}"))?;
    if s.len() > 100 {
        return Err("must be at most 100 bytes long".into());
    }
    Ok(s.to_owned())
}

/// What to send, where, how fast, and what to measure.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Where to send: ws://host:4100 (System 2) or http://host:4000 (System 1; /metrics is added).
    /// https://… sends over TLS (HTTP/2 or HTTP/1.1 chosen by ALPN as --protocol says) and needs
    /// --tls-ca.
    #[arg(long, env = "AGENTS_TARGET", default_value = "ws://127.0.0.1:4100")]
    pub target: String,

    /// The certificate (PEM) to trust for an https:// target: the lab's nginx's or `system1 api
    /// --tls-self-signed`'s self-signed certificate, or the CA that signed it. Nothing else is
    /// trusted: the agents load a lab, not the internet, so no system trust store is read.
    #[arg(long, env = "AGENTS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// How to send. Defaults to ws for ws:// targets and http1 for http:// ones.
    #[arg(long, env = "AGENTS_PROTOCOL", value_enum)]
    pub protocol: Option<Protocol>,

    /// How many simulated servers send metrics (ids PREFIX1 … PREFIXN).
    #[arg(long, env = "FAKE_SERVER_COUNT", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub agents: u64,

    /// The prefix of the simulated servers' ids.
    #[arg(long, env = "AGENTS_ID_PREFIX", default_value = "server-", value_parser = id_prefix)]
    pub id_prefix: String,

    /// Total metrics per second over all agents. Overrides --interval-ms.
    #[arg(long, env = "AGENTS_RATE", value_parser = positive_rate)]
    pub rate: Option<f64>,

    /// Milliseconds between two metrics of one agent (the original's setting), when --rate is not given.
    #[arg(long, env = "FAKE_SERVER_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub interval_ms: u64,

    /// Metrics per message: 1 sends single metrics (the original protocol); more uses the batch extension.
    #[arg(long, env = "AGENTS_BATCH", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,

    /// Connections to the target; agents are spread over them.
    #[arg(long, env = "AGENTS_CONNECTIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connections: u64,

    /// How long to send, e.g. 30s, 2m; 0 runs until Ctrl-C.
    #[arg(long, env = "AGENTS_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Sent but not measured at the start, while connections and caches warm up.
    #[arg(long, env = "AGENTS_WARMUP", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// How long to wait after the last send for acks and dashboard updates still on their way.
    #[arg(long, env = "AGENTS_COOLDOWN", default_value = "2s", value_parser = parse_duration)]
    pub cooldown: Duration,

    /// A dashboard endpoint to measure end-to-end latency and loss: ws://host:4100 (System 2) or
    /// ws://host:4002 (System 1's broadcaster).
    #[arg(long, env = "AGENTS_DASHBOARD")]
    pub dashboard: Option<String>,

    /// Which protocol's fields to send; `original` can load the original Node.js lab.
    #[arg(long, env = "AGENTS_WIRE", value_enum, default_value_t = Wire::Lab)]
    pub wire: Wire,

    /// Seed of the simulated readings: the same seed sends the same values.
    #[arg(long, env = "AGENTS_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Probability that a metric starts a spike (0 to 1).
    #[arg(long, env = "FAKE_SPIKE_PROBABILITY", default_value_t = 0.05, value_parser = probability)]
    pub spike_probability: f64,

    /// How much a spike multiplies cpu (capped at 100) and network in.
    #[arg(long, env = "FAKE_SPIKE_MULTIPLIER", default_value_t = 2.5, value_parser = multiplier)]
    pub spike_multiplier: f64,

    /// Random jitter of each metric's send time, ± milliseconds (at most half the interval between two
    /// metrics of a connection). It moves the due time itself, so it is never counted as latency.
    #[arg(long, env = "FAKE_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,

    /// Auth token for System 2 (sent in the URL).
    #[arg(long, env = "AGENTS_TOKEN", hide_env_values = true)]
    pub token: Option<lab_core::secret::Secret>,

    /// Write the full report (summary, per-second timeline, mergeable histograms) to this file.
    #[arg(long, env = "AGENTS_JSON")]
    pub json: Option<PathBuf>,

    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,

    /// Also print one JSON line per second on stdout: that second's rates and latencies, errors so
    /// far, and metrics overdue at the dashboard. This is how `lab up` shows a run live.
    #[arg(long, env = "AGENTS_LIVE_JSON")]
    pub live_json: bool,

    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl RunArgs {
    /// The protocol in force: the flag, else guessed from the target's scheme.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(if self.target.starts_with("http") {
            Protocol::Http1
        } else {
            Protocol::Ws
        })
    }

    /// Metrics per second over all agents.
    pub fn total_rate(&self) -> f64 {
        self.rate
            .unwrap_or(self.agents as f64 * 1000.0 / self.interval_ms as f64)
    }

    /// Checks what clap cannot: combinations, and the target's form.
    pub fn validate(&self) -> Result<(), String> {
        let protocol = self.protocol();
        let scheme_ok = match protocol {
            Protocol::Ws => self.target.starts_with("ws://") || self.target.starts_with("wss://"),
            Protocol::Http1 | Protocol::Http2 => {
                self.target.starts_with("http://") || self.target.starts_with("https://")
            }
        };
        if !scheme_ok {
            return Err(format!(
                "--target {:?} does not fit --protocol {:?}: use ws://… for ws and http://… or https://… \
                 for http1/http2",
                self.target,
                format!("{protocol:?}").to_lowercase()
            ));
        }
        if self.target.starts_with("https://") && self.tls_ca.is_none() {
            return Err(format!(
                "--target {:?} is https: give the certificate to trust with --tls-ca FILE (PEM)",
                self.target
            ));
        }
        if self.jitter_ms > 0 && self.batch > 1 {
            return Err(
                "--jitter-ms moves each metric's send time; a batch is sent at one time: use --batch 1"
                    .into(),
            );
        }
        if self.wire == Wire::Original && self.batch > 1 {
            return Err("--wire original has no batches: use --batch 1".into());
        }
        if self.connections > self.agents {
            return Err(format!(
                "--connections {} is more than --agents {}: each connection carries at least one agent",
                self.connections, self.agents
            ));
        }
        if let Some(dashboard) = &self.dashboard
            && !(dashboard.starts_with("ws://") || dashboard.starts_with("wss://"))
        {
            return Err(format!("--dashboard {dashboard:?} must be a ws:// URL"));
        }
        Ok(())
    }
}
