//! The terminal: the live side-by-side view, the supervisor's messages, and the final summary.
//!
//! On a terminal the view is redrawn in place each second; elsewhere (a pipe, a CI log) a line per
//! system is printed every few seconds instead, so that a log stays readable.

use std::io::{IsTerminal, Write};

use lab_core::report::{LiveSecond, OVERDUE_AFTER_SECS, Percentiles, Report};

/// Where a system stands, for the view.
#[derive(Debug, Clone)]
pub enum Column {
    /// Not running, and why.
    Absent(String),
    /// Running; the latest second, once there is one.
    Live(Option<Box<LiveSecond>>),
}

/// Width of the row labels and of each system's column.
const LABEL: usize = 26;
const COLUMN: usize = 40;

/// The supervisor's output: one place, so that messages and the redrawn view do not garble each
/// other.
#[derive(Debug)]
pub struct Screen {
    tty: bool,
    /// Lines of the view currently on screen (terminal only).
    drawn: usize,
    /// Seconds since the last plain-text progress line (not a terminal).
    since_line: u64,
}

impl Default for Screen {
    fn default() -> Self {
        Screen {
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            since_line: 0,
        }
    }
}

impl Screen {
    /// Prints a message (above the view, which is redrawn on the next tick).
    pub fn say(&mut self, message: &str) {
        self.erase();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{message}");
        let _ = out.flush();
    }

