//! The report's tables and text: the figures of every step, the original lab's comparison table
//! with measured values, the environment; as Markdown, HTML and CSV.

use std::fmt::Write;

use lab_core::report::Report;

use super::{RunData, SYSTEMS, StepData};

/// The main figures of one system in one step run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The step's label.
    pub step: String,
    /// Which repeat.
    pub repeat: u64,
    /// `system1` or `system2`.
    pub system: &'static str,
    /// Offered, metrics/s.
    pub intended: f64,
    /// Acknowledged, metrics/s.
    pub achieved: f64,
    /// Counts.
    pub sent: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Never arrived (`None`: unknown).
    pub lost: Option<u64>,
    /// Arrived only inside a coalesced update.
    pub coalesced: Option<u64>,
    /// Delivered twice.
    pub duplicates: Option<u64>,
    /// Errors of any kind.
    pub errors: u64,
    /// Ack latency, ms.
    pub ack: [Option<f64>; 3],
    /// End-to-end latency p50, p99, p99.9, ms.
    pub e2e: [Option<f64>; 3],
    /// End-to-end max, ms.
    pub e2e_max: Option<f64>,
    /// The generator's worst lateness, ms.
    pub lag_ms: f64,
    /// Seconds in which the generator sent under 95 % of what was due.
    pub seconds_behind: u64,
    /// The agents were stopped early.
    pub partial: bool,
}

impl Row {
    fn of(step: &StepData, n: usize, r: &Report) -> Row {
        Row {
            step: step.run.step.label.clone(),
            repeat: step.run.repeat,
            system: SYSTEMS[n].0,
            intended: r.intended_rate,
            achieved: r.achieved_rate,
            sent: r.sent,
            acked: r.acked,
            lost: r.lost,
            coalesced: r.coalesced,
            duplicates: r.duplicates,
            errors: r.errors,
            ack: [r.ack_latency_ms.p50, r.ack_latency_ms.p99, r.ack_latency_ms.p999],
            e2e: [r.e2e_latency_ms.p50, r.e2e_latency_ms.p99, r.e2e_latency_ms.p999],
            e2e_max: r.e2e_latency_ms.max,
            lag_ms: r.generator.max_lag_ms,
            seconds_behind: r.generator.seconds_behind,
            partial: r.partial,
        }
    }

    /// Whether the load generator, not the system, may have set the pace.
    pub fn generator_limited(&self) -> bool {
        self.seconds_behind > 0
    }
}

