//! System 1's configuration: flags, each with an environment variable (the original's names).

use clap::{Args, Parser, Subcommand};
use lab_core::logging::LogArgs;
use lab_core::secret::Secret;

/// System 1 of the telemetry lab: HTTP ingest → Redis Stream → workers → pub/sub → WebSocket.
#[derive(Debug, Clone, Parser)]
#[command(name = "system1", version)]
pub struct Cli {
    /// Which role to run.
    #[command(subcommand)]
    pub role: Role,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub redis: RedisArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,

    /// Print the effective configuration (flags, environment, defaults; secrets hidden) and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
}

/// The roles; each scales by running more copies of it.
#[derive(Debug, Clone, Subcommand)]
pub enum Role {
    /// The HTTP ingest API (HTTP/1.1 and HTTP/2 on both ports).
    Api(ApiArgs),
    /// Consumer-group workers.
    Worker(WorkerArgs),
    /// The dashboard WebSocket broadcaster.
    Broadcaster(BroadcasterArgs),
    /// One of each, in one process.
    All {
        #[command(flatten)]
        #[allow(missing_docs)]
        api: ApiArgs,
        #[command(flatten)]
        #[allow(missing_docs)]
        worker: WorkerArgs,
        #[command(flatten)]
        #[allow(missing_docs)]
        broadcaster: BroadcasterArgs,
    },
}

/// Where Redis is and which keys to use.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[user:password@]host:port/db`); when set, the host/port/db flags are ignored.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Redis host.
    #[arg(long, env = "SYSTEM1_REDIS_HOST", default_value = "127.0.0.1", global = true)]
    pub redis_host: String,
    /// Redis port.
    #[arg(long, env = "SYSTEM1_REDIS_PORT", default_value_t = 6379, global = true)]
    pub redis_port: u16,
    /// Redis database number.
    #[arg(long, env = "SYSTEM1_REDIS_DB", default_value_t = 0, global = true)]
    pub redis_db: i64,
    /// Redis ACL user name.
    #[arg(long, env = "SYSTEM1_REDIS_USERNAME", global = true)]
    pub redis_username: Option<String>,
    /// Redis password.
    #[arg(long, env = "SYSTEM1_REDIS_PASSWORD", global = true, hide_env_values = true)]
    pub redis_password: Option<Secret>,
    /// The stream metrics are appended to.
    #[arg(
        long,
        env = "SYSTEM1_REDIS_STREAM_KEY",
        default_value = crate::store::DEFAULT_STREAM,
        global = true
    )]
    pub stream_key: String,
    /// **(ours)** How many partitions the stream is cut into, by a hash of `serverId`
    /// (`<stream>:{p0}` …; with 1, the stream is `--stream-key` itself, the original's layout). Each
    /// partition is processed by one worker at a time, which keeps its servers' windows in memory:
    /// more partitions than workers lets the work spread and move in small steps. The API and every
    /// worker must be given the same number.
    #[arg(long, env = "SYSTEM1_PARTITIONS", default_value_t = crate::store::DEFAULT_PARTITIONS,
          global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub partitions: u16,
    /// The pub/sub channel of ingest and processing events.
    #[arg(
        long,
        env = "SYSTEM1_REDIS_CHANNEL",
        default_value = crate::store::DEFAULT_CHANNEL,
        global = true
    )]
    pub channel: String,
    /// **(ours)** The capped stream the workers append their `metric.processed` events to, beside
    /// publishing them, so that a broadcaster can read on from where it was after any gap (see
    /// [`crate::broadcaster`]). Its count of events ever added is the key `<this>:count`.
    #[arg(
        long,
        env = "SYSTEM1_PROCESSED_STREAM",
        default_value = crate::store::DEFAULT_PROCESSED_STREAM,
        global = true
    )]
    pub processed_stream: String,
    /// **(ours)** The `processed` stream keeps about this many events (`XADD MAXLEN ~`): the bound on
    /// its memory, and how far behind a broadcaster may fall (or how long it may be away) and still
    /// catch up. 100 000 is 50 s at 2 000 metrics/s. Events trimmed before a broadcaster read them are
    /// reported to its dashboards as a `gap` and counted (`gapEvents` in its `/api/monitoring`).
    #[arg(long, env = "SYSTEM1_PROCESSED_MAXLEN", default_value_t = 100_000, global = true,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub processed_maxlen: u64,
}

