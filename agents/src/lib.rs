//! # Agents: the lab's metric sources and its measuring instrument
//!
//! If the instrument is wrong, every lesson of the lab is wrong; so this crate is written to measure
//! honestly, and to say what it measured.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | the command line |
//! | [`source`] | simulated servers: reproducible readings with trends, jitter and spikes |
//! | [`pacing`] | the open-loop schedule and the pacer that wakes senders on time |
//! | [`send`] | one task per connection: WebSocket, HTTP/1.1 or HTTP/2; acks; retries |
//! | [`dashboard`] | the built-in subscriber: end-to-end latency, loss and duplicates |
//! | [`recorder`] | what is measured: HdrHistograms and counters |
//! | [`report`] | the summary, `--json`, and merging reports of several processes |
//! | [`sink`] | a discard sink, for measuring the agents' own ceiling |
//!
//! A run ([`run`]): the dashboard subscribes first; the agents are spread over the connections; each
//! connection sends its slots when they are due; a sampler writes one timeline entry per second and
//! updates the progress line; after the last slot, the run waits `--cooldown` for acks and updates
//! still on their way; then it reports.

pub mod cli;
pub mod config;
pub mod dashboard;
pub mod pacing;
pub mod recorder;
/// The report lives in lab-core, beside everything else the lab's tools read
/// ([`lab_core::report`]); `agents::report` stays as its name here.
pub use lab_core::report;
pub mod send;
pub mod sink;
pub mod source;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::{RunArgs, Wire};
use crate::pacing::{Clock, Pacer, Schedule};
use crate::recorder::Recorder;
use crate::report::{EncodedHistograms, Generator, Percentiles, Report, RunInfo, Second, encode};
use crate::send::{Ctx, Lane, run_lane};
use crate::source::Source;

/// How long after start the first metric is due: time to open the connections.
const START_DELAY_MS: f64 = 300.0;

/// The agents as both load benchmarks run them, one instrument for both systems: against `target`,
/// `seconds` measured after 1 s of warm-up, 3 s of cooldown for the last metrics to arrive, quiet,
/// plus `args` (rate, protocol, agents, dashboard, …, as on the command line). Panics on a bad
/// argument: a benchmark's arguments are fixed in its code.
pub async fn bench(target: &str, seconds: u64, args: &[String]) -> Report {
    let mut all: Vec<String> = ["agents", "--target", target, "--duration"]
        .map(str::to_owned)
        .to_vec();
    all.push(format!("{seconds}s"));
    all.extend(["--warmup", "1s", "--cooldown", "3s", "--quiet"].map(str::to_owned));
    all.extend_from_slice(args);
    let cli =
        <crate::config::Cli as clap::Parser>::try_parse_from(all).expect("the benchmark's agents arguments");
    run(cli.run, CancellationToken::new(), false)
        .await
        .expect("the agents' report")
}