/// Every row of a run, in step order, System 1 first.
pub fn rows(data: &RunData) -> Vec<Row> {
    let mut rows = Vec::new();
    for step in &data.steps {
        for (n, r) in step.reports.iter().enumerate() {
            if let Some(r) = r {
                rows.push(Row::of(step, n, r));
            }
        }
    }
    rows
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

fn count(v: Option<u64>) -> String {
    v.map_or("–".into(), |v| v.to_string())
}

/// `figures.csv`: one line per step run and system.
pub fn csv(data: &RunData) -> String {
    let mut out = String::from(
        "step,repeat,system,intended_per_s,achieved_per_s,sent,acked,lost,coalesced,duplicates,errors,\
         ack_p50_ms,ack_p99_ms,ack_p999_ms,e2e_p50_ms,e2e_p99_ms,e2e_p999_ms,e2e_max_ms,\
         generator_max_lag_ms,generator_seconds_behind,partial\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let optc = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows(data) {
        let _ = writeln!(
            out,
            "\"{}\",{},{},{:.1},{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{},{}",
            r.step.replace('"', "'"),
            r.repeat,
            r.system,
            r.intended,
            r.achieved,
            r.sent,
            r.acked,
            optc(r.lost),
            optc(r.coalesced),
            optc(r.duplicates),
            r.errors,
            opt(r.ack[0]),
            opt(r.ack[1]),
            opt(r.ack[2]),
            opt(r.e2e[0]),
            opt(r.e2e[1]),
            opt(r.e2e[2]),
            opt(r.e2e_max),
            r.lag_ms,
            r.seconds_behind,
            r.partial
        );
    }
    out
}

/// A table: header and rows of cells.
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// As Markdown.
    pub fn markdown(&self) -> String {
        let cell = |s: &String| s.replace('|', "\\|");
        let mut out = format!(
            "| {} |\n|{}\n",
            self.header.iter().map(cell).collect::<Vec<_>>().join(" | "),
            " --- |".repeat(self.header.len())
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} |",
                row.iter().map(cell).collect::<Vec<_>>().join(" | ")
            );
        }
        out
    }

    /// As HTML.
    pub fn html(&self) -> String {
        let mut out = String::from("<table>\n<tr>");
        for h in &self.header {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr>\n");
        for row in &self.rows {
            out.push_str("<tr>");
            for c in row {
                let _ = write!(out, "<td>{}</td>", escape(c));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Every step's figures.
pub fn figures_table(data: &RunData) -> Table {
    let header = [
        "step",
        "system",
        "intended/s",
        "achieved/s",
        "sent",
        "lost",
        "coalesced",
        "dup",
        "errors",
        "ack p50",
        "ack p99",
        "e2e p50",
        "e2e p99",
        "e2e p99.9",
        "e2e max",
        "generator",
    ]
    .map(String::from)
    .to_vec();
    let rows = rows(data)
        .into_iter()
        .map(|r| {
            let step = if r.repeat > 1 {
                format!("{} (repeat {})", r.step, r.repeat)
            } else {
                r.step.clone()
            };
            vec![
                step,
                if r.system == "system1" {
                    "System 1"
                } else {
                    "System 2"
                }
                .into(),
                format!("{:.0}", r.intended),
                format!("{:.0}", r.achieved),
                r.sent.to_string(),
                count(r.lost),
                count(r.coalesced),
                count(r.duplicates),
                r.errors.to_string(),
                ms(r.ack[0]),
                ms(r.ack[1]),
                ms(r.e2e[0]),
                ms(r.e2e[1]),
                ms(r.e2e[2]),
                ms(r.e2e_max),
                if r.generator_limited() {
                    format!("behind {} s, lag {:.0} ms", r.seconds_behind, r.lag_ms)
                } else {
                    format!("kept up (lag {:.0} ms)", r.lag_ms)
                },
            ]
        })
        .collect();
    Table { header, rows }
}

/// The step both systems have figures for at the highest offered load, and at the lowest.
fn reference_steps(data: &RunData) -> Option<(&StepData, &StepData)> {
    let both: Vec<&StepData> = data
        .steps
        .iter()
        .filter(|s| s.reports.iter().all(Option::is_some))
        .collect();
    let high = both
        .iter()
        .max_by(|a, b| a.run.step.rate.total_cmp(&b.run.step.rate))?;
    let low = both
        .iter()
        .min_by(|a, b| a.run.step.rate.total_cmp(&b.run.step.rate))?;
    Some((low, high))
}

/// Which step the comparison table's values come from.
pub fn reference_note(data: &RunData) -> String {
    match reference_steps(data) {
        Some((low, high)) => format!(
            "Values from step {} ({}), the highest offered load both systems have figures for{}; every step is in the table below.",
            high.run.index,
            high.run.step.label,
            if low.run.index == high.run.index {
                String::new()
            } else {
                format!("; growth from step {} ({})", low.run.index, low.run.step.label)
            }
        ),
        None => "No step has figures for both systems.".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
        _ => "n/a".into(),
    }
}

/// The original lab's comparison table (transport, state, latency profile, fault tolerance,
/// scaling, complexity, best use), with this run's measured values and one plain sentence a row.
pub fn comparison_table(data: &RunData) -> Table {
    let header = ["", "System 1", "System 2", "what this run shows"]
        .map(String::from)
        .to_vec();
    let Some((low, high)) = reference_steps(data) else {
        return Table {
            header,
            rows: vec![vec![
                "–".into(),
                "–".into(),
                "–".into(),
                "No step has figures for both systems, so there is nothing to compare.".into(),
            ]],
        };
    };
    let r1 = high.reports[0].as_ref().expect("both");
    let r2 = high.reports[1].as_ref().expect("both");
    let rate = high.run.step.rate;
    let via = match high.run.step.protocol {
        crate::scenario::Protocol::Http1 => "HTTP/1.1",
        crate::scenario::Protocol::Http2 => "HTTP/2",
    };
    let batch = high.run.step.batch;
    let totals = |n: usize| {
        let reports = data.steps.iter().filter_map(|s| s.reports[n].as_ref());
        let (mut sent, mut lost, mut coalesced, mut dup) = (0, 0, 0, 0);
        for r in reports {
            sent += r.sent;
            lost += r.lost.unwrap_or(0);
            coalesced += r.coalesced.unwrap_or(0);
            dup += r.duplicates.unwrap_or(0);
        }
        (sent, lost, coalesced, dup)
    };
    let (s1, l1, c1, d1) = totals(0);
    let (s2, l2, c2, d2) = totals(1);
    let growth = |n: usize| {
        let a = low.reports[n].as_ref()?.e2e_latency_ms.p99?;
        let b = high.reports[n].as_ref()?.e2e_latency_ms.p99?;
        (a > 0.0).then_some(b / a)
    };
    let keeps = |r: &Report| {
        if r.intended_rate <= 0.0 {
            0.0
        } else {
            100.0 * r.achieved_rate / r.intended_rate
        }
    };
    // With every step at the same rate (protocols, connections, …) there is no growth with load
    // to show: the steps differ in something else, which the steps table shows.
    let same_rate = low.run.step.rate == high.run.step.rate;
    let scaling = |r: &Report, growth: Option<f64>| {
        if same_rate {
            format!(
                "{:.0} % of intended at {rate}/s (every step at this rate)",
                keeps(r)
            )
        } else {
            format!(
                "{:.0} % of intended; e2e p99 ×{} from {} to {rate}/s",
                keeps(r),
                growth.map_or("n/a".into(), |g| format!("{g:.1}")),
                low.run.step.rate
            )
        }
    };
    let rows = vec![
        vec![
            "Transport".into(),
            format!("{via} POST, batch {batch}; ack p50 {} ms", ms(r1.ack_latency_ms.p50)),
            format!("WebSocket frames, batch {batch}; ack p50 {} ms", ms(r2.ack_latency_ms.p50)),
            format!(
                "At {rate} metrics/s System 1 acknowledged a metric in {} ms (median), System 2 in {} ms ({} System 2's): an HTTP request and response per message costs more than a frame on a connection that stays open.",
                ms(r1.ack_latency_ms.p50),
                ms(r2.ack_latency_ms.p50),
                ratio(r1.ack_latency_ms.p50, r2.ack_latency_ms.p50)
            ),
        ],
        vec![
            "State".into(),
            format!(
                "Redis Streams ({}); e2e p50 {} ms",
                match high.run.step.redis_fsync {
                    crate::scenario::Fsync::Always => "AOF, fsync always",
                    crate::scenario::Fsync::Everysec => "AOF, fsync everysec",
                    crate::scenario::Fsync::Off => "no AOF",
                },
                ms(r1.e2e_latency_ms.p50)
            ),
            format!("in-memory windows; e2e p50 {} ms", ms(r2.e2e_latency_ms.p50)),
            format!(
                "From due time to the dashboard the median metric took {} ms through System 1 and {} ms through System 2 ({}): System 1 writes it to a Redis stream, a worker reads it back, aggregates and publishes it — more network hops and a batch wait.",
                ms(r1.e2e_latency_ms.p50),
                ms(r2.e2e_latency_ms.p50),
                ratio(r1.e2e_latency_ms.p50, r2.e2e_latency_ms.p50)
            ),
        ],
        vec![
            "Latency profile".into(),
            format!(
                "e2e p99 {} ms, p99.9 {} ms",
                ms(r1.e2e_latency_ms.p99),
                ms(r1.e2e_latency_ms.p999)
            ),
            format!(
                "e2e p99 {} ms, p99.9 {} ms",
                ms(r2.e2e_latency_ms.p99),
                ms(r2.e2e_latency_ms.p999)
            ),
            format!(
                "At {rate} metrics/s one metric in a hundred waited longer than {} ms in System 1 and {} ms in System 2 ({}); the tail, not the median, is what a user of a live dashboard notices.",
                ms(r1.e2e_latency_ms.p99),
                ms(r2.e2e_latency_ms.p99),
                ratio(r1.e2e_latency_ms.p99, r2.e2e_latency_ms.p99)
            ),
        ],
        vec![
            "Fault tolerance".into(),
            format!("lost {l1}, coalesced {c1}, duplicates {d1} of {s1}"),
            format!("lost {l2}, coalesced {c2}, duplicates {d2} of {s2}"),
            fault_sentence(data),
        ],
        vec![
            "Scaling".into(),
            scaling(r1, growth(0)),
            scaling(r2, growth(1)),
            "Achieved over intended says whether a system kept up at the highest load of the run; how much its p99 grew from the lowest load says how close it came to its limit. System 1 scales out by adding workers and API processes (the scaling scenario); System 2 by sharding servers across instances.".into(),
        ],
        vec![
            "Complexity".into(),
            format!(
                "{} parts: Redis, ingest API, {} worker{}, broadcaster ({})",
                3 + high.run.step.workers,
                high.run.step.workers,
                if high.run.step.workers == 1 { "" } else { "s" },
                if high.run.step.system1_processes {
                    "each its own process"
                } else {
                    "run as one `system1 all` process"
                }
            ),
            "1 process: ingest, windows and broadcast".into(),
            "Not measured: counted from what `lab up` starts. Every extra part is one more thing to deploy, watch and restart.".into(),
        ],
        vec![
            "Best use".into(),
            "when a metric must survive a crash and many consumers read the stream".into(),
            "when the freshest view matters most and a restart may lose the last window".into(),
            match (r1.e2e_latency_ms.p50, r2.e2e_latency_ms.p50) {
                (Some(p1), Some(p2)) if p1 >= p2 => format!(
                    "In this run System 2 was {} faster to the dashboard at p50; System 1 pays that for durability and decoupling.",
                    ratio(Some(p1), Some(p2))
                ),
                (Some(p1), Some(p2)) => format!(
                    "In this run System 1 was {} faster to the dashboard at p50, against the lab's usual result: look at the load average and the generator's lag in the table below before drawing a lesson from it.",
                    ratio(Some(p2), Some(p1))
                ),
                _ => "No end-to-end figures for both systems at this step to compare.".to_string(),
            },
        ],
    ];
    Table { header, rows }
}

/// The fault tolerance row's sentence: what the run's faults cost each system, or, without
/// faults, what the counts mean and where faults are measured.
fn fault_sentence(data: &RunData) -> String {
    let steps = super::faults::steps(data);
    let meaning = "lost never reached the dashboard; coalesced reached it only inside a later, combined update (not lost)";
    if steps.is_empty() {
        return format!(
            "Counted by seq over the whole run, without faults: {meaning}. This scenario injects no fault: System 1 keeps accepted metrics in Redis across a process restart, System 2 keeps them only in memory — `lab run faults` measures that."
        );
    }
    let lost = |n: usize| -> u64 { steps.iter().filter_map(|s| s.reports[n].as_ref()?.lost).sum() };
    let kinds: Vec<&str> = steps
        .iter()
        .flat_map(|s| s.faults.iter().map(|f| f.kind.as_str()))
        .collect();
    format!(
        "Counted by seq ({meaning}). Through the faults this run injected ({}), System 1 lost {} acknowledged metrics and System 2 {}; the Faults section says which fault cost what, and why.",
        kinds.join(", "),
        lost(0),
        lost(1)
    )
}

/// `env.json` as a two-column table.
pub fn env_table(data: &RunData) -> Table {
    let mut rows = Vec::new();
    if let Some(map) = data.env.as_object() {
        for (k, v) in map {
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            rows.push(vec![k.clone(), value]);
        }
    }
    Table {
        header: vec!["".into(), "".into()],
        rows,
    }
}

fn intro(data: &RunData) -> Vec<String> {
    let r = &data.record;
    let mut lines = vec![
        format!("Scenario **{}** ({}).", r.scenario.name, r.source),
        r.scenario.description.clone(),
        format!(
            "Started {}, finished {}. {} step runs; every step started from a fresh Redis and fresh systems.",
            r.started,
            r.finished.as_deref().unwrap_or("–"),
            r.steps.len()
        ),
        "Latencies count from each metric's due time (so a late generator shows as latency). Absolute figures belong to this machine (see Environment); the ratios between the two systems, measured in the same run, travel better.".into(),
    ];
    if !r.sets.is_empty() {
        lines.push(format!("Settings changed with --set: {}.", r.sets.join(", ")));
    }
    let load = data.env["load_average_before"]
        .as_str()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|l| l.parse::<f64>().ok());
    let cores = data.env["cores"].as_f64();
    if let (Some(load), Some(cores)) = (load, cores)
        && load > cores
    {
        lines.push(format!(
            "The machine was busy before the run (load average {load} on {cores} cores): other work competed for the CPU, so latencies here are higher than on an idle machine."
        ));
    }
    let limited: Vec<String> = rows(data)
        .iter()
        .filter(|row| row.generator_limited())
        .map(|row| format!("{} ({})", row.step, row.system))
        .collect();
    if !limited.is_empty() {
        lines.push(format!(
            "The load generator fell behind its schedule in: {}. There, the generator (or the machine), not only the system, set the pace.",
            limited.join(", ")
        ));
    }
    lines
}

fn partial_note(data: &RunData) -> Option<String> {
    data.record.partial.then(|| {
        format!(
            "PARTIAL REPORT: {}. Steps not run are missing from the tables.",
            data.record
                .why_partial
                .as_deref()
                .unwrap_or("the run was cut short")
        )
    })
}

/// What the CPU table measures.
const CPU_NOTE: &str = "Cores each process kept busy while the agents were sending (its CPU seconds, user and system, over the wall time; 1.00 is one core all the time), read from /proc for each process group: Redis counts its guarded redis-server. The load generator (agents-…) runs on the same cores: a system cannot use what the generator takes.";

/// What the knee table says, with the scenario's bound.
fn knee_note(data: &RunData) -> String {
    format!(
        "Kept up: acknowledged at least 95 % of the offered rate, lost and coalesced nothing by seq (a coalesced metric is not lost, but has no latency of its own), and an end-to-end p99 of at most {} ms, with the load generator on schedule (a step where it fell behind is inconclusive). The knee lies between the two rates; the busiest process at the first rate that failed is the likely limit, and when all processes together use about every core, the machine is.",
        data.record.scenario.knee_p99_ms.unwrap_or_default()
    )
}

/// What the faults table's columns mean.
const FAULTS_NOTE: &str = "Each fault was injected by the supervisor at the time shown (seconds since sending began) and the part was back (ready again) at the second time. lost: acknowledged but never delivered to the dashboard, counted by seq; errors: sends that failed or were refused, which the agents were told about (not lost). Recovered after: from the second the fault fell in to the end of the last bad second after it, with at least three good seconds after that; a good second delivered at least 90 % of what was due with an end-to-end p99 not clearly worse than before the fault (at most the worst second before it, four times their median, or their median plus 20 ms); the timeline plots show it.";

/// `report.md`.
pub fn markdown(data: &RunData, plots: &[(String, String, String)]) -> String {
    let mut out = format!("# Telemetry lab report: {}\n\n", data.record.scenario.name);
    if let Some(note) = partial_note(data) {
        let _ = writeln!(out, "> **{note}**\n");
    }
    for line in intro(data) {
        let _ = writeln!(out, "{line}\n");
    }
    let _ = writeln!(
        out,
        "## The two systems compared\n\n{}\n\n{}",
        reference_note(data),
        comparison_table(data).markdown()
    );
    let _ = writeln!(
        out,
        "## Every step\n\nLatencies in ms. lost: never reached the dashboard; coalesced: reached it only inside a later combined update (not lost).\n\n{}",
        figures_table(data).markdown()
    );
    if let Some(knee) = super::capacity::knee_table(data) {
        let _ = writeln!(
            out,
            "## Where each system stopped keeping up\n\n{}\n\n{}",
            knee_note(data),
            knee.markdown()
        );
    }
    if let Some(cpu) = super::capacity::cpu_table(data) {
        let _ = writeln!(out, "## CPU by process\n\n{CPU_NOTE}\n\n{}", cpu.markdown());
    }
    if !super::faults::steps(data).is_empty() {
        let _ = writeln!(
            out,
            "## Faults\n\n{FAULTS_NOTE}\n\n{}",
            super::faults::table(data).markdown()
        );
        for line in super::faults::explanations(data) {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Plots\n");
    for (name, caption, _) in plots {
        let _ = writeln!(out, "![{caption}]({name})\n\n{caption}\n");
    }
    let _ = writeln!(out, "## Steps run\n");
    for s in &data.record.steps {
        let _ = writeln!(
            out,
            "{}. {} (repeat {}): {} — `{}`",
            s.index,
            s.step.label,
            s.repeat,
            s.status,
            s.command.join(" ")
        );
    }
    let _ = writeln!(
        out,
        "\n## Environment\n\n{}\nRaw data: `run.json`, `env.json`, `steps/*.json` (agents reports), `steps/*.hgrm` (HdrHistogram percentile distributions, ms), `figures.csv`.",
        env_table(data).markdown()
    );
    out
}

/// `report.html`: the same, self-contained, the plots inline.
pub fn html(data: &RunData, plots: &[(String, String, String)]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Telemetry lab report: {name}</title>\n<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}.partial{{background:#fee;border:2px solid #c00;padding:1em;font-weight:bold}}figure{{margin:1em 0}}</style></head><body>\n<h1>Telemetry lab report: {name}</h1>\n",
        name = escape(&data.record.scenario.name)
    );
    if let Some(note) = partial_note(data) {
        let _ = writeln!(out, "<p class=\"partial\">{}</p>", escape(&note));
    }
    for line in intro(data) {
        let _ = writeln!(out, "<p>{}</p>", escape(&line.replace("**", "")));
    }
    let _ = writeln!(
        out,
        "<h2>The two systems compared</h2>\n<p>{}</p>\n{}",
        escape(&reference_note(data)),
        comparison_table(data).html()
    );
    let _ = writeln!(
        out,
        "<h2>Every step</h2>\n<p>Latencies in ms. lost: never reached the dashboard; coalesced: reached it only inside a later combined update (not lost).</p>\n{}",
        figures_table(data).html()
    );
    if let Some(knee) = super::capacity::knee_table(data) {
        let _ = writeln!(
            out,
            "<h2>Where each system stopped keeping up</h2>\n<p>{}</p>\n{}",
            escape(&knee_note(data)),
            knee.html()
        );
    }
    if let Some(cpu) = super::capacity::cpu_table(data) {
        let _ = writeln!(
            out,
            "<h2>CPU by process</h2>\n<p>{}</p>\n{}",
            escape(CPU_NOTE),
            cpu.html()
        );
    }
    if !super::faults::steps(data).is_empty() {
        let _ = writeln!(
            out,
            "<h2>Faults</h2>\n<p>{}</p>\n{}<ul>",
            escape(FAULTS_NOTE),
            super::faults::table(data).html()
        );
        for line in super::faults::explanations(data) {
            let _ = writeln!(out, "<li>{}</li>", escape(&line));
        }
        out.push_str("</ul>\n");
    }
    let _ = writeln!(out, "<h2>Plots</h2>");
    for (_, caption, svg) in plots {
        let _ = writeln!(
            out,
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            escape(caption)
        );
    }
    let _ = writeln!(out, "<h2>Steps run</h2>\n<ol>");
    for s in &data.record.steps {
        let _ = writeln!(
            out,
            "<li>{} (repeat {}): {} — <code>{}</code></li>",
            escape(&s.step.label),
            s.repeat,
            escape(&s.status),
            escape(&s.command.join(" "))
        );
    }
    let _ = writeln!(
        out,
        "</ol>\n<h2>Environment</h2>\n{}</body></html>",
        env_table(data).html()
    );
    out
}
