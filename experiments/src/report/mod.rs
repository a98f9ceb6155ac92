//! Reports: from a run's raw data (its `run.json`, each step's agents JSON, `env.json`) to
//! `report.md`, a self-contained `report.html`, the SVG plots, `figures.csv` and one `.hgrm` per
//! histogram. Everything here is a function of the raw data, so `lab report DIR` re-renders a
//! report exactly, and the tests render fixed raw data and compare with golden files.
//!
//! A report folder:
//!
//! | file | what |
//! | --- | --- |
//! | `run.json` | the scenario as run, each step's command and outcome, partial or not |
//! | `env.json` | the machine, versions, git commit, commands, load average before and after |
//! | `steps/NN-….json` | each step's `lab up --json` output: both systems' agents reports |
//! | `steps/NN-…-system1-e2e.hgrm` … | each histogram as a percentile distribution (ms) |
//! | `figures.csv` | the main figures, one line per step and system |
//! | `latency.svg`, `throughput.svg`, `cpu.svg`, `spectrum-NN.svg`, `timeline-NN.svg` | the plots |
//! | `report.md`, `report.html` | the report |

pub mod capacity;
pub mod faults;
pub mod hgrm;
pub mod svg;
pub mod tables;

use std::path::{Path, PathBuf};

use anyhow::Context;
use lab_core::report::{LiveSecond, Report, decode};
use serde::{Deserialize, Serialize};

use crate::scenario::{Scenario, Step};
use crate::up::cpu::ChildCpu;
use crate::up::fault::FaultEvent;

use self::svg::{Axis, COLOURS, Chart, Series};

/// The systems, in the order of a step's JSON: `(key, name)`.
pub const SYSTEMS: [(&str, &str); 2] = [
    ("system1", "System 1 (HTTP → Redis → workers)"),
    ("system2", "System 2 (WebSocket, in memory)"),
];

/// What `lab run` records about the run as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The scenario, every setting decided.
    pub scenario: Scenario,
    /// Where the scenario came from (a built-in name or a file).
    pub source: String,
    /// `--set` as given.
    pub sets: Vec<String>,
    /// UTC, RFC 3339.
    pub started: String,
    /// UTC, RFC 3339; `None` while running.
    pub finished: Option<String>,
    /// Whether the run was cut short (Ctrl-C, or a step failed).
    pub partial: bool,
    /// Why it was, if it was.
    pub why_partial: Option<String>,
    /// One per step run (a repeated step once per repeat), in order.
    pub steps: Vec<StepRun>,
}

/// One step run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    /// 1-based, in run order.
    pub index: usize,
    /// The step's settings.
    pub step: Step,
    /// Which repeat (1-based).
    pub repeat: u64,
    /// The agents JSON, relative to the report folder.
    pub file: String,
    /// `ok`, `interrupted`, `failed: …` or `not run`.
    pub status: String,
    /// The exact `lab up` command.
    pub command: Vec<String>,
}

impl StepRun {
    /// `NN-label` for file names.
    pub fn stem(&self) -> String {
        let label: String = self
            .step
            .label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut stem = format!("{:02}-{}", self.index, label.trim_matches('-'));
        if self.step.repeat > 1 {
            stem.push_str(&format!("-r{}", self.repeat));
        }
        stem
    }
}

/// A step with its two systems' agents reports, as far as they exist.
#[derive(Debug, Clone)]
pub struct StepData {
    /// The record.
    pub run: StepRun,
    /// System 1's and System 2's reports.
    pub reports: [Option<Report>; 2],
    /// Each system's agents' per-second timeline, with each second's own latencies (empty for a
    /// report made before `lab up` recorded it).
    pub live: [Vec<LiveSecond>; 2],
    /// What the step's faults did.
    pub faults: Vec<FaultEvent>,
    /// Each process's CPU over the sending time.
    pub cpu: Vec<ChildCpu>,
}

