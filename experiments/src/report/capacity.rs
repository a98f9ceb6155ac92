//! How far each system went, and what held it back: the CPU each process used in each step, and —
//! for a scenario with `knee_p99_ms` (`saturation`) — the knee: the highest offered rate at which a
//! system still delivered every metric with an end-to-end p99 under the bound, the first rate at
//! which it did not, and the busiest process there.
//!
//! "Kept up" at a step means: acknowledged at least 95 % of the offered rate, lost nothing by
//! `seq`, coalesced nothing (not a loss, but a coalesced metric has no latency of its own, so the
//! p99 would describe only the others), e2e p99 at most the bound, and the load generator itself
//! kept to its schedule — where it did not, the step is inconclusive and says so, because then the
//! generator or the machine set the pace, not the system.

use super::svg::{Axis, COLOURS, Chart, Series};
use super::tables::Table;
use super::{RunData, SYSTEMS, StepData};

/// Each step's processes, busiest first, as "name cores" cells; `None` when no step has CPU
/// figures (a report from before `lab up` measured them).
pub fn cpu_table(data: &RunData) -> Option<Table> {
    if data.steps.iter().all(|s| s.cpu.is_empty()) {
        return None;
    }
    let header = ["step", "cores busy, by process (busiest first)", "all processes"]
        .map(String::from)
        .to_vec();
    let rows = data
        .steps
        .iter()
        .filter(|s| !s.cpu.is_empty())
        .map(|s| {
            let mut cpu = s.cpu.clone();
            cpu.sort_by(|a, b| b.cores.total_cmp(&a.cores));
            let each: Vec<String> = cpu
                .iter()
                .filter(|c| c.cores >= 0.005)
                .map(|c| format!("{} {:.2}", c.name, c.cores))
                .collect();
            let total: f64 = cpu.iter().map(|c| c.cores).sum();
            vec![label(s), each.join(", "), format!("{total:.2}")]
        })
        .collect();
    Some(Table { header, rows })
}