impl RedisArgs {
    /// The stream's partitions ([`crate::store::Partitions`]).
    pub fn partitions(&self) -> crate::store::Partitions {
        crate::store::Partitions::new(&self.stream_key, self.partitions)
    }

    /// The Redis URL: `--redis-url` as given, else one built from the host/port/db/user/password flags
    /// (user and password percent-encoded, so any character works).
    pub fn url(&self) -> String {
        if let Some(url) = &self.redis_url {
            return url.clone();
        }
        let credentials = match (&self.redis_username, &self.redis_password) {
            (None, None) => String::new(),
            (user, password) => format!(
                "{}:{}@",
                percent_encode(user.as_deref().unwrap_or("")),
                percent_encode(password.as_ref().map(|p| p.expose()).unwrap_or(""))
            ),
        };
        format!(
            "redis://{credentials}{}:{}/{}",
            self.redis_host, self.redis_port, self.redis_db
        )
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API's ports.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// First ingest port (HTTP/1.1 and cleartext HTTP/2).
    #[arg(long, env = "SYSTEM1_HTTP_PORT", default_value_t = 4000)]
    pub http_port: u16,
    /// Second ingest port (the original's HTTP/2 port; ours serves both protocols on both).
    #[arg(long, env = "SYSTEM1_HTTP2_PORT", default_value_t = 4001)]
    pub http2_port: u16,

    /// Address to listen on.
    #[arg(long, env = "SYSTEM1_HOST", default_value = "0.0.0.0")]
    pub host: std::net::IpAddr,

    /// The stream keeps at most this many entries, plus up to 100 before it is trimmed back: the bound on
    /// Redis memory. Trimming drops the oldest entries even if no worker processed them; those are
    /// counted (the workers' `/api/monitoring`, `trimmedUnprocessed`).
    #[arg(long, env = "SYSTEM1_STREAM_MAXLEN", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1000..))]
    pub stream_maxlen: u64,

    /// Most requests waiting for Redis at once (queued for the next group commit, or in the call under
    /// way); one more is answered 503 with Retry-After and counted (`requestsShed`).
    #[arg(long, env = "SYSTEM1_MAX_IN_FLIGHT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_in_flight: u64,

    /// Most milliseconds a metric's timestamp may be ahead of this server's clock.
    #[arg(long, env = "SYSTEM1_MAX_CLOCK_SKEW_MS", default_value_t = 60_000)]
    pub max_clock_skew_ms: u64,

    /// Milliseconds to let in-flight requests finish on Ctrl-C or SIGTERM.
    #[arg(long, env = "SYSTEM1_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,

    /// Serve both API ports over TLS with this certificate chain (PEM, leaf first); needs `--tls-key`.
    /// Clients then negotiate HTTP/2 or HTTP/1.1 by ALPN, as browsers require for HTTP/2.
    #[arg(
        long,
        env = "SYSTEM1_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SYSTEM1_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Serve both API ports over TLS with a certificate generated at start-up for localhost,
    /// 127.0.0.1 and ::1 (written to a file in the temporary directory, whose path is logged, for
    /// clients to trust). For trying HTTP/2 from a browser; not for production.
    #[arg(long, env = "SYSTEM1_TLS_SELF_SIGNED",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub tls_self_signed: bool,
}

impl ApiArgs {
    /// Whether the API serves TLS.
    pub fn tls(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }
}

/// The workers' settings.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// How many consumers this process runs in the group.
    #[arg(long, env = "SYSTEM1_WORKER_COUNT", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: u64,

    /// The consumer group (created if absent).
    #[arg(long, env = "SYSTEM1_REDIS_GROUP", default_value = "metrics-workers")]
    pub group: String,

    /// This process's consumer names start with this (then `-1`, `-2`, …). Default: host and pid, so
    /// that every process in the group is distinct.
    #[arg(long, env = "SYSTEM1_CONSUMER_NAME")]
    pub consumer_name: Option<String>,

    /// Most entries read per batch (`XREADGROUP COUNT`).
    #[arg(long, env = "SYSTEM1_WORKER_BATCH", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,

