//! The report of a load run — what the lab's agents measure and everything that reads it (`lab up`,
//! `lab run`, the benchmarks) — kept in the core because it is the lab's measuring interface, not the
//! agents' private business: a human summary, and `--json` for the experiments.
//!
//! The top-level keys `sent`, `acked`, `errors`, `lost`, `coalesced`, `duplicates`, `intended_rate`, `achieved_rate`,
//! `ack_latency_ms` and `e2e_latency_ms` (each with `p50`, `p90`, `p99`, `p999`, `max`, in
//! milliseconds) are a stable interface: the experiments and `lab up` read them. The histograms travel
//! along in HdrHistogram's compressed V2 format (base64), so that reports of agents run in several
//! processes merge exactly (`agents merge`), rather than by averaging percentiles, which is wrong.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// The largest latency recorded, in µs (one hour); larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits: the one every report's histograms are.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency distribution, in milliseconds (`null` when nothing was measured).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
    /// How many latencies were measured.
    pub count: u64,
}

impl Percentiles {
    /// The percentiles of a histogram in microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |q: f64| Some(h.value_at_quantile(q) as f64 / 1000.0);
        Percentiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: Some(h.max() as f64 / 1000.0),
            count: h.len(),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since sending started.
    pub t: u64,
    /// Metrics that were due in this second.
    pub intended: u64,
    /// Metrics sent in this second.
    pub sent: u64,
    /// Metrics acknowledged in this second.
    pub acked: u64,
    /// Metrics a dashboard delivered in this second.
    pub delivered: u64,
}

/// After how many seconds an acknowledged metric that no dashboard has delivered counts as overdue
/// in [`LiveSecond::overdue`].
pub const OVERDUE_AFTER_SECS: usize = 5;

/// One line of `--live-json`, written as each second of the run ends, so that a supervisor
/// (`lab up`) can show the run live. Latencies are those of this second's metrics only, so a stall
/// shows at once instead of being averaged away by the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSecond {
    /// The counts of this second.
    #[serde(flatten)]
    pub second: Second,
    /// Errors so far.
    pub errors: u64,
    /// Metrics acknowledged at least [`OVERDUE_AFTER_SECS`] seconds ago that the dashboard has not
    /// delivered: a lower bound of the loss so far (`null` without a dashboard or without `seq`).
    pub overdue: Option<u64>,
    /// Metrics so far that the dashboard got only inside a coalesced update (not lost; `null` without
    /// a dashboard or without `seq`).
    #[serde(default)]
    pub coalesced: Option<u64>,
    /// Ack latency of this second's acks.
    pub ack_latency_ms: Percentiles,
    /// End-to-end latency of this second's deliveries.
    pub e2e_latency_ms: Percentiles,
}

/// The full report of a run (or of several merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Metrics sent.
    pub sent: u64,
    /// Metrics acknowledged by the target.
    pub acked: u64,
    /// Errors of every kind (see `errors_by_kind`).
    pub errors: u64,
    /// Metrics sent and not refused that never arrived: at the dashboard when one was measured (neither
    /// in an update of their own nor covered by a coalesced one), else never acknowledged. `null`
    /// when it cannot be known (`--wire original` has no `seq`).
    pub lost: Option<u64>,
    /// Metrics the dashboard got only as part of a coalesced update (it fell behind, and the server
    /// sent the latest state of their server in their place, saying so): delivered as an aggregate,
    /// not lost. Their end-to-end latency is not measured. `null` without a dashboard or `seq`.
    #[serde(default)]
    pub coalesced: Option<u64>,
    /// Metrics a dashboard delivered more than once (`null` without a dashboard or without `seq`).
    pub duplicates: Option<u64>,
    /// What the server's gap frames said (System 1's broadcaster: events it could not deliver); `null`
    /// without a dashboard, and in reports written before gap frames existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gaps: Option<Gaps>,
    /// Metrics per second asked for.
    pub intended_rate: f64,
    /// Metrics per second acknowledged, over the measured window (after warm-up).
    pub achieved_rate: f64,
    /// Ack latency: the sender hears the ack − the metric's due time.
    pub ack_latency_ms: Percentiles,
    /// End-to-end latency: a dashboard receives the metric's update − the metric's due time (its
    /// `timestamp`). Empty without `--dashboard`.
    pub e2e_latency_ms: Percentiles,
    /// Errors by kind: `http 503`, `close 1008`, `error: Invalid metric payload`, `connect`, …
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Metrics refused by the target (error replies, 4xx).
    pub refused: u64,
    /// Requests or connections tried again.
    pub retries: u64,
    /// Updates the dashboard delivered for this run's agents.
    pub delivered: u64,
    /// Whether the run was cut short (Ctrl-C, SIGTERM).
    pub partial: bool,
    /// The generator's own health: if it fell behind, latencies include its lateness.
    pub generator: Generator,
    /// What ran: target, protocol, agents, …
    pub run: RunInfo,
    /// Per second: intended, sent, acked, delivered.
    pub timeline: Vec<Second>,
    /// The histograms (µs), V2-deflate serialized and base64 encoded, for merging.
    pub histograms: EncodedHistograms,
}