/// `cpu.svg`: the cores each process kept busy, one line per process across the steps (x: step
/// number), and the sum of all; `None` without CPU figures. Names are shared across steps, so a
/// process that ran in some steps only has points there.
pub fn cpu_plot(data: &RunData) -> Option<(String, String, String)> {
    let steps: Vec<&StepData> = data.steps.iter().filter(|s| !s.cpu.is_empty()).collect();
    if steps.is_empty() {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    for s in &steps {
        for c in &s.cpu {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    // The busiest processes first; the idle ones (the dashboard, say) would only crowd the legend.
    let peak = |name: &str| {
        steps
            .iter()
            .flat_map(|s| s.cpu.iter().filter(|c| c.name == name))
            .map(|c| c.cores)
            .fold(0.0, f64::max)
    };
    names.sort_by(|a, b| peak(b).total_cmp(&peak(a)));
    names.retain(|n| peak(n) >= 0.02);
    names.truncate(10);
    let x = |s: &StepData| s.run.index as f64;
    // Each system's colour, as everywhere in the lab: the system solid, its load generator dashed;
    // the other processes (System 1's parts, Redis, the dashboard) the further colours in turn.
    let others = &COLOURS[2..];
    let mut other = 0;
    let mut series: Vec<Series> = names
        .iter()
        .map(|name| {
            let (colour, dashed) = match name.as_str() {
                "system1" | "system1-api" => (COLOURS[0], false),
                "agents-system1" => (COLOURS[0], true),
                "system2" => (COLOURS[1], false),
                "agents-system2" => (COLOURS[1], true),
                _ => {
                    other += 1;
                    (others[(other - 1) % others.len()], other > others.len())
                }
            };
            (name, colour, dashed)
        })
        .map(|(name, colour, dashed)| Series {
            name: name.clone(),
            colour: colour.into(),
            dashed,
            points: steps
                .iter()
                .filter_map(|s| Some((x(s), s.cpu.iter().find(|c| &c.name == name)?.cores)))
                .collect(),
        })
        .collect();
    series.push(Series {
        name: "all processes".into(),
        colour: "#000000".into(),
        dashed: true,
        points: steps
            .iter()
            .map(|s| (x(s), s.cpu.iter().map(|c| c.cores).sum()))
            .collect(),
    });
    let chart = Chart {
        title: "CPU by process".into(),
        x: Axis {
            label: "step (see the table for each step's settings)".into(),
            log: false,
            ticks: steps.iter().map(|s| (x(s), s.run.index.to_string())).collect(),
        },
        y: Axis {
            label: "cores busy".into(),
            log: false,
            ticks: Vec::new(),
        },
        series,
        markers: Vec::new(),
    };
    Some((
        "cpu.svg".into(),
        "Cores each process kept busy while the agents were sending, per step; the dashed black line is all of them together (the machine's cores are in the environment section).".into(),
        chart.render(),
    ))
}

fn label(s: &StepData) -> String {
    format!("{} ({})", s.run.index, s.run.step.label)
}

/// Whether system `n` kept up in step `s` under `bound_ms`: `Some(true/false)`, or `None` when
/// the generator fell behind (inconclusive) or the system did not run.
pub fn kept_up(s: &StepData, n: usize, bound_ms: f64) -> Option<bool> {
    s.reports[n].as_ref()?.kept_up(bound_ms)
}

/// The knee table, one row per system and configuration (protocol, batch, servers, workers), when
/// the scenario sets `knee_p99_ms`.
pub fn knee_table(data: &RunData) -> Option<Table> {
    let bound = data.record.scenario.knee_p99_ms?;
    let header = [
        "system",
        "configuration",
        "kept up to",
        "first rate it did not",
        "why not there",
        "busiest process there",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for (n, (_, name)) in SYSTEMS.iter().enumerate() {
        let short = name.split(" (").next().unwrap_or(name);
        // Steps of this system, grouped by everything but the rate, in rate order.
        let mut groups: Vec<(String, Vec<&StepData>)> = Vec::new();
        for s in data.steps.iter().filter(|s| s.reports[n].is_some()) {
            let st = &s.run.step;
            let config = if n == 0 {
                format!(
                    "{}, batch {}, {} servers, {} workers",
                    st.protocol.as_str(),
                    st.batch,
                    st.agents,
                    st.workers
                )
            } else {
                format!("WebSocket, batch {}, {} servers", st.batch, st.agents)
            };
            match groups.iter_mut().find(|(c, _)| *c == config) {
                Some((_, steps)) => steps.push(s),
                None => groups.push((config, vec![s])),
            }
        }
        for (config, mut steps) in groups {
            steps.sort_by(|a, b| a.run.step.rate.total_cmp(&b.run.step.rate));
            let mut last_ok: Option<&StepData> = None;
            let mut first_bad: Option<(&StepData, Option<bool>)> = None;
            for s in &steps {
                match kept_up(s, n, bound) {
                    Some(true) => last_ok = Some(s),
                    other => {
                        first_bad = Some((s, other));
                        break;
                    }
                }
            }
            let rate = |s: &StepData| format!("{:.0}/s", s.run.step.rate);
            let (bad, why, busiest) = match first_bad {
                None => (
                    "— (kept up at every rate tried: raise the top rate)".to_string(),
                    String::new(),
                    String::new(),
                ),
                Some((s, verdict)) => (
                    rate(s),
                    why_not(s, n, bound, verdict),
                    busiest(s, data.env["cores"].as_u64()),
                ),
            };
            rows.push(vec![
                short.to_string(),
                config,
                last_ok.map_or("— (not even the lowest rate)".to_string(), rate),
                bad,
                why,
                busiest,
            ]);
        }
    }
    Some(Table { header, rows })
}

fn why_not(s: &StepData, n: usize, bound: f64, verdict: Option<bool>) -> String {
    let Some(r) = &s.reports[n] else {
        return String::new();
    };
    if verdict.is_none() {
        return format!(
            "inconclusive: the load generator fell behind its schedule for {} s (it, or the machine, set the pace)",
            r.generator.seconds_behind
        );
    }
    let mut why = Vec::new();
    if r.achieved_rate < 0.95 * r.intended_rate {
        why.push(format!(
            "acknowledged {:.0} of {:.0}/s",
            r.achieved_rate, r.intended_rate
        ));
    }
    match r.lost {
        Some(0) => {}
        Some(lost) => why.push(format!("lost {lost}")),
        None => why.push("loss unknown".to_string()),
    }
    if let Some(coalesced) = r.coalesced.filter(|c| *c > 0) {
        why.push(format!("{coalesced} coalesced (the dashboard fell behind)"));
    }
    match r.e2e_latency_ms.p99 {
        Some(p99) if p99 > bound => why.push(format!("e2e p99 {p99:.0} ms > {bound:.0} ms")),
        None => why.push("nothing delivered".to_string()),
        _ => {}
    }
    why.join(", ")
}

/// The busiest process of a step, beside the machine's cores (from `env.json`: the machine the
/// run was on, not the one rendering the report).
fn busiest(s: &StepData, cores: Option<u64>) -> String {
    let Some(top) = s.cpu.iter().max_by(|a, b| a.cores.total_cmp(&b.cores)) else {
        return "n/a".to_string();
    };
    let total: f64 = s.cpu.iter().map(|c| c.cores).sum();
    let of = cores.map_or(String::new(), |c| format!(" of {c}"));
    format!(
        "{} at {:.2} cores (all processes {total:.2}{of} cores)",
        top.name, top.cores
    )
}
