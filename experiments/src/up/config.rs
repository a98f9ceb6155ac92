//! `lab up`'s command line, and the ports it will use.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use lab_core::duration::parse_duration;

/// `lab up`'s flags; its help text is on the `up` subcommand in `src/bin/lab.rs`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Run for this long (e.g. 30s, 2m), then stop and print the summary; without it, run until
    /// Ctrl-C.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub run_for: Option<Duration>,

    /// Send for this long before `--for` starts, without measuring it (connections and caches warm
    /// up; `lab run`'s scenarios use it). The run lasts the warm-up plus `--for`.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Metrics per second sent to each system.
    #[arg(long, env = "LAB_RATE", default_value_t = 200.0, value_parser = positive_rate)]
    pub rate: f64,

    /// Simulated servers per system, each on its own connection (up to 64 connections).
    #[arg(long, env = "LAB_AGENTS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub agents: u64,

    /// How the agents reach System 1: HTTP/1.1 or cleartext HTTP/2.
    #[arg(long, env = "LAB_PROTOCOL", value_enum, default_value_t = HttpProtocol::Http1)]
    pub protocol: HttpProtocol,

    /// Metrics per message (1: the original protocol, one metric per POST or frame).
    #[arg(long, env = "LAB_BATCH", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,

    /// System 1's consumer-group workers (tasks of the one `system1 all` process, each its own
    /// consumer of the stream): `lab run scaling` varies it.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub system1_workers: u64,

    /// Run one system only (with its agents), e.g. to find how far it goes with the machine to
    /// itself: `lab run saturation` does. Without it, both run side by side.
    #[arg(long, value_enum, value_name = "SYSTEM")]
    pub only: Option<OnlySystem>,

    /// Run System 1's roles as separate processes, as a deployment would: `system1 api`,
    /// `system1 broadcaster`, and one `system1 worker` process per `--system1-workers`, each its own
    /// consumer in the group. Without it, one `system1 all` process runs them all. A
    /// `kill-worker` fault turns it on, so that one worker can die alone.
    #[arg(long)]
    pub system1_processes: bool,

    /// Inject a fault during the run: KIND@AT or KIND@AT:DOWN, AT and DOWN durations counted from
    /// the start of sending (warm-up included). Kinds: kill-worker (kill -9 one System 1 worker;
    /// restarted after DOWN if given), restart-redis (kill -9 the private Redis, start it again
    /// on the same files after DOWN, default 2s), restart-system2 (the same for System 2),
    /// stall-dashboard (a dashboard on each system that stops reading, for DOWN or to the end).
    /// Repeat the flag for several. What happened goes in --json under "faults".
    #[arg(long = "fault", value_name = "KIND@AT[:DOWN]", value_parser = super::fault::parse_fault)]
    pub faults: Vec<super::fault::Fault>,

    /// How long a System 1 worker owns its partitions without renewing them (`system1 worker
    /// --lease-ms`): after a worker dies, its partitions wait this long for another worker, which
    /// then claims their unacknowledged entries at once. At least 3 s (three of the workers' 1 s
    /// reads).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub system1_lease: Duration,

    /// How long a System 1 entry stays pending with a consumer that is not its partition's owner
    /// before the owner claims it (`system1 worker --claim-idle-ms`; a worker that stalled past its
    /// lease and read on). The lab uses 5 s, not System 1's 30 s, so that a recovery fits in a run.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub system1_claim_idle: Duration,

    /// How the private Redis makes System 1's stream durable: its append-only file fsynced on
    /// every write (`always`), once a second (`everysec`, Redis's default), or no AOF at all (`off`).
    /// `lab run durability` varies it. Ignored with --redis-url.
    #[arg(long, value_enum, default_value_t = RedisFsync::Everysec)]
    pub redis_fsync: RedisFsync,

    /// Write the summary as JSON to this file: `{"system1": …, "system2": …}`, each that system's
    /// agents report (`null` for a system that did not run).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Use this Redis for System 1 instead of starting a private one.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Port of the private Redis (0: any free port). Ignored with --redis-url.
    #[arg(long, env = "LAB_REDIS_PORT", default_value_t = 0)]
    pub redis_port: u16,

    /// Moves every service port at once: System 1 at BASE (HTTP/1.1), BASE+1 (HTTP/2), BASE+2
    /// (dashboard WebSocket) and BASE+3 (workers' ops), System 2 at BASE+100, the dashboard page at
    /// BASE+80. A per-service flag wins over it.
    #[arg(long, env = "LAB_BASE_PORT", default_value_t = 4000, value_parser = clap::value_parser!(u16).range(1..=65_435))]
    pub base_port: u16,

    /// System 1's HTTP/1.1 ingest port [default: BASE].
    #[arg(long)]
    pub system1_http_port: Option<u16>,
    /// System 1's HTTP/2 ingest port [default: BASE+1].
    #[arg(long)]
    pub system1_http2_port: Option<u16>,
    /// System 1's dashboard WebSocket port [default: BASE+2].
    #[arg(long)]
    pub system1_ws_port: Option<u16>,
    /// The port of System 1 workers' ops endpoints [default: BASE+3].
    #[arg(long)]
    pub system1_ops_port: Option<u16>,
    /// System 2's WebSocket port [default: BASE+100].
    #[arg(long)]
    pub system2_port: Option<u16>,
    /// The dashboard page's port [default: BASE+80].
    #[arg(long)]
    pub dashboard_port: Option<u16>,

    /// The address the services listen on. The default keeps the lab on this machine.
    #[arg(long, env = "LAB_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// What to do when a service dies: stop the whole lab, or start the service again (at most
    /// 5 times; the agents are never restarted, since their report would restart too).
    #[arg(long, value_enum, default_value_t = OnExit::Stop)]
    pub on_child_exit: OnExit,

    /// How long to wait for each service to be ready.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// Keep the services' logs in this folder (created if needed) instead of a temporary one that
    /// is removed at the end.
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
}