impl StepData {
    /// A step's raw data from its `lab up --json` file in the report folder `dir`; a step that
    /// wrote none (not run, or failed early) has no reports.
    pub fn read(dir: &Path, run: &StepRun) -> anyhow::Result<StepData> {
        let mut step = StepData {
            run: run.clone(),
            reports: [None, None],
            live: [Vec::new(), Vec::new()],
            faults: Vec::new(),
            cpu: Vec::new(),
        };
        let Ok(text) = std::fs::read_to_string(dir.join(&run.file)) else {
            return Ok(step);
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", run.file))?;
        for (i, (key, _)) in SYSTEMS.iter().enumerate() {
            if !json[key].is_null() {
                step.reports[i] = Some(
                    serde_json::from_value(json[key].clone())
                        .with_context(|| format!("{}: {key} is not a report", run.file))?,
                );
            }
            if !json["live"][key].is_null() {
                step.live[i] = serde_json::from_value(json["live"][key].clone())
                    .with_context(|| format!("{}: live.{key} is not a timeline", run.file))?;
            }
        }
        step.faults = faults::events(&json);
        step.cpu = serde_json::from_value(json["cpu"].clone()).unwrap_or_default();
        Ok(step)
    }
}

/// Everything a report is made of.
#[derive(Debug, Clone)]
pub struct RunData {
    /// `run.json`.
    pub record: RunRecord,
    /// `env.json`, as it is.
    pub env: serde_json::Value,
    /// Each step.
    pub steps: Vec<StepData>,
}

impl RunData {
    /// Reads a report folder's raw data.
    pub fn load(dir: &Path) -> anyhow::Result<RunData> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is {} a report folder?)",
                path.display(),
                dir.display()
            )
        })?;
        let record: RunRecord =
            serde_json::from_str(&text).with_context(|| format!("{} is not a run record", path.display()))?;
        let env = std::fs::read_to_string(dir.join("env.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        let steps = record
            .steps
            .iter()
            .map(|run| StepData::read(dir, run))
            .collect::<anyhow::Result<_>>()?;
        Ok(RunData { record, env, steps })
    }
}

/// Writes every derived file of a report folder from its raw data; returns the files written.
pub fn render(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let data = RunData::load(dir)?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for step in &data.steps {
        for (i, (key, _)) in SYSTEMS.iter().enumerate() {
            let Some(report) = &step.reports[i] else {
                continue;
            };
            for (which, encoded) in [("ack", &report.histograms.ack), ("e2e", &report.histograms.e2e)] {
                let h = decode(encoded, which)?;
                write(
                    &format!("steps/{}-{key}-{which}.hgrm", step.run.stem()),
                    &hgrm::write(&h),
                )?;
            }
        }
    }
    write("figures.csv", &tables::csv(&data))?;
    let plots = plots(&data)?;
    for (name, _, svg) in &plots {
        write(name, svg)?;
    }
    write("report.md", &tables::markdown(&data, &plots))?;
    write("report.html", &tables::html(&data, &plots))?;
    Ok(written)
}

/// The first step run of each distinct step (repeats after the first are in the tables, not in
/// the plots) that has at least one report.
pub fn plotted(data: &RunData) -> Vec<&StepData> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for s in &data.steps {
        if s.reports.iter().any(Option::is_some) && !seen.contains(&s.run.step.label.as_str()) {
            seen.push(&s.run.step.label);
            out.push(s);
        }
    }
    out
}

