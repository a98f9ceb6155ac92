//! One child process of the supervisor: how it is started, watched, read and stopped.
//!
//! Three rules keep the lab from leaving processes behind:
//! - each child runs in its own process group, so the terminal's Ctrl-C reaches only the supervisor,
//!   which then stops the children in order (agents first, so that they can write their reports);
//! - a child is stopped with SIGTERM, and SIGKILLed if it has not exited within a bound;
//! - the lab's own services (`lab child …`) also exit when their stdin closes, which is what happens
//!   when the supervisor itself is killed and cannot stop them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use lab_core::report::LiveSecond;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::watch;

/// The most live seconds a [`Child`] keeps (a day's worth); later ones are shown live but not kept.
pub const MAX_HISTORY: usize = 86_400;

/// How long a child has to exit after SIGTERM before it is SIGKILLed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to run: a program and its arguments.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The name the supervisor reports it by, e.g. `system2`.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Whether its stdout carries the agents' `--live-json` lines.
    pub live: bool,
}

impl Spec {
    /// One of the lab's own programs, run as `lab child <program> <args>`: the `lab` binary holds
    /// them all, so `cargo lab up` builds one binary and every service is found.
    pub fn lab(name: &str, program: &str, args: Vec<OsString>) -> anyhow::Result<Spec> {
        let lab = std::env::current_exe().context("cannot find the lab binary itself")?;
        let mut all = vec![OsString::from("child"), OsString::from(program)];
        all.extend(args);
        Ok(Spec {
            name: name.to_string(),
            program: lab,
            args: all,
            live: false,
        })
    }
}

/// A running child.
#[derive(Debug)]
pub struct Child {
    /// What it runs.
    pub spec: Spec,
    /// Its process id.
    pub pid: u32,
    process: tokio::process::Child,
    /// Held open for the child's whole life: its closing tells a `lab child` that the supervisor
    /// is gone. The dashboard also reads the agents' figures from it ([`Child::offer_line`]).
    stdin: Option<ChildStdin>,
    /// Its log: stdout and stderr.
    pub log: PathBuf,
    /// The latest `--live-json` line, for agents.
    pub live: Option<watch::Receiver<Option<LiveSecond>>>,
    /// Every `--live-json` line so far (the first [`MAX_HISTORY`]), for agents: the run's
    /// timeline with each second's own latencies, which `lab up --json` records so that a report
    /// can plot latency over time (through a fault, say).
    pub history: Arc<Mutex<Vec<LiveSecond>>>,
    /// When the agents began sending, as their first `--live-json` line tells: second `t` is
    /// printed as it ends, `t + 1` seconds after the start. The clock of `--fault`, so that a fault
    /// falls where the agents' timeline says it does (the process starts, connects and subscribes
    /// first, which takes a second or two).
    pub sending_since: Arc<OnceLock<Instant>>,
    /// Set once it has exited.
    pub status: Option<ExitStatus>,
}

impl Child {
    /// Starts `spec`, its output appended to `<logs>/<name>.log`.
    pub fn spawn(spec: Spec, logs: &Path) -> anyhow::Result<Child> {
        let log = logs.join(format!("{}.log", spec.name.replace(' ', "-")));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot create the log {}", log.display()))?;
        let stderr = file.try_clone()?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .stdin(Stdio::piped())
            // A child's error is read in its log's last lines: the message, not a backtrace.
            .env("RUST_LIB_BACKTRACE", "0")
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        if spec.live {
            command.stdout(Stdio::piped());
        } else {
            command.stdout(file);
        }
        let mut process = command
            .spawn()
            .with_context(|| format!("cannot start {} ({})", spec.name, spec.program.display()))?;
        let pid = process.id().context("a child that just started has no pid")?;
        let history = Arc::new(Mutex::new(Vec::new()));
        let sending_since = Arc::new(OnceLock::new());
        let live = match process.stdout.take() {
            Some(stdout) => {
                let (tx, rx) = watch::channel(None);
                let kept = Kept {
                    history: history.clone(),
                    sending_since: sending_since.clone(),
                };
                tokio::spawn(read_live(stdout, tx, kept, log.clone()));
                Some(rx)
            }
            None => None,
        };
        let stdin = process.stdin.take();
        Ok(Child {
            spec,
            pid,
            process,
            stdin,
            log,
            live,
            history,
            sending_since,
            status: None,
        })
    }