    fn erase(&mut self) {
        if self.drawn > 0 {
            print!("\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Shows the live view for this second.
    pub fn live(&mut self, elapsed_secs: u64, heading: &str, systems: [(&str, &Column); 2]) {
        if self.tty {
            self.erase();
            let mut lines = vec![
                format!("{heading} · {elapsed_secs} s · Ctrl-C stops"),
                String::new(),
            ];
            lines.extend(live_table(systems));
            let mut out = std::io::stdout().lock();
            for line in &lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            self.drawn = lines.iter().map(|l| l.lines().count().max(1)).sum();
        } else {
            self.since_line += 1;
            if self.since_line >= 5 {
                self.since_line = 0;
                for (name, column) in systems {
                    if let Column::Live(Some(s)) = column {
                        self.say(&format!(
                            "[{elapsed_secs:>4} s] {name}: {} of {} metrics/s, ack p50/p99 {}, end-to-end p50/p99 {}, coalesced {}, lost {}, errors {}",
                            s.second.acked,
                            s.second.intended,
                            pair(&s.ack_latency_ms),
                            pair(&s.e2e_latency_ms),
                            count(s.coalesced),
                            count(s.overdue),
                            s.errors
                        ));
                    }
                }
            }
        }
    }

    /// Leaves the view on screen as it is, so that what follows is printed below it.
    pub fn keep(&mut self) {
        self.drawn = 0;
    }
}

fn live_table(systems: [(&str, &Column); 2]) -> Vec<String> {
    let cells = |f: &dyn Fn(&LiveSecond) -> String| -> Vec<String> {
        systems
            .iter()
            .map(|(_, column)| match column {
                Column::Absent(why) => why.clone(),
                Column::Live(None) => "starting…".to_string(),
                Column::Live(Some(s)) => f(s),
            })
            .collect()
    };
    let mut lines = vec![row(
        "",
        systems.iter().map(|(name, _)| name.to_string()).collect(),
    )];
    lines.push(row(
        "metrics/s  got / wanted",
        cells(&|s| format!("{} / {}", s.second.acked, s.second.intended)),
    ));
    lines.push(row("ack         p50 / p99", cells(&|s| pair(&s.ack_latency_ms))));
    lines.push(row("end-to-end  p50 / p99", cells(&|s| pair(&s.e2e_latency_ms))));
    lines.push(row(
        "coalesced / lost",
        cells(&|s| format!("{} / {}", count(s.coalesced), count(s.overdue))),
    ));
    lines.push(row("errors", cells(&|s| s.errors.to_string())));
    lines.push(String::new());
    lines.push(format!(
        "Latency of this second's metrics, from the time each was due. ack: until the system said it got it\n\
         (System 1: HTTP 202 after the Redis append; System 2: metric.ack). end-to-end: until the dashboard\n\
         received the aggregated update. coalesced: reached the dashboard only inside a later update of its\n\
         server (the dashboard fell behind; not lost). lost: acked {OVERDUE_AFTER_SECS}+ s ago and never delivered."
    ));
    lines
}

fn row(label: &str, cells: Vec<String>) -> String {
    let mut line = format!("{label:<LABEL$}");
    for cell in cells {
        line.push_str(&format!("{cell:<COLUMN$}  "));
    }
    line.trim_end().to_string()
}

/// "0.61 / 1.20 ms", or "–" before any sample.
fn pair(p: &Percentiles) -> String {
    match (p.p50, p.p99) {
        (Some(a), Some(b)) => format!("{} / {} ms", ms(a), ms(b)),
        _ => "–".to_string(),
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn count(v: Option<u64>) -> String {
    v.map_or("n/a".to_string(), |v| v.to_string())
}

/// The final summary, side by side: each system's agents report, or why there is none.
pub fn summary(systems: [(&str, Result<&Report, &str>); 2]) -> String {
    let cells = |f: &dyn Fn(&Report) -> String| -> Vec<String> {
        systems
            .iter()
            .map(|(_, r)| match r {
                Ok(r) => f(r),
                Err(why) => why.to_string(),
            })
            .collect()
    };
    let four = |p: &Percentiles| {
        let v = |x: Option<f64>| x.map_or("–".to_string(), ms);
        format!("{} / {} / {} / {} ms", v(p.p50), v(p.p99), v(p.p999), v(p.max))
    };
    let mut lines = vec![row(
        "",
        systems.iter().map(|(name, _)| name.to_string()).collect(),
    )];
    lines.push(row(
        "metrics/s  got / wanted",
        cells(&|r| format!("{:.0} / {:.0}", r.achieved_rate, r.intended_rate)),
    ));
    lines.push(row(
        "sent / acked",
        cells(&|r| format!("{} / {}", r.sent, r.acked)),
    ));
    lines.push(row("ack  p50/p99/p99.9/max", cells(&|r| four(&r.ack_latency_ms))));
    lines.push(row("e2e  p50/p99/p99.9/max", cells(&|r| four(&r.e2e_latency_ms))));
    lines.push(row(
        "coalesced / lost / dup.",
        cells(&|r| {
            format!(
                "{} / {} / {}",
                count(r.coalesced),
                count(r.lost),
                count(r.duplicates)
            )
        }),
    ));
    lines.push(row("errors", cells(&|r| r.errors.to_string())));
    lines.push(row(
        "measured",
        cells(&|r| {
            format!(
                "{:.1} s{}",
                r.run.measured_secs,
                if r.partial { " (stopped early)" } else { "" }
            )
        }),
    ));
    if let Some((_, Ok(r))) = systems.iter().find(|(_, r)| r.is_ok()) {
        lines.push(format!("machine: {}", r.run.machine));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::report::{RunInfo, Second};

    fn percentiles(p50: f64, p99: f64) -> Percentiles {
        Percentiles {
            p50: Some(p50),
            p90: Some(p99),
            p99: Some(p99),
            p999: Some(p99),
            max: Some(p99),
            count: 10,
        }
    }

    #[test]
    fn latencies_keep_three_significant_figures_and_say_when_there_are_none() {
        assert_eq!(pair(&percentiles(0.4321, 12.345)), "0.43 / 12.3 ms");
        assert_eq!(pair(&percentiles(150.4, 2048.0)), "150 / 2048 ms");
        assert_eq!(pair(&Percentiles::default()), "–");
        assert_eq!(count(None), "n/a");
    }

    #[test]
    fn the_live_table_puts_the_systems_side_by_side_and_says_why_one_is_missing() {
        let second = LiveSecond {
            second: Second {
                t: 3,
                intended: 200,
                sent: 200,
                acked: 198,
                delivered: 198,
            },
            errors: 2,
            overdue: Some(1),
            coalesced: Some(7),
            ack_latency_ms: percentiles(0.5, 1.5),
            e2e_latency_ms: percentiles(0.8, 2.5),
        };
        let absent = Column::Absent("not running: no Redis".to_string());
        let live = Column::Live(Some(Box::new(second)));
        let lines = live_table([("System 1", &absent), ("System 2", &live)]);
        let find = |label: &str| lines.iter().find(|l| l.starts_with(label)).unwrap().clone();
        let rate = find("metrics/s");
        assert!(
            rate.contains("not running: no Redis") && rate.ends_with("198 / 200"),
            "{rate}"
        );
        // Both columns start at the same place on every row.
        let column2 = lines[0].find("System 2").unwrap();
        assert_eq!(rate.find("198 / 200"), Some(column2));
        assert!(find("ack").ends_with("0.50 / 1.50 ms"));
        assert!(find("end-to-end").ends_with("0.80 / 2.50 ms"));
        assert!(find("coalesced / lost").ends_with("7 / 1"));
        assert!(find("errors").ends_with('2'));
    }

    #[test]
    fn the_summary_reads_the_agents_reports() {
        let mut report = Report::empty(RunInfo {
            machine: "2 cores, test".to_string(),
            ..RunInfo::default()
        });
        report.sent = 1000;
        report.acked = 1000;
        report.lost = Some(0);
        report.coalesced = Some(12);
        report.duplicates = Some(0);
        report.achieved_rate = 200.0;
        report.intended_rate = 200.0;
        report.partial = true;
        let text = summary([
            ("System 1", Err("did not run: no Redis")),
            ("System 2", Ok(&report)),
        ]);
        assert!(text.contains("did not run: no Redis"), "{text}");
        assert!(
            text.contains("200 / 200") && text.contains("1000 / 1000"),
            "{text}"
        );
        assert!(text.contains("(stopped early)"), "{text}");
        assert!(text.contains("12 / 0 / 0"), "coalesced apart from lost: {text}");
        assert!(text.ends_with("machine: 2 cores, test"), "{text}");
    }
}