/// The plots: `(file name, caption, SVG)`.
pub fn plots(data: &RunData) -> anyhow::Result<Vec<(String, String, String)>> {
    let steps = plotted(data);
    let mut out = Vec::new();
    if steps.is_empty() {
        return Ok(out);
    }
    // Offered load on x when every step has its own rate; otherwise the steps, in order.
    let mut rates: Vec<f64> = steps.iter().map(|s| s.run.step.rate).collect();
    rates.dedup();
    let by_rate = rates.len() == steps.len() && rates.windows(2).all(|w| w[0] < w[1]);
    let x_of = |i: usize, s: &StepData| {
        if by_rate { s.run.step.rate } else { (i + 1) as f64 }
    };
    let x_axis = |label: &str| Axis {
        label: if by_rate {
            label.to_string()
        } else {
            "step (see the table for each step's settings)".to_string()
        },
        log: by_rate && rates.last().unwrap_or(&1.0) / rates.first().unwrap_or(&1.0) >= 10.0,
        ticks: if by_rate {
            Vec::new()
        } else {
            steps
                .iter()
                .enumerate()
                .map(|(i, _)| ((i + 1) as f64, format!("{}", i + 1)))
                .collect()
        },
    };
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    for (n, (_, name)) in SYSTEMS.iter().enumerate() {
        let short = if n == 0 { "System 1" } else { "System 2" };
        let pick = |f: &dyn Fn(&Report) -> Option<f64>| -> Vec<(f64, f64)> {
            steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let r = s.reports[n].as_ref()?;
                    Some((x_of(i, s), f(r)?))
                })
                .collect()
        };
        latency.push(Series {
            name: format!("{short} e2e p99"),
            colour: COLOURS[n].into(),
            dashed: false,
            points: pick(&|r| r.e2e_latency_ms.p99),
        });
        latency.push(Series {
            name: format!("{short} e2e p50"),
            colour: COLOURS[n].into(),
            dashed: true,
            points: pick(&|r| r.e2e_latency_ms.p50),
        });
        throughput.push(Series {
            name: format!("{short} achieved"),
            colour: COLOURS[n].into(),
            dashed: false,
            points: pick(&|r| Some(r.achieved_rate)),
        });
        let _ = name;
    }
    throughput.push(Series {
        name: "intended".into(),
        colour: COLOURS[5].into(),
        dashed: true,
        points: steps
            .iter()
            .enumerate()
            .map(|(i, s)| (x_of(i, s), s.run.step.rate))
            .collect(),
    });
    out.push((
        "latency.svg".to_string(),
        "End-to-end latency (metric due → dashboard update), p50 dashed and p99 solid, against the offered load; log scale.".to_string(),
        Chart {
            title: "End-to-end latency vs offered load".into(),
            x: x_axis("offered load, metrics/s per system"),
            y: Axis {
                label: "latency, ms (log)".into(),
                log: true,
                ticks: Vec::new(),
            },
            series: latency,
            markers: Vec::new(),
        }
        .render(),
    ));
    out.push((
        "throughput.svg".to_string(),
        "Achieved (acknowledged) metrics/s against the intended rate: a system that keeps up lies on the dashed line.".to_string(),
        Chart {
            title: "Achieved vs intended throughput".into(),
            x: x_axis("offered load, metrics/s per system"),
            y: Axis {
                label: "metrics/s".into(),
                log: false,
                ticks: Vec::new(),
            },
            series: throughput,
            markers: Vec::new(),
        }
        .render(),
    ));
    for s in &steps {
        let mut series = Vec::new();
        for (n, _) in SYSTEMS.iter().enumerate() {
            let Some(r) = &s.reports[n] else { continue };
            let short = if n == 0 { "System 1" } else { "System 2" };
            for (which, encoded, dashed) in [
                ("e2e", &r.histograms.e2e, false),
                ("ack", &r.histograms.ack, true),
            ] {
                let h = decode(encoded, which)?;
                series.push(Series {
                    name: format!("{short} {which}"),
                    colour: COLOURS[n].into(),
                    dashed,
                    points: spectrum(&h),
                });
            }
        }
        out.push((
            format!("spectrum-{}.svg", s.run.stem()),
            format!(
                "Step {} ({}): latency at each percentile, both systems, ack dashed; the x axis is 1/(1−q), so the tail gets room.",
                s.run.index, s.run.step.label
            ),
            Chart {
                title: format!("Percentile spectrum: {}", s.run.step.label),
                x: Axis {
                    label: "percentile (log 1/(1−q))".into(),
                    log: true,
                    ticks: vec![
                        (1.0, "0%".into()),
                        (10.0, "90%".into()),
                        (100.0, "99%".into()),
                        (1000.0, "99.9%".into()),
                        (10000.0, "99.99%".into()),
                    ],
                },
                y: Axis {
                    label: "latency, ms (log)".into(),
                    log: true,
                    ticks: Vec::new(),
                },
                series,
                markers: Vec::new(),
            }
            .render(),
        ));
    }
    out.extend(capacity::cpu_plot(data));
    out.extend(faults::plots(data));
    Ok(out)
}

/// `(1/(1−q), ms)` from q = 0 to 99.99 %, ten points per decade, for a histogram of µs.
pub fn spectrum(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=40)
        .map(|k| {
            let x = 10f64.powf(f64::from(k) / 10.0);
            let q = 1.0 - 1.0 / x;
            (x, (h.value_at_quantile(q).max(1)) as f64 / 1000.0)
        })
        .collect()
}
