//! `lab run SCENARIO`: each step is one `lab up` run, a child process of this binary, so that
//! every step gets a fresh private Redis, fresh systems and fresh agents, and one step's backlog
//! never leaks into the next. The supervisor already knows how to start, watch and stop all of
//! them (and writes both agents' reports with `--json`); the runner only decides the flags, shows
//! the progress, and keeps the raw data for the report.
//!
//! Ctrl-C (or SIGTERM) stops the step running (its `lab up` stops every child and writes what its
//! agents measured so far), skips the rest, and writes a report marked partial.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::report::{RunRecord, StepRun};
use crate::scenario::{self, Scenario};

/// `lab run`'s arguments, parsed by the binary.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A built-in scenario's name or a file.
    pub scenario: String,
    /// The report folder; default `reports/<UTC time>-<scenario>`.
    pub out: Option<PathBuf>,
    /// `--set key=value`.
    pub sets: Vec<String>,
}

/// How long `lab up` takes beyond the sending itself (start-up, draining, stopping), a guess
/// for the time left only.
const OVERHEAD_GUESS: Duration = Duration::from_secs(5);

/// Runs a scenario and writes its report. Errors in the scenario come back before anything starts.
pub async fn run(options: RunOptions) -> anyhow::Result<ExitCode> {
    let (file, text) = scenario::find(&options.scenario)?;
    let sets = scenario::parse_sets(&options.sets)?;
    let scenario = scenario::parse(&file, &text, &sets)?;
    let (stamp, started) = utc_now();
    let dir = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{stamp}-{}", scenario.name)));
    std::fs::create_dir_all(dir.join("steps"))
        .with_context(|| format!("cannot create {}", dir.join("steps").display()))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let mut env = crate::env::collect();
    let mut record = RunRecord {
        scenario: scenario.clone(),
        source: file,
        sets: options.sets.clone(),
        started,
        finished: None,
        partial: false,
        why_partial: None,
        steps: plan(&scenario, &dir)?,
    };
    save(&dir.join("run.json"), &record)?;

    let bar = progress(&scenario);
    let planned_total = total(&scenario);
    let mut done = Duration::ZERO;
    let mut signal = std::pin::pin!(lab_core::signal::shutdown());
    let count = record.steps.len();
    for i in 0..count {
        let step = record.steps[i].clone();
        let planned = step.step.warmup + step.step.duration + OVERHEAD_GUESS;
        if step.status.starts_with("skipped") {
            done += planned + step.step.cooldown;
            say(
                &bar,
                &format!("step {}/{count} {}: {}", i + 1, step.step.label, step.status),
            );
            continue;
        }
        let mut command = step.command.clone();
        let outcome = run_step(
            &step,
            &mut command,
            &dir,
            &bar,
            (i + 1, count),
            planned_total.saturating_sub(done),
            &mut signal,
        )
        .await;
        done += planned + step.step.cooldown;
        record.steps[i].command = command;
        record.steps[i].status = match outcome {
            StepOutcome::Ok => "ok".to_string(),
            StepOutcome::Failed(why) => {
                record.partial = true;
                record
                    .why_partial
                    .get_or_insert(format!("step {} ({}) failed", step.index, step.step.label));
                format!("failed: {why}")
            }
            StepOutcome::Interrupted => {
                record.partial = true;
                record.why_partial = Some(format!(
                    "interrupted (Ctrl-C) during step {} ({})",
                    step.index, step.step.label
                ));
                "interrupted".to_string()
            }
        };
        say(
            &bar,
            &format!(
                "step {}/{count} {}: {}",
                i + 1,
                step.step.label,
                record.steps[i].status
            ),
        );
        if record.steps[i].status == "ok" {
            skip_past_the_knee(&scenario, &dir, &mut record.steps, i);
        }
        save(&dir.join("run.json"), &record)?;
        if record.steps[i].status == "interrupted" {
            break;
        }
        if i + 1 < count && !step.step.cooldown.is_zero() {
            bar.set_message(format!("cool-down after step {}/{count}", i + 1));
            tokio::select! {
                () = tokio::time::sleep(step.step.cooldown) => {}
                () = &mut signal => {
                    record.partial = true;
                    record.why_partial = Some(format!("interrupted (Ctrl-C) after step {}", step.index));
                    break;
                }
            }
        }
    }
    bar.finish_and_clear();
    record.finished = Some(utc_now().1);
    crate::env::finish(&mut env, &record);
    std::fs::write(dir.join("env.json"), serde_json::to_string_pretty(&env)?)?;
    save(&dir.join("run.json"), &record)?;
    crate::report::render(&dir)?;
    println!(
        "{}report: {}",
        if record.partial {
            "partial (see its first line) "
        } else {
            ""
        },
        dir.join("report.html").display()
    );
    println!("        {}", dir.join("report.md").display());
    Ok(if record.partial {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// With `knee_p99_ms` (a search for where a system stops keeping up): once step `i` has not kept
/// up — no system that ran in it did — the later steps that differ from it only in a higher rate
/// are skipped, since they would only confirm it and take the time of a run each.
fn skip_past_the_knee(scenario: &Scenario, dir: &Path, steps: &mut [StepRun], i: usize) {
    let Some(bound) = scenario.knee_p99_ms else {
        return;
    };
    let Ok(data) = crate::report::StepData::read(dir, &steps[i]) else {
        return;
    };
    let ran: Vec<usize> = (0..2).filter(|n| data.reports[*n].is_some()).collect();
    let failed = !ran.is_empty()
        && ran
            .iter()
            .all(|n| crate::report::capacity::kept_up(&data, *n, bound) != Some(true));
    if !failed {
        return;
    }
    let this = steps[i].step.clone();
    for later in steps.iter_mut().skip(i + 1) {
        let mut same = later.step.clone();
        (same.label, same.rate) = (this.label.clone(), this.rate);
        if same == this && later.step.rate > this.rate {
            later.status = format!(
                "skipped: past the knee (step {} at {}/s did not keep up)",
                data.run.index, this.rate
            );
        }
    }
}

/// Every step run, in order, each repeat its own.
fn plan(scenario: &Scenario, dir: &Path) -> anyhow::Result<Vec<StepRun>> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let mut runs = Vec::new();
    for step in &scenario.steps {
        for repeat in 1..=step.repeat {
            let mut run = StepRun {
                index: runs.len() + 1,
                step: step.clone(),
                repeat,
                file: String::new(),
                status: "not run".into(),
                command: Vec::new(),
            };
            let stem = run.stem();
            run.file = format!("steps/{stem}.json");
            let mut command = vec![
                exe.display().to_string(),
                "up".into(),
                "--for".into(),
                format!("{}ms", step.duration.as_millis()),
                "--warmup".into(),
                format!("{}ms", step.warmup.as_millis()),
                "--rate".into(),
                step.rate.to_string(),
                "--agents".into(),
                step.agents.to_string(),
                "--protocol".into(),
                step.protocol.as_str().into(),
                "--batch".into(),
                step.batch.to_string(),
                "--system1-workers".into(),
                step.workers.to_string(),
                "--redis-fsync".into(),
                step.redis_fsync.as_str().into(),
                "--json".into(),
                dir.join(&run.file).display().to_string(),
                "--logs".into(),
                dir.join("logs").join(&stem).display().to_string(),
            ];
            if let Some(only) = step.only.only() {
                command.extend(["--only".to_string(), only.to_string()]);
            }
            if step.system1_processes {
                command.push("--system1-processes".into());
            }
            for fault in &step.faults {
                command.push(format!("--fault={fault}"));
            }
            // Free ports are added when the step starts (see `run_step`); the record keeps them.
            run.command = command;
            runs.push(run);
        }
    }
    Ok(runs)
}

fn total(scenario: &Scenario) -> Duration {
    scenario.planned() + OVERHEAD_GUESS * scenario.steps.iter().map(|s| s.repeat as u32).sum::<u32>()
}

enum StepOutcome {
    Ok,
    Failed(String),
    Interrupted,
}

/// Free ports for one `lab up`: System 1's four, System 2's, the dashboard's (so that two runs, or a
/// run beside a `lab up`, never meet on a default port).
fn port_flags() -> anyhow::Result<Vec<String>> {
    let flags = [
        "--system1-http-port",
        "--system1-http2-port",
        "--system1-ws-port",
        "--system1-ops-port",
        "--system2-port",
        "--dashboard-port",
    ];
    // All bound at once, so that they differ; released just before `lab up` binds them.
    let listeners: Vec<std::net::TcpListener> = flags
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot find free ports")?;
    let mut out = Vec::new();
    for (flag, l) in flags.iter().zip(&listeners) {
        out.push(format!("{flag}={}", l.local_addr()?.port()));
    }
    Ok(out)
}

async fn run_step(
    step: &StepRun,
    command: &mut Vec<String>,
    dir: &Path,
    bar: &ProgressBar,
    (n, count): (usize, usize),
    left: Duration,
    signal: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> StepOutcome {
    let ports = match port_flags() {
        Ok(p) => p,
        Err(e) => return StepOutcome::Failed(format!("{e:#}")),
    };
    command.extend(ports);
    let log_path = dir.join("logs").join(format!("{}.out", step.stem()));
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env_remove("REDIS_URL")
        .env_remove("LAB_BASE_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return StepOutcome::Failed(format!("cannot start lab up: {e}")),
    };
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let (sending_tx, sending_rx) = tokio::sync::watch::channel(None::<Instant>);
    let log = tokio::fs::File::create(&log_path).await.ok();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    // lab up's own lines, kept in the step's log; "started agents-system2" means sending starts.
    let copy = tokio::spawn(async move {
        let mut log = log;
        let mut lines = BufReader::new(out).lines();
        let mut errs = BufReader::new(err).lines();
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            let line = tokio::select! {
                l = lines.next_line(), if !out_done => l,
                l = errs.next_line(), if !err_done => l,
            };
            match line {
                Ok(Some(line)) => {
                    if line.contains("started agents-system2") {
                        let _ = sending_tx.send(Some(Instant::now()));
                    }
                    if let Some(log) = &mut log {
                        let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                    }
                }
                _ => {
                    // Whichever ended: stop reading it.
                    if out_done {
                        err_done = true;
                    } else {
                        out_done = true;
                    }
                }
            }
        }
    });
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = tick.tick() => {
                let phase = match *sending_rx.borrow() {
                    None => "starting Redis and both systems".to_string(),
                    Some(t) => {
                        let e = t.elapsed();
                        if e < step.step.warmup {
                            format!("warm-up {:.0}/{:.0} s", e.as_secs_f64(), step.step.warmup.as_secs_f64())
                        } else if e < step.step.warmup + step.step.duration {
                            format!("steady {:.0}/{:.0} s", (e - step.step.warmup).as_secs_f64(), step.step.duration.as_secs_f64())
                        } else {
                            "draining and stopping".to_string()
                        }
                    }
                };
                let left = left.saturating_sub(started.elapsed());
                bar.set_position(bar.length().unwrap_or(0).saturating_sub(left.as_secs()));
                bar.set_message(format!(
                    "step {n}/{count} {} · {phase} · about {} s left",
                    step.step.label,
                    left.as_secs()
                ));
            }
            () = &mut *signal => {
                bar.set_message("interrupted: stopping every process");
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                let _ = child.wait().await;
                let _ = copy.await;
                return StepOutcome::Interrupted;
            }
        }
    };
    let _ = copy.await;
    match status {
        Ok(s) if s.success() => StepOutcome::Ok,
        Ok(s) => StepOutcome::Failed(format!(
            "lab up exited with {s}; its output is in logs/{}.out",
            step.stem()
        )),
        Err(e) => StepOutcome::Failed(e.to_string()),
    }
}

fn progress(scenario: &Scenario) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total(scenario).as_secs()), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A line above the bar, or on stderr when there is no terminal to draw it on.
fn say(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn save(path: &Path, record: &RunRecord) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(record)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Now, UTC: `(20261202T215300Z, 2026-12-02T21:53:00Z)`.
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = civil(secs);
    (
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
    )
}

/// Seconds since 1970 to a UTC date and time (Howard Hinnant's days-to-civil algorithm).
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), (1970, 1, 1, 0, 0, 0));
        // 2026-12-02T21:53:00Z
        assert_eq!(super::civil(1_796_248_380), (2026, 12, 2, 21, 53, 0));
    }
}
