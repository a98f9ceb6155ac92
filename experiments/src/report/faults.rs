//! The faults part of a report: for each step that injected a fault (`lab up --fault`), what each
//! system lost by `seq`, how long it took to recover, what the supervisor saw, and why — plus the
//! latency over time through the fault, from the agents' per-second timeline.
//!
//! "Recovered" is defined so that a reader can check it against the plot: the time from the
//! second the fault fell in to the end of the last bad second after it, when at least [`GOOD_RUN`]
//! good seconds follow (a disruption that starts late, such as a stalled dashboard's, counts in
//! full); a good second
//! delivered at least 90 % of the metrics due in it, with an end-to-end p99 not clearly worse than
//! the seconds before the fault: at most the worst of them, four times their median, or their
//! median plus 20 ms, whichever is most (so that neither a sub-ms baseline nor the ordinary jitter
//! of a shared 2-core machine counts as a disruption).

use lab_core::report::LiveSecond;

use super::svg::{Axis, COLOURS, Chart, Series};
use super::tables::Table;
use super::{RunData, SYSTEMS, StepData};
use crate::scenario::Fsync;
use crate::up::fault::{FaultEvent, FaultKind};

/// How many good seconds in a row count as recovered.
pub const GOOD_RUN: usize = 3;

/// Seconds from the second a fault fell in to the end of the last bad second after it (0: none
/// was bad); `None` if fewer than [`GOOD_RUN`] good seconds follow it before the timeline ends.
pub fn recovery(live: &[LiveSecond], at_s: f64) -> Option<u64> {
    let fault_second = at_s.floor() as u64;
    let mut before: Vec<f64> = live
        .iter()
        .filter(|s| s.second.t < fault_second)
        .filter_map(|s| s.e2e_latency_ms.p99)
        .collect();
    before.sort_by(f64::total_cmp);
    let bound = before.get(before.len() / 2).map(|median| {
        let worst = before.last().copied().unwrap_or(*median);
        worst.max(4.0 * median).max(median + 20.0)
    });
    let good = |s: &LiveSecond| {
        let delivered_enough =
            s.second.intended == 0 || s.second.delivered as f64 >= 0.9 * s.second.intended as f64;
        let fast_enough = match (s.e2e_latency_ms.p99, bound) {
            (Some(p99), Some(bound)) => p99 <= bound,
            (Some(_), None) => true,
            (None, _) => false,
        };
        delivered_enough && fast_enough
    };
    // Seconds with nothing due and nothing delivered (the agents' cool-down) say nothing.
    let after: Vec<&LiveSecond> = live
        .iter()
        .filter(|s| s.second.t >= fault_second)
        .filter(|s| s.second.intended > 0 || s.second.delivered > 0)
        .collect();
    match after.iter().rposition(|s| !good(s)) {
        None => Some(0),
        Some(last_bad) if after.len() - last_bad > GOOD_RUN => {
            Some(after[last_bad].second.t + 1 - fault_second)
        }
        Some(_) => None,
    }
}

/// The steps that injected at least one fault.
pub fn steps(data: &RunData) -> Vec<&StepData> {
    data.steps.iter().filter(|s| !s.faults.is_empty()).collect()
}

/// One row per fault and system: the counts by `seq`, the time to recover.
pub fn table(data: &RunData) -> Table {
    let header = [
        "step",
        "fault",
        "at / back (s)",
        "system",
        "acked",
        "lost",
        "dup.",
        "errors",
        "recovered after",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for step in steps(data) {
        for event in &step.faults {
            for (n, (_, name)) in SYSTEMS.iter().enumerate() {
                let Some(r) = &step.reports[n] else { continue };
                let short = name.split(" (").next().unwrap_or(name);
                let count = |c: Option<u64>| c.map_or("n/a".into(), |c| c.to_string());
                let recovered = match recovery(&step.live[n], event.at_s) {
                    Some(0) => "no visible disruption".to_string(),
                    Some(s) => format!("{s} s"),
                    None if step.live[n].is_empty() => "n/a (no timeline)".to_string(),
                    None => "not within the run".to_string(),
                };
                rows.push(vec![
                    format!("{} ({})", step.run.index, step.run.step.label),
                    event.fault.clone(),
                    format!(
                        "{:.1} / {}",
                        event.at_s,
                        event.back_s.map_or("–".into(), |b| format!("{b:.1}"))
                    ),
                    short.to_string(),
                    format!("{} of {}", r.acked, r.sent),
                    count(r.lost),
                    count(r.duplicates),
                    r.errors.to_string(),
                    recovered,
                ]);
            }
        }
    }
    Table { header, rows }
}

/// What each fault did and why each system lost what it lost: plain sentences, one list per
/// step, for the report to print under the table.
pub fn explanations(data: &RunData) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps(data) {
        for event in &step.faults {
            let mut line = format!(
                "Step {} ({}), {}: {}.",
                step.run.index,
                step.run.step.label,
                event.fault,
                event.what.join("; ")
            );
            for (n, _) in SYSTEMS.iter().enumerate() {
                if let Some(r) = &step.reports[n] {
                    line.push(' ');
                    line.push_str(&why(event.kind, n, r.lost, step.run.step.redis_fsync));
                }
            }
            out.push(line);
        }
    }
    out
}