/// The most connections one system's agents open: beyond it, simulated servers share connections.
pub const MAX_CONNECTIONS: u64 = 64;

fn positive_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0 {
        Ok(rate)
    } else {
        Err(format!(
            "{s} is not a rate between 0 (excluded) and 10000000 metrics/s"
        ))
    }
}

/// `--only`: the one system to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnlySystem {
    /// System 1 (and its Redis) without System 2.
    System1,
    /// System 2 without System 1 or Redis.
    System2,
}

/// How the agents reach System 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpProtocol {
    /// `POST /metrics` over HTTP/1.1 (to the HTTP/1.1 port).
    Http1,
    /// `POST /metrics` over cleartext HTTP/2 (to the HTTP/2 port).
    Http2,
}

/// The private Redis's durability: its AOF and when it is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisFsync {
    /// AOF on, fsync after every write: nothing acknowledged is lost on a crash, at a cost per write.
    Always,
    /// AOF on, fsync once a second: a crash loses up to about a second of writes.
    Everysec,
    /// No AOF: a crash loses everything since the start.
    Off,
}

/// What to do when a service dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnExit {
    /// Stop everything and exit with an error.
    Stop,
    /// Start it again.
    Restart,
}

/// One port the lab will listen on, and the flag that moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// The port number.
    pub number: u16,
    /// What listens on it.
    pub what: &'static str,
    /// The flag that changes it.
    pub flag: &'static str,
}

/// Every port of the lab.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// System 1's HTTP/1.1 ingest.
    pub http: Port,
    /// System 1's HTTP/2 ingest.
    pub http2: Port,
    /// System 1's dashboard WebSocket.
    pub ws: Port,
    /// System 1 workers' ops endpoints.
    pub ops: Port,
    /// System 2.
    pub system2: Port,
    /// The dashboard page.
    pub dashboard: Port,
}

impl Ports {
    /// The ports of System 1 (first four) and System 2.
    pub fn all(&self) -> [Port; 5] {
        [self.http, self.http2, self.ws, self.ops, self.system2]
    }
}

impl UpArgs {
    /// The ports, from the per-service flags or else the base port.
    pub fn ports(&self) -> Ports {
        let base = self.base_port;
        let port = |given: Option<u16>, offset: u16, what, flag| Port {
            number: given.unwrap_or(base + offset),
            what,
            flag,
        };
        Ports {
            http: port(
                self.system1_http_port,
                0,
                "System 1 HTTP/1.1 ingest",
                "--system1-http-port",
            ),
            http2: port(
                self.system1_http2_port,
                1,
                "System 1 HTTP/2 ingest",
                "--system1-http2-port",
            ),
            ws: port(
                self.system1_ws_port,
                2,
                "System 1 dashboard WebSocket",
                "--system1-ws-port",
            ),
            ops: port(
                self.system1_ops_port,
                3,
                "System 1 workers' ops endpoints",
                "--system1-ops-port",
            ),
            system2: port(self.system2_port, 100, "System 2 WebSocket", "--system2-port"),
            dashboard: port(self.dashboard_port, 80, "the dashboard page", "--dashboard-port"),
        }
    }

    /// The agents' arguments common to both systems.
    pub fn agents_args(&self) -> Vec<OsString> {
        let duration = self
            .run_for
            .map_or("0".to_string(), |d| format!("{}ms", d.as_millis()));
        [
            "--rate".to_string(),
            self.rate.to_string(),
            "--agents".into(),
            self.agents.to_string(),
            // Each simulated server on its own connection, as in the original lab, so that an
            // HTTP/1.1 connection's one-request-at-a-time does not queue one server behind another.
            "--connections".into(),
            self.agents.min(MAX_CONNECTIONS).to_string(),
            "--batch".into(),
            self.batch.to_string(),
            "--duration".into(),
            duration,
            "--warmup".into(),
            format!("{}ms", self.warmup.as_millis()),
            // Waited for only while updates are still missing, so it costs nothing when none are;
            // generous, so that a machine busy with other work does not count late updates as lost.
            "--cooldown".into(),
            "5s".into(),
            "--live-json".into(),
            "--quiet".into(),
            "--log-format".into(),
            "json".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    }
}