    /// How long one read waits for new entries (`BLOCK`), in ms; also bounds how long shutdown waits.
    #[arg(long, env = "SYSTEM1_WORKER_BLOCK_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub block_ms: u64,

    /// **(ours)** How long a worker owns a partition without renewing its lease, in ms: a worker that
    /// dies (or stalls this long) loses its partitions to the others after at most this. Renewed every
    /// third of it, so it must be at least three times `--block-ms`.
    #[arg(long, env = "SYSTEM1_LEASE_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(30..=600_000))]
    pub lease_ms: u64,

    /// Entries of a partition this worker owns that stay pending this long with another consumer are
    /// claimed (`XAUTOCLAIM`): that consumer is presumed dead. (A partition taken over has all its
    /// pending entries claimed at once; this catches what a stalled former owner read later.) In ms.
    #[arg(long, env = "SYSTEM1_CLAIM_IDLE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub claim_idle_ms: u64,

    /// The shortest aggregation window in ms; the others are 5× and 10× it (as System 2's).
    #[arg(long, env = "SYSTEM1_AGG_WINDOW_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=8_640_000))]
    pub agg_window_ms: u64,

    /// Port of the workers' ops endpoints (/healthz, /api/monitoring, GET /metrics); 0 picks a free one.
    #[arg(long, env = "SYSTEM1_WORKER_OPS_PORT", default_value_t = 4003)]
    pub ops_port: u16,

    /// Address the workers' ops endpoints listen on. All interfaces by default, as the API's `--host`
    /// and the broadcaster's `--ws-host`; `127.0.0.1` keeps them private to the machine.
    #[arg(long, env = "SYSTEM1_WORKER_OPS_HOST", default_value = "0.0.0.0")]
    pub ops_host: std::net::IpAddr,

    /// Samples kept per server for the windows (as System 2's `SYSTEM2_BUFFER_SIZE`).
    #[arg(long, env = "SYSTEM1_BUFFER_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub buffer_size: u64,
}

/// The broadcaster's settings.
#[derive(Debug, Clone, Args)]
pub struct BroadcasterArgs {
    /// Dashboard WebSocket port (ops endpoints on the same port).
    #[arg(long, env = "SYSTEM1_WS_PORT", default_value_t = 4002)]
    pub ws_port: u16,

    /// Address the broadcaster listens on.
    #[arg(long = "ws-host", env = "SYSTEM1_WS_HOST", default_value = "0.0.0.0")]
    pub ws_host: std::net::IpAddr,

    /// Events queued per dashboard before they are coalesced to the latest per server (then dropped and
    /// counted), as in System 2.
    #[arg(long, env = "SYSTEM1_DASHBOARD_QUEUE", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub dashboard_queue: u64,

    /// Milliseconds a dashboard may stay backed up before it is closed with 1008.
    #[arg(long, env = "SYSTEM1_SLOW_DASHBOARD_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub slow_dashboard_ms: u64,

    /// Milliseconds between heartbeat pings; a dashboard silent for a whole interval is dropped (4000).
    #[arg(long, env = "SYSTEM1_PING_INTERVAL_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub ping_interval_ms: u64,

    /// Where the broadcaster reads the workers' `metric.processed` events: `stream` (the capped
    /// `processed` stream, read with `XREAD` from the last event relayed: after a Redis restart or a
    /// lost connection it catches up, and only what the cap trimmed is missing, reported as a gap) or
    /// `pubsub` (the seed's design: at-most-once, so whatever is published while it resubscribes is
    /// lost, reported as a gap of unknown size). `metric.ingested` events come by pub/sub either way.
    #[arg(long, env = "SYSTEM1_FANOUT", value_enum, default_value_t = Fanout::Stream)]
    pub fanout: Fanout,

    /// Most dashboard connections at once; one more is closed with 1013.
    #[arg(long, env = "SYSTEM1_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
}

/// How the broadcaster receives the workers' `metric.processed` events (`--fanout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fanout {
    /// Read the capped `processed` stream from the last event relayed: resumable.
    Stream,
    /// Subscribe to the pub/sub channel: at most once (the seed's design).
    Pubsub,
}
