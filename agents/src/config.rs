//! The agents' configuration: flags, each with an environment variable (the original's names).

use clap::Parser;
use lab_core::logging::LogArgs;

/// Fake metric sources and an open-loop load generator for the telemetry lab.
#[derive(Debug, Clone, Parser)]
#[command(name = "agents", version)]
pub struct Config {
    /// How many simulated servers send metrics (ids `server-1` … `server-N`).
    #[arg(long, env = "FAKE_SERVER_COUNT", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub agents: u64,

    /// Milliseconds between two metrics of one simulated server.
    #[arg(long, env = "FAKE_SERVER_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub interval_ms: u64,

    /// Probability that a metric starts a spike (0 to 1).
    #[arg(long, env = "FAKE_SPIKE_PROBABILITY", default_value_t = 0.05, value_parser = probability)]
    pub spike_probability: f64,

    /// How much a spike multiplies cpu and network in.
    #[arg(long, env = "FAKE_SPIKE_MULTIPLIER", default_value_t = 2.5)]
    pub spike_multiplier: f64,

    /// Random jitter added to each interval, in milliseconds.
    #[arg(long, env = "FAKE_JITTER_MS", default_value_t = 200)]
    pub jitter_ms: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,

    /// Print the effective configuration (flags, environment, defaults; secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("must be between 0 and 1 (got {p})"));
    }
    Ok(p)
}