/// Runs the agents as `args` say, until the duration is over or `stop` is cancelled (then the report
/// is marked partial). `progress` shows a live line on stderr.
pub async fn run(args: RunArgs, stop: CancellationToken, progress: bool) -> anyhow::Result<Report> {
    args.validate().map_err(anyhow::Error::msg)?;
    let clock = Clock::new();
    let rate = args.total_rate();
    let start_ms = clock.now_ms() + START_DELAY_MS;
    let measure_from = start_ms + args.warmup.as_secs_f64() * 1000.0;
    let end_ms = if args.duration.is_zero() {
        f64::INFINITY
    } else {
        measure_from + args.duration.as_secs_f64() * 1000.0
    };
    let recorder = Arc::new(Recorder::new(clock, measure_from));

    // The dashboard first, so that it sees the first metric.
    let dashboard_stop = CancellationToken::new();
    let dashboard = match &args.dashboard {
        Some(url) => {
            let (ready, is_ready) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(dashboard::subscribe(
                url.clone(),
                args.id_prefix.clone(),
                args.agents,
                recorder.clone(),
                dashboard_stop.clone(),
                ready,
            ));
            match is_ready.await {
                Ok(Ok(())) => Some(task),
                Ok(Err(e)) => anyhow::bail!(e),
                Err(_) => anyhow::bail!("the dashboard subscriber ended before it was ready"),
            }
        }
        None => None,
    };

    let connections = args.connections as usize;
    let pacer = Pacer::start(connections, clock);
    let interval_ms = 1000.0 * connections as f64 / rate;
    let ctx = Arc::new(Ctx {
        args: args.clone(),
        recorder: recorder.clone(),
        pacer: pacer.clone(),
        end_ms,
        stop: stop.clone(),
    });
    let mut lanes = tokio::task::JoinSet::new();
    for c in 0..connections {
        let sources = (1..=args.agents)
            .filter(|a| (a - 1) as usize % connections == c)
            .map(|a| {
                Source::new(
                    &args.id_prefix,
                    a,
                    args.seed,
                    args.spike_probability,
                    args.spike_multiplier,
                )
            })
            .collect();
        // Connections are staggered across one interval, so that the total is smooth.
        let offset = interval_ms * c as f64 / connections as f64;
        let schedule = Schedule {
            start_ms: start_ms + offset,
            interval_ms,
            jitter_ms: args.jitter_ms as f64,
            seed: args.seed ^ c as u64,
        };
        let lane = Lane {
            index: c,
            sources,
            schedule,
        };
        lanes.spawn(run_lane(lane, ctx.clone()));
    }

    // One timeline entry per second, and the progress line.
    let bar = progress.then(|| {
        let bar = ProgressBar::new(if args.duration.is_zero() {
            0
        } else {
            args.duration.as_secs() + args.warmup.as_secs()
        });
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut timeline: Vec<Second> = Vec::new();
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs_f64((START_DELAY_MS + 1000.0) / 1000.0),
        Duration::from_secs(1),
    );
    let (mut last_sent, mut last_acked, mut last_delivered) = (0, 0, 0);
    let mut live = args.live_json.then(|| Live::new(&args));
    loop {
        tokio::select! {
            done = lanes.join_next() => {
                if done.is_none() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let t = timeline.len() as u64;
                let (sent, acked, delivered) = (
                    recorder.sent.load(Ordering::Relaxed),
                    recorder.acked.load(Ordering::Relaxed),
                    recorder.delivered.load(Ordering::Relaxed),
                );
                let second_end = start_ms + (t + 1) as f64 * 1000.0;
                let intended = if second_end <= end_ms { rate.round() as u64 } else { 0 };
                timeline.push(Second { t, intended, sent: sent - last_sent, acked: acked - last_acked, delivered: delivered - last_delivered });
                (last_sent, last_acked, last_delivered) = (sent, acked, delivered);
                if let Some(live) = &mut live {
                    live.print(&timeline[timeline.len() - 1], &recorder);
                }
                if let Some(bar) = &bar {
                    let e2e = recorder.e2e_histogram();
                    let p99 = if e2e.is_empty() { "-".into() } else { format!("{:.2} ms", e2e.value_at_quantile(0.99) as f64 / 1000.0) };
                    let s = &timeline[timeline.len() - 1];
                    bar.set_position(t + 1);
                    bar.set_message(format!("sent {}/s acked {}/s e2e p99 {p99} errors {}", s.sent, s.acked, recorder.errors().values().sum::<u64>()));
                }
            }
        }
    }
    pacer.stop();
    // The end of sending: a run stopped early is measured up to here, not to the end of the cooldown.
    let sending_ended_ms = recorder.clock.now_ms();

    // Updates may still be on their way to the dashboard.
    if let Some(task) = dashboard {
        let deadline = tokio::time::Instant::now() + args.cooldown;
        while tokio::time::Instant::now() < deadline {
            let accounted = recorder.seq_counts().accounted();
            let expected = recorder.acked.load(Ordering::Relaxed);
            if args.wire == Wire::Lab && accounted >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        dashboard_stop.cancel();
        let _ = task.await;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(build_report(
        &args,
        &recorder,
        timeline,
        stop.is_cancelled(),
        sending_ended_ms,
    ))
}

/// The `--live-json` lines: each second's figures, from differences of the cumulative counters.
struct Live {
    ack: hdrhistogram::Histogram<u64>,
    e2e: hdrhistogram::Histogram<u64>,
    /// Cumulative acks at the end of each of the last [`report::OVERDUE_AFTER_SECS`] seconds.
    acked: std::collections::VecDeque<u64>,
    counts_loss: bool,
}

impl Live {
    fn new(args: &RunArgs) -> Self {
        Live {
            ack: recorder::histogram(),
            e2e: recorder::histogram(),
            acked: std::collections::VecDeque::new(),
            counts_loss: args.dashboard.is_some() && args.wire == Wire::Lab,
        }
    }

    fn print(&mut self, second: &Second, recorder: &Recorder) {
        use std::io::Write;
        let (ack, e2e) = (recorder.ack_histogram(), recorder.e2e_histogram());
        let mut ack_now = ack.clone();
        let mut e2e_now = e2e.clone();
        // The cumulative histograms only grow, so the differences are this second's values.
        let _ = ack_now.subtract(&self.ack);
        let _ = e2e_now.subtract(&self.e2e);
        (self.ack, self.e2e) = (ack, e2e);
        self.acked.push_back(recorder.acked.load(Ordering::Relaxed));
        let overdue = if self.acked.len() > report::OVERDUE_AFTER_SECS {
            let acked_then = self.acked.pop_front().unwrap_or(0);
            Some(acked_then.saturating_sub(recorder.seq_counts().accounted()))
        } else {
            Some(0)
        };
        let line = report::LiveSecond {
            second: second.clone(),
            errors: recorder.errors().values().sum(),
            overdue: if self.counts_loss { overdue } else { None },
            coalesced: self.counts_loss.then(|| recorder.seq_counts().coalesced),
            ack_latency_ms: Percentiles::of(&ack_now),
            e2e_latency_ms: Percentiles::of(&e2e_now),
        };
        if let Ok(text) = serde_json::to_string(&line) {
            let mut out = std::io::stdout().lock();
            // A supervisor that went away is not the run's problem: the line is dropped.
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        }
    }
}

fn build_report(
    args: &RunArgs,
    recorder: &Recorder,
    timeline: Vec<Second>,
    partial: bool,
    sending_ended_ms: f64,
) -> Report {
    let sent = recorder.sent.load(Ordering::Relaxed);
    let acked = recorder.acked.load(Ordering::Relaxed);
    let refused = recorder.refused.load(Ordering::Relaxed);
    let errors_by_kind = recorder.errors();
    let seqs = recorder.seq_counts();
    let has_seq = args.wire == Wire::Lab;
    let lost = match (&args.dashboard, has_seq) {
        (Some(_), true) => Some(sent.saturating_sub(refused).saturating_sub(seqs.accounted())),
        (Some(_), false) => None,
        (None, _) => Some(sent.saturating_sub(refused).saturating_sub(acked)),
    };
    let measured_secs = {
        let full = if args.duration.is_zero() {
            f64::INFINITY
        } else {
            args.duration.as_secs_f64()
        };
        let elapsed = (sending_ended_ms - recorder.measure_from_ms) / 1000.0;
        if partial || full.is_infinite() {
            elapsed.clamp(0.0, full)
        } else {
            full
        }
    };
    let ack = recorder.ack_histogram();
    let e2e = recorder.e2e_histogram();
    let seconds_behind = timeline
        .iter()
        .filter(|s| s.intended > 0 && (s.sent as f64) < 0.95 * s.intended as f64)
        .count() as u64;
    Report {
        sent,
        acked,
        errors: errors_by_kind.values().sum(),
        lost,
        duplicates: (args.dashboard.is_some() && has_seq).then_some(seqs.duplicates),
        coalesced: (args.dashboard.is_some() && has_seq).then_some(seqs.coalesced),
        gaps: args.dashboard.is_some().then(|| recorder.gaps()),
        intended_rate: args.total_rate(),
        achieved_rate: if measured_secs > 0.0 {
            recorder.acked_measured.load(Ordering::Relaxed) as f64 / measured_secs
        } else {
            0.0
        },
        ack_latency_ms: Percentiles::of(&ack),
        e2e_latency_ms: Percentiles::of(&e2e),
        errors_by_kind,
        refused,
        retries: recorder.retries.load(Ordering::Relaxed),
        delivered: recorder.delivered.load(Ordering::Relaxed),
        partial,
        generator: Generator {
            max_lag_ms: recorder.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
            seconds_behind,
        },
        run: RunInfo {
            target: args.target.clone(),
            protocol: format!("{:?}", args.protocol()).to_lowercase(),
            wire: format!("{:?}", args.wire).to_lowercase(),
            agents: args.agents,
            connections: args.connections,
            batch: args.batch,
            measured_secs,
            dashboard: args.dashboard.clone(),
            machine: report::machine(),
            processes: 1,
        },
        timeline,
        histograms: EncodedHistograms {
            ack: encode(&ack),
            e2e: encode(&e2e),
        },
    }
}