/// Why system `n` lost `lost` (acknowledged, never delivered) metrics through a fault of `kind`.
fn why(kind: FaultKind, n: usize, lost: Option<u64>, fsync: Fsync) -> String {
    let system = if n == 0 { "System 1" } else { "System 2" };
    let Some(lost) = lost else {
        return format!("{system}: loss unknown (no dashboard or no seq).");
    };
    let touched = matches!(
        (kind, n),
        (FaultKind::KillWorker | FaultKind::RestartRedis, 0)
            | (FaultKind::RestartSystem2, 1)
            | (FaultKind::StallDashboard, _)
    );
    if !touched {
        return format!("{system} was not touched by it and lost {lost}.");
    }
    match (kind, lost) {
        (FaultKind::KillWorker, 0) => format!(
            "{system} lost nothing: the dead worker's unacknowledged entries stayed pending in the stream; when its leases lapsed (lab up's --system1-lease), another worker took its partitions, rebuilt their windows from the stream and claimed those entries: they, and everything its servers sent meanwhile, arrived that much later, which the timeline shows, but they arrived."
        ),
        (FaultKind::RestartRedis, 0) => format!(
            "{system} lost nothing it had acknowledged: the API acknowledges only what Redis has appended to the stream, and Redis replayed its append-only file (fsync {}) on restart. A kill -9 is a process crash: what Redis had written was in the kernel's page cache and survived whatever the fsync policy; fsync matters when the machine itself fails, which this lab does not simulate. Metrics sent while Redis was down were refused (503) and retried, not lost.",
            fsync.as_str()
        ),
        (FaultKind::RestartRedis, lost) if fsync == Fsync::Off => format!(
            "{system} lost {lost} acknowledged metrics: with no append-only file, Redis restarted empty, so the stream, its consumer group and the entries not yet processed were gone."
        ),
        (FaultKind::RestartSystem2, 0) => format!(
            "{system} lost nothing acknowledged: every acknowledged metric had reached the dashboard before the kill; what it held in memory (its windows) was lost and started again empty."
        ),
        (FaultKind::RestartSystem2, lost) => format!(
            "{system} lost {lost} acknowledged metrics: they were acknowledged and held only in its memory when it was killed, and the dashboard's connection went with the process. Its windows started again empty. Metrics in flight on the agents' connections were never acknowledged (counted as errors), and the agents reconnected."
        ),
        (FaultKind::StallDashboard, 0) => format!(
            "{system} lost nothing for the other dashboard (the agents'), whose latency through the stall is in the timeline plot; what became of the stalled one is said above."
        ),
        (_, lost) => {
            format!("{system} lost {lost} acknowledged metrics; the logs in this report's folder say more.")
        }
    }
}