/// What a dashboard was told about events the server could not deliver (`{"type":"gap"}` frames).
/// Reported by the server, so beside `lost` (what the agents counted missing by `seq`), not in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gaps {
    /// Gap frames received.
    pub frames: u64,
    /// Events they reported missing, where the server knew how many.
    pub events: u64,
    /// Gap frames that could not say how many (pub/sub fan-out).
    pub uncounted: u64,
}

impl Gaps {
    fn add(self, other: Gaps) -> Gaps {
        Gaps {
            frames: self.frames + other.frames,
            events: self.events + other.events,
            uncounted: self.uncounted + other.uncounted,
        }
    }
}

/// How well the generator kept to its schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    /// The worst lateness in sending a due metric, ms.
    pub max_lag_ms: f64,
    /// Seconds in which fewer than 95 % of the due metrics were sent.
    pub seconds_behind: u64,
}

/// What ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The target URL(s).
    pub target: String,
    /// http1, http2 or ws.
    pub protocol: String,
    /// lab or original.
    pub wire: String,
    /// Simulated servers.
    pub agents: u64,
    /// Connections.
    pub connections: u64,
    /// Metrics per message.
    pub batch: u64,
    /// Seconds of sending measured (after warm-up).
    pub measured_secs: f64,
    /// The dashboard measured, if any.
    pub dashboard: Option<String>,
    /// The machine: cores and CPU model.
    pub machine: String,
    /// How many reports were merged into this one.
    pub processes: u64,
}

/// Serialized histograms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EncodedHistograms {
    /// Ack latencies, µs.
    pub ack: String,
    /// End-to-end latencies, µs.
    pub e2e: String,
}

/// A report's histograms could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("histogram {which} of the report is unreadable: {reason}")]
pub struct HistogramError {
    which: &'static str,
    reason: String,
}

/// Encodes a histogram for a report.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serializing to memory cannot fail");
    STANDARD.encode(bytes)
}