    /// Its exit status if it has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.process.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until it exits.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        match self.process.wait().await {
            Ok(status) => {
                self.status = Some(status);
                status
            }
            // Only if the process could not be waited for at all, which a child of ours can be.
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(0),
        }
    }

    /// `kill -9` of its whole process group: the crash of a fault, with no chance to flush or say
    /// goodbye. The group, because a guarded program (Redis under `lab child guard`) is the child's
    /// own child and would otherwise outlive it. Waits until the child has exited.
    pub async fn crash(&mut self) -> ExitStatus {
        if self.exited().is_none() {
            let group = Pid::from_raw(self.pid as i32);
            if nix::sys::signal::killpg(group, Signal::SIGKILL).is_err() {
                let _ = self.process.start_kill();
            }
        }
        self.wait().await
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`. Says what happened, in words.
    pub async fn stop(&mut self, grace: Duration) -> String {
        if let Some(status) = self.exited() {
            return format!("had already exited ({})", describe(status));
        }
        let asked = Instant::now();
        let pid = Pid::from_raw(self.pid as i32);
        if kill(pid, Signal::SIGTERM).is_err() {
            let status = self.wait().await;
            return format!("had already exited ({})", describe(status));
        }
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => format!(
                "stopped by SIGTERM in {:.1} s ({})",
                asked.elapsed().as_secs_f64(),
                describe(status)
            ),
            Err(_) => {
                let _ = self.process.start_kill();
                let _ = self.wait().await;
                format!(
                    "did not stop within {} s of SIGTERM: killed (SIGKILL)",
                    grace.as_secs()
                )
            }
        }
    }

    /// Writes `line` and a newline to the child's stdin if that can be done at once; `false` if
    /// not (the pipe is full: the child is not reading), and then nothing at all was written.
    ///
    /// Why that holds: a pipe write of at most `PIPE_BUF` (4096) bytes is atomic, whole or not at
    /// all, and the write is polled once, never waited for. So the supervisor never blocks on a
    /// child, and a skipped line never leaves half a line behind.
    pub fn offer_line(&mut self, line: &str) -> bool {
        const PIPE_BUF: usize = 4096;
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        let line = format!("{line}\n");
        if line.len() > PIPE_BUF {
            return false;
        }
        futures_util::FutureExt::now_or_never(stdin.write_all(line.as_bytes()))
            .is_some_and(|written| written.is_ok())
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// The last `lines` lines of a file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An exit status in words: "exit code 1", "killed by SIGKILL".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => "unknown exit".to_string(),
    }
}

/// Reads an agents process's stdout: `--live-json` lines go to `tx`, everything else (its summary)
/// to its log.
/// What [`read_live`] keeps beside the latest second: see [`Child::history`] and
/// [`Child::sending_since`].
struct Kept {
    history: Arc<Mutex<Vec<LiveSecond>>>,
    sending_since: Arc<OnceLock<Instant>>,
}

async fn read_live(
    stdout: tokio::process::ChildStdout,
    tx: watch::Sender<Option<LiveSecond>>,
    kept: Kept,
    log: PathBuf,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut file = tokio::fs::OpenOptions::new().append(true).open(&log).await.ok();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<LiveSecond>(&line) {
            Ok(second) => {
                let _ = kept
                    .sending_since
                    .set(Instant::now() - Duration::from_secs(second.second.t + 1));
                if let Ok(mut history) = kept.history.lock()
                    && history.len() < MAX_HISTORY
                {
                    history.push(second.clone());
                }
                tx.send_replace(Some(second));
            }
            Err(_) => {
                if let Some(file) = &mut file {
                    let _ = file.write_all(format!("{line}\n").as_bytes()).await;
                }
            }
        }
    }
}
