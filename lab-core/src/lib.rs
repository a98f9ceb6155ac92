//! # lab-core: what both pipelines of the telemetry lab share
//!
//! The lab compares two pipelines under the same load. For that comparison to mean anything, both
//! must read the same messages, reject the same mistakes and compute the same aggregates: the only
//! differences should be the transport (HTTP + Redis vs WebSocket) and the state store (Redis vs
//! memory). Everything they share lives here.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`limits`] | every bound on input, as documented constants |
//! | [`metric`] | the metric model, its fast deserializer and its diagnosing walker |
//! | [`problem`] | [`Problem`] (path + message) and the field rules both parse paths share |
//! | [`parse`] | the entry points from bytes: size and depth checks, fast path, full diagnosis |
//! | [`wire`] | every other message of `docs/protocol.md`, for System 1 and System 2, and the servers' fast writers of them |
//! | [`aggregate`] | per-server sliding windows, O(1) per sample |
//! | [`outbox`] | a dashboard's bounded outgoing queue and the slow-dashboard policy both systems apply |
//! | [`delivery`] | the one dashboard delivery loop both systems run: heartbeat, slow check, feed/flush, write stalls |
//! | [`report`] | what a load run measured: the agents' report, read by `lab up`, `lab run` and the benchmarks |
//! | [`duration`] | `30s`, `500ms`, `2m`: the one duration parser of every flag and scenario file |
//! | [`logging`] | pino/bunyan JSON logs or human logs, and the `--log-level` flag |
//! | [`secret`] | passwords and tokens that never print |
//! | [`signal`] | waiting for Ctrl-C or SIGTERM, in every binary |
//!
//! Data flows through it like this: bytes → [`parse`] (→ [`Problem`]s on bad input) → [`Metric`]
//! → [`aggregate::ServerWindows::add`] → [`aggregate::WindowSummaries`] → [`wire`] messages out.

pub mod aggregate;
pub mod delivery;
pub mod duration;
pub mod limits;
pub mod logging;
pub mod metric;
pub mod outbox;
pub mod parse;
pub mod problem;
pub mod report;
pub mod secret;
pub mod signal;
pub mod wire;

pub use metric::{Metric, Network, Readings};
pub use parse::ParseError;
pub use problem::Problem;

/// The current wall-clock time in epoch milliseconds, with a fraction: the clock every timestamp and
/// every latency of the lab is read from, so that all measurements share one definition.
pub fn now_ms() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs_f64() * 1000.0
}