/// Decodes a histogram of a report.
pub fn decode(text: &str, which: &'static str) -> Result<Histogram<u64>, HistogramError> {
    let err = |reason: String| HistogramError { which, reason };
    let bytes = STANDARD.decode(text).map_err(|e| err(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| err(format!("{e:?}")))
}

impl Report {
    /// Whether the target kept up, the one test of the lab's saturation scenario and of both load
    /// benchmarks: every metric acknowledged (95 % of the rate or more), none lost, none coalesced
    /// (a coalesced metric reached the dashboard only inside a later update, with no latency of its
    /// own, so a p99 would describe only the others), and e2e p99 within `bound_ms`. `None` when the
    /// generator itself fell behind: then the run says nothing about the target.
    pub fn kept_up(&self, bound_ms: f64) -> Option<bool> {
        if self.generator.seconds_behind > 0 {
            return None;
        }
        let delivered = self.lost == Some(0)
            && self.coalesced.unwrap_or(0) == 0
            && self.achieved_rate >= 0.95 * self.intended_rate;
        let fast = self.e2e_latency_ms.p99.is_some_and(|p99| p99 <= bound_ms);
        Some(delivered && fast)
    }
}

impl Report {
    /// Merges reports of agents that ran at the same time against the same system: counts and rates
    /// add up, histograms merge exactly, percentiles are recomputed from the merged histograms.
    pub fn merge(reports: &[Report]) -> Result<Report, HistogramError> {
        let mut ack = histogram();
        let mut e2e = histogram();
        let mut out = reports
            .first()
            .cloned()
            .unwrap_or_else(|| Report::empty(RunInfo::default()));
        for (i, r) in reports.iter().enumerate() {
            ack.add(decode(&r.histograms.ack, "ack")?)
                .map_err(|e| HistogramError {
                    which: "ack",
                    reason: format!("{e:?}"),
                })?;
            e2e.add(decode(&r.histograms.e2e, "e2e")?)
                .map_err(|e| HistogramError {
                    which: "e2e",
                    reason: format!("{e:?}"),
                })?;
            if i == 0 {
                continue;
            }
            out.sent += r.sent;
            out.acked += r.acked;
            out.errors += r.errors;
            out.refused += r.refused;
            out.retries += r.retries;
            out.delivered += r.delivered;
            out.lost = out.lost.zip(r.lost).map(|(a, b)| a + b);
            out.coalesced = out.coalesced.zip(r.coalesced).map(|(a, b)| a + b);
            out.duplicates = out.duplicates.zip(r.duplicates).map(|(a, b)| a + b);
            out.gaps = match (out.gaps, r.gaps) {
                (Some(a), Some(b)) => Some(a.add(b)),
                (a, b) => a.or(b),
            };
            out.intended_rate += r.intended_rate;
            out.achieved_rate += r.achieved_rate;
            out.partial |= r.partial;
            out.generator.max_lag_ms = out.generator.max_lag_ms.max(r.generator.max_lag_ms);
            out.generator.seconds_behind = out.generator.seconds_behind.max(r.generator.seconds_behind);
            for (kind, n) in &r.errors_by_kind {
                *out.errors_by_kind.entry(kind.clone()).or_default() += n;
            }
            for (t, second) in r.timeline.iter().enumerate() {
                if out.timeline.len() <= t {
                    out.timeline.push(Second {
                        t: t as u64,
                        ..Second::default()
                    });
                }
                let o = &mut out.timeline[t];
                o.intended += second.intended;
                o.sent += second.sent;
                o.acked += second.acked;
                o.delivered += second.delivered;
            }
            out.run.agents += r.run.agents;
            out.run.connections += r.run.connections;
            out.run.processes += r.run.processes;
            if !out.run.target.split(", ").any(|t| t == r.run.target) {
                out.run.target = format!("{}, {}", out.run.target, r.run.target);
            }
        }
        out.ack_latency_ms = Percentiles::of(&ack);
        out.e2e_latency_ms = Percentiles::of(&e2e);
        out.histograms = EncodedHistograms {
            ack: encode(&ack),
            e2e: encode(&e2e),
        };
        Ok(out)
    }

    /// A report with nothing measured.
    pub fn empty(run: RunInfo) -> Report {
        let empty = histogram();
        Report {
            sent: 0,
            acked: 0,
            errors: 0,
            lost: None,
            coalesced: None,
            duplicates: None,
            gaps: None,
            intended_rate: 0.0,
            achieved_rate: 0.0,
            ack_latency_ms: Percentiles::default(),
            e2e_latency_ms: Percentiles::default(),
            errors_by_kind: BTreeMap::new(),
            refused: 0,
            retries: 0,
            delivered: 0,
            partial: false,
            generator: Generator::default(),
            run,
            timeline: vec![],
            histograms: EncodedHistograms {
                ack: encode(&empty),
                e2e: encode(&empty),
            },
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`), or `-`: whether the machine was quiet when a figure
/// was measured (this one drifts by ±50 % with its other tenants).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".into())
}

/// The machine, for reports: a latency figure says where it was measured.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".into(),
        |ms| {
            if ms < 10.0 {
                format!("{ms:.3} ms")
            } else {
                format!("{ms:.1} ms")
            }
        },
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.run;
        writeln!(
            f,
            "{}",
            if self.partial {
                "agents: PARTIAL summary (stopped early)"
            } else {
                "agents: summary"
            }
        )?;
        writeln!(
            f,
            "  target      {} ({}, wire {}), {} agents on {} connection(s), batch {}",
            r.target, r.protocol, r.wire, r.agents, r.connections, r.batch
        )?;
        writeln!(f, "  machine     {}", r.machine)?;
        writeln!(
            f,
            "  rate        intended {:.0}/s, achieved {:.0}/s (acked, over {:.1} s measured)",
            self.intended_rate, self.achieved_rate, r.measured_secs
        )?;
        writeln!(
            f,
            "  metrics     sent {}, acked {}, refused {}, retries {}",
            self.sent, self.acked, self.refused, self.retries
        )?;
        let lost = self.lost.map_or("unknown (no seq)".into(), |n| n.to_string());
        let dup = self.duplicates.map_or("unknown".into(), |n| n.to_string());
        let coalesced = self.coalesced.map_or("unknown".into(), |n| n.to_string());
        writeln!(
            f,
            "  delivery    delivered {}, coalesced {coalesced} (in a later update of their server), lost {lost}, duplicates {dup}",
            self.delivered
        )?;
        if let Some(g) = self.gaps.filter(|g| g.frames > 0) {
            writeln!(
                f,
                "  gaps        the server reported {} gap(s): {} events missing, {} gap(s) of unknown size",
                g.frames, g.events, g.uncounted
            )?;
        }
        for (name, p) in [
            ("ack latency", &self.ack_latency_ms),
            ("e2e latency", &self.e2e_latency_ms),
        ] {
            writeln!(
                f,
                "  {name} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} measured, from each metric's due time)",
                fmt_ms(p.p50),
                fmt_ms(p.p90),
                fmt_ms(p.p99),
                fmt_ms(p.p999),
                fmt_ms(p.max),
                p.count
            )?;
        }
        if self.errors > 0 {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            writeln!(f, "  errors      {} ({})", self.errors, kinds.join(", "))?;
        }
        if self.generator.seconds_behind > 0 || self.generator.max_lag_ms > 50.0 {
            writeln!(
                f,
                "  WARNING     the generator fell behind (worst lag {:.1} ms, {} s below 95 % of schedule): latencies include its own lateness",
                self.generator.max_lag_ms, self.generator.seconds_behind
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(latencies_us: &[u64], sent: u64) -> Report {
        let mut h = histogram();
        for &l in latencies_us {
            h.record(l).unwrap();
        }
        let mut r = Report::empty(RunInfo {
            target: "ws://a".into(),
            agents: 1,
            processes: 1,
            ..RunInfo::default()
        });
        r.sent = sent;
        r.acked = sent;
        r.lost = Some(1);
        r.intended_rate = 100.0;
        r.ack_latency_ms = Percentiles::of(&h);
        r.histograms.ack = encode(&h);
        r.timeline = vec![Second {
            t: 0,
            intended: 100,
            sent,
            acked: sent,
            delivered: 0,
        }];
        r
    }

    #[test]
    fn kept_up_needs_everything_delivered_on_its_own_and_in_time() {
        let mut r = report_with(&[1_000], 100);
        r.lost = Some(0);
        r.coalesced = Some(0);
        r.achieved_rate = 100.0;
        r.e2e_latency_ms.p99 = Some(20.0);
        assert_eq!(r.kept_up(100.0), Some(true));
        assert_eq!(r.kept_up(10.0), Some(false), "too slow");
        for broken in [
            Report {
                lost: Some(1),
                ..r.clone()
            },
            Report {
                lost: None,
                ..r.clone()
            },
            Report {
                coalesced: Some(3),
                ..r.clone()
            },
            Report {
                achieved_rate: 90.0,
                ..r.clone()
            },
        ] {
            assert_eq!(broken.kept_up(100.0), Some(false), "{broken:?}");
        }
        r.generator.seconds_behind = 2;
        assert_eq!(r.kept_up(100.0), None, "the generator fell behind: inconclusive");
    }

    #[test]
    fn merging_adds_counts_and_merges_histograms_exactly() {
        let fast = report_with(&vec![1_000; 99], 99);
        let slow = report_with(&[500_000], 1);
        let merged = Report::merge(&[fast, slow]).unwrap();
        assert_eq!((merged.sent, merged.acked, merged.lost), (100, 100, Some(2)));
        assert_eq!(merged.intended_rate, 200.0);
        assert_eq!(merged.ack_latency_ms.count, 100);
        assert_eq!(merged.ack_latency_ms.p50, Some(1.0));
        // Averaging the two p99s would say 250 ms; the merged histogram knows only 1 % was slow.
        assert_eq!(merged.ack_latency_ms.p99, Some(1.0));
        assert!((merged.ack_latency_ms.max.unwrap() - 500.0).abs() < 1.0);
        assert_eq!(merged.timeline[0].sent, 100);
        assert_eq!(merged.run.processes, 2);
    }

    #[test]
    fn histograms_survive_the_json_round_trip() {
        let r = report_with(&[10, 200, 3_000, 40_000], 4);
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(decode(&back.histograms.ack, "ack").unwrap().len(), 4);
        assert_eq!(back, r);
    }

    #[test]
    fn a_corrupt_histogram_is_a_clear_error() {
        let mut r = report_with(&[10], 1);
        r.histograms.ack = "not base64!".into();
        let err = Report::merge(&[r]).unwrap_err().to_string();
        assert!(err.contains("histogram ack"), "{err}");
    }

    #[test]
    fn the_stable_keys_are_at_the_top_level() {
        let json = serde_json::to_value(report_with(&[10], 1)).unwrap();
        for key in [
            "sent",
            "acked",
            "errors",
            "lost",
            "duplicates",
            "intended_rate",
            "achieved_rate",
            "ack_latency_ms",
            "e2e_latency_ms",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(
                json["ack_latency_ms"].get(key).is_some(),
                "missing ack_latency_ms.{key}"
            );
        }
    }
}
