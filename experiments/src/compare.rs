//! `lab compare A B`: two reports' figures side by side, with the change, and a flag where the
//! change is beyond the run-to-run noise.
//!
//! The noise of a figure is a factor: how far apart two runs of the same step may be by chance.
//! It is estimated from repeated steps (`repeat = 3` in a scenario, or `--set repeat=3`): the
//! largest over smallest of a figure's repeats, the larger of the two reports'. Without repeats
//! there is nothing to measure it from, and an assumed factor is used, and the output says so:
//! ×1.1 for rates, ×1.3 for medians, ×4 for the 99th percentiles — what two back-to-back release
//! runs of `quick` showed on the shared 2-core machine this was written on (medians within 10 %,
//! p99s up to ×4 apart: a tail measured over a few seconds is a handful of samples). A change of
//! loss from zero to more, or back, is always flagged.

use std::fmt::Write;
use std::path::Path;

use crate::report::RunData;
use crate::report::tables::{Row, Table, rows};

/// Assumed noise factor of a rate when neither report has repeats.
pub const ASSUMED_RATE_NOISE: f64 = 1.1;
/// Assumed noise factor of a median latency.
pub const ASSUMED_MEDIAN_NOISE: f64 = 1.3;
/// Assumed noise factor of a 99th percentile.
pub const ASSUMED_TAIL_NOISE: f64 = 4.0;

/// A figure: its name, its assumed noise factor, whether it is a count, and how to read it.
type Figure = (&'static str, f64, bool, fn(&Row) -> Option<f64>);

const FIGURES: [Figure; 7] = [
    ("achieved/s", ASSUMED_RATE_NOISE, false, |r| Some(r.achieved)),
    ("ack p50 ms", ASSUMED_MEDIAN_NOISE, false, |r| r.ack[0]),
    ("ack p99 ms", ASSUMED_TAIL_NOISE, false, |r| r.ack[1]),
    ("e2e p50 ms", ASSUMED_MEDIAN_NOISE, false, |r| r.e2e[0]),
    ("e2e p99 ms", ASSUMED_TAIL_NOISE, false, |r| r.e2e[1]),
    ("lost", ASSUMED_RATE_NOISE, true, |r| r.lost.map(|v| v as f64)),
    ("coalesced", ASSUMED_RATE_NOISE, true, |r| {
        r.coalesced.map(|v| v as f64)
    }),
];

/// Mean and spread (largest over smallest) of one figure over repeats.
fn stats(values: &[f64]) -> Option<(f64, Option<f64>)> {
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let spread = (values.len() > 1 && min > 0.0).then(|| max / min);
    Some((mean, spread))
}

/// The comparison, as Markdown; `Err` when the scenarios differ and `force` is not set.
pub fn compare(a: &Path, b: &Path, force: bool) -> anyhow::Result<String> {
    let da = RunData::load(a)?;
    let db = RunData::load(b)?;
    let (na, nb) = (&da.record.scenario.name, &db.record.scenario.name);
    anyhow::ensure!(
        na == nb || force,
        "{} is a report of scenario {na:?}, {} of {nb:?}: their steps differ, so their figures do not \
         compare. Use --force to compare them anyway.",
        a.display(),
        b.display()
    );
    Ok(render(
        &da,
        &db,
        &a.display().to_string(),
        &b.display().to_string(),
    ))
}

/// The comparison of two loaded reports.
pub fn render(da: &RunData, db: &RunData, name_a: &str, name_b: &str) -> String {
    let (ra, rb) = (rows(da), rows(db));
    let mut keys: Vec<(String, &'static str)> = Vec::new();
    for r in ra.iter().chain(&rb) {
        if !keys.iter().any(|(s, sys)| *s == r.step && *sys == r.system) {
            keys.push((r.step.clone(), r.system));
        }
    }
    let mut measured_noise = false;
    let mut table = Table {
        header: ["step", "system", "figure", "A", "B", "change", "noise", ""]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    for (step, system) in &keys {
        for (figure, assumed, is_count, get) in FIGURES {
            let pick = |rows: &[Row]| -> Vec<f64> {
                rows.iter()
                    .filter(|r| &r.step == step && r.system == *system)
                    .filter_map(get)
                    .collect()
            };
            let (sa, sb) = (stats(&pick(&ra)), stats(&pick(&rb)));
            let noise = match (sa.and_then(|s| s.1), sb.and_then(|s| s.1)) {
                (None, None) => None,
                (x, y) => {
                    measured_noise = true;
                    Some(x.unwrap_or(1.0).max(y.unwrap_or(1.0)))
                }
            };
            let threshold = noise.unwrap_or(assumed);
            let fmt = |s: Option<(f64, Option<f64>)>| {
                s.map_or("–".to_string(), |(m, _)| {
                    if is_count || m >= 100.0 {
                        format!("{m:.0}")
                    } else {
                        format!("{m:.2}")
                    }
                })
            };
            let (change, flag) = match (sa, sb) {
                (Some((a, _)), Some((b, _))) if is_count => (
                    format!("{:+}", b - a),
                    if (a == 0.0) != (b == 0.0) || (a > 0.0 && b > 0.0 && (b / a).max(a / b) > threshold) {
                        "**changed**"
                    } else {
                        ""
                    },
                ),
                (Some((a, _)), Some((b, _))) if a > 0.0 && b > 0.0 => {
                    let rel = (b - a) / a;
                    (
                        format!("{:+.0} %", rel * 100.0),
                        if (b / a).max(a / b) > threshold {
                            "**beyond noise**"
                        } else {
                            ""
                        },
                    )
                }
                _ => ("–".to_string(), ""),
            };
            table.rows.push(vec![
                step.clone(),
                if *system == "system1" {
                    "System 1"
                } else {
                    "System 2"
                }
                .into(),
                figure.into(),
                fmt(sa),
                fmt(sb),
                change,
                format!(
                    "×{threshold:.1}{}",
                    if noise.is_some() { "" } else { " (assumed)" }
                ),
                flag.into(),
            ]);
        }
    }
    let mut out = format!(
        "# Comparison: {}\n\nA: {name_a} (started {}{})\nB: {name_b} (started {}{})\n\n",
        da.record.scenario.name,
        da.record.started,
        if da.record.partial { ", PARTIAL" } else { "" },
        db.record.started,
        if db.record.partial { ", PARTIAL" } else { "" },
    );
    for (label, d) in [("A", da), ("B", db)] {
        let _ = writeln!(
            out,
            "{label} ran on: {} ({} cores), {} build, commit {}{}",
            d.env["cpu_model"].as_str().unwrap_or("?"),
            d.env["cores"],
            d.env["build"].as_str().unwrap_or("?"),
            d.env["git_commit"]
                .as_str()
                .map_or("?", |c| &c[..c.len().min(10)]),
            if d.env["git_dirty"] == true {
                " (dirty)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{}\nA change is flagged when the two values are further apart than the figure's noise: the largest over the smallest of its repeats (the larger of A's and B's); {}",
        table.markdown(),
        if measured_noise {
            "figures without repeats use an assumed noise, marked so."
        } else {
            "neither report has repeated steps, so every noise here is assumed (×1.1 rates, ×1.3 medians, ×4 p99s, from back-to-back runs of quick on a shared 2-core machine): run with --set repeat=3 to measure it."
        }
    );
    out
}