/// For each fault step, end-to-end p99 (solid) and delivered metrics/s (dashed, right-hand
/// numbers on the same log axis) per second, both systems, a marker at each fault.
pub fn plots(data: &RunData) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for step in steps(data) {
        let mut series = Vec::new();
        for (n, (_, name)) in SYSTEMS.iter().enumerate() {
            let short = name.split(" (").next().unwrap_or(name);
            let live = &step.live[n];
            if live.is_empty() {
                continue;
            }
            series.push(Series {
                name: format!("{short} e2e p99, ms"),
                colour: COLOURS[n].into(),
                dashed: false,
                points: live
                    .iter()
                    .filter_map(|s| Some((s.second.t as f64, s.e2e_latency_ms.p99?)))
                    .collect(),
            });
            series.push(Series {
                name: format!("{short} delivered/s"),
                colour: COLOURS[n].into(),
                dashed: true,
                points: live
                    .iter()
                    .map(|s| (s.second.t as f64, (s.second.delivered as f64).max(1.0)))
                    .collect(),
            });
        }
        if series.is_empty() {
            continue;
        }
        // Whole seconds on the time axis, every 5 (or 10, 30, 60 on longer runs).
        let end = step.live.iter().map(Vec::len).max().unwrap_or(0) as u64;
        let every = [5, 10, 30, 60, 300]
            .into_iter()
            .find(|e| end / e <= 8)
            .unwrap_or(600);
        let ticks = (0..=end / every)
            .map(|k| ((k * every) as f64, (k * every).to_string()))
            .collect();
        let markers = step
            .faults
            .iter()
            .flat_map(|e| {
                let mut m = vec![(e.at_s, e.kind.as_str().to_string())];
                if let Some(back) = e.back_s {
                    m.push((back, "back".to_string()));
                }
                m
            })
            .collect();
        out.push((
            format!("timeline-{}.svg", step.run.stem()),
            format!(
                "Step {} ({}): each second's end-to-end p99 (solid, ms) and metrics delivered to the dashboard (dashed, per second), both on the log axis; red lines mark the faults and when the part was back.",
                step.run.index, step.run.step.label
            ),
            Chart {
                title: format!("Through the fault: {}", step.run.step.label),
                x: Axis {
                    label: "seconds since sending began".into(),
                    log: false,
                    ticks,
                },
                y: Axis {
                    label: "ms (p99) · metrics/s (delivered), log".into(),
                    log: true,
                    ticks: Vec::new(),
                },
                series,
                markers,
            }
            .render(),
        ));
    }
    out
}

/// The events of a step's `lab up --json`, `[]` when it has none (a step without faults, or a
/// report from before faults existed).
pub fn events(json: &serde_json::Value) -> Vec<FaultEvent> {
    serde_json::from_value(json["faults"].clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::report::{Percentiles, Second};

    fn second(t: u64, intended: u64, delivered: u64, p99: Option<f64>) -> LiveSecond {
        LiveSecond {
            second: Second {
                t,
                intended,
                sent: intended,
                acked: intended,
                delivered,
            },
            e2e_latency_ms: Percentiles {
                p99,
                ..Percentiles::default()
            },
            ..LiveSecond::default()
        }
    }

    #[test]
    fn recovery_counts_from_the_faults_second_to_three_good_ones() {
        let mut live: Vec<LiveSecond> = (0..5).map(|t| second(t, 100, 100, Some(10.0))).collect();
        // The fault at 5.4 s: two bad seconds (nothing delivered, then slow), then good again.
        live.push(second(5, 100, 0, None));
        live.push(second(6, 100, 150, Some(900.0)));
        // Four times the median before the fault (10 ms) is still good; more is not.
        live.extend((7..12).map(|t| second(t, 100, 100, Some(12.0))));
        assert_eq!(recovery(&live, 5.4), Some(2));
    }

    #[test]
    fn a_fault_that_disturbs_nothing_recovers_at_once_and_one_never_recovered_says_so() {
        // No worse than the worst second before the fault counts as recovered.
        let mut live: Vec<LiveSecond> = (0..5).map(|t| second(t, 100, 100, Some(10.0))).collect();
        live[2] = second(2, 100, 100, Some(70.0));
        live.extend((5..10).map(|t| second(t, 100, 100, Some(69.0))));
        assert_eq!(recovery(&live, 5.0), Some(0));
        live.extend((10..13).map(|t| second(t, 100, 100, Some(71.0))));
        assert_eq!(
            recovery(
                &live[..5].iter().chain(&live[10..]).cloned().collect::<Vec<_>>(),
                5.0
            ),
            None
        );
        let live: Vec<LiveSecond> = (0..10).map(|t| second(t, 100, 100, Some(3.0))).collect();
        assert_eq!(recovery(&live, 4.0), Some(0));
        let mut live: Vec<LiveSecond> = (0..5).map(|t| second(t, 100, 100, Some(3.0))).collect();
        live.extend((5..10).map(|t| second(t, 100, 40, Some(3.0))));
        assert_eq!(recovery(&live, 5.0), None);
        // A small baseline is allowed 20 ms, not only four times itself.
        let mut live: Vec<LiveSecond> = (0..5).map(|t| second(t, 100, 100, Some(1.0))).collect();
        live.extend((5..12).map(|t| second(t, 100, 100, Some(20.5))));
        assert_eq!(recovery(&live, 5.0), Some(0));
        live[7] = second(7, 100, 100, Some(21.5));
        // Bad again at 7 s, then good for the rest: recovered when second 7 ended.
        assert_eq!(recovery(&live, 5.0), Some(3));
    }
}
