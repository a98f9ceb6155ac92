//! `env.json`: what a reader needs to judge a report's absolute figures — the machine, the
//! versions, the exact code (git commit, dirty or not), the commands, and how busy the machine was
//! before and after (load average: other work on the machine shows up as latency).

use serde_json::{Value, json};

use crate::report::RunRecord;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The environment before the run.
pub fn collect() -> Value {
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let memory = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("unknown".to_string(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let redis = crate::up::redis::find_redis_server()
        .and_then(|p| output(&p.display().to_string(), &["--version"]))
        .unwrap_or_else(|| "not found".into());
    let repo = env!("CARGO_MANIFEST_DIR");
    let commit = output("git", &["-C", repo, "rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = output("git", &["-C", repo, "status", "--porcelain"]).map(|s| !s.is_empty());
    json!({
        "cpu_model": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory": memory,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "redis_server": redis,
        "rustc": output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        "lab_version": env!("CARGO_PKG_VERSION"),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "git_commit": commit,
        "git_dirty": dirty,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "load_average_before": read("/proc/loadavg").trim(),
    })
}

/// Adds what is known after the run: the load average, and each step's exact command.
pub fn finish(env: &mut Value, record: &RunRecord) {
    env["load_average_after"] = json!(read("/proc/loadavg").trim());
    env["step_commands"] = json!(
        record
            .steps
            .iter()
            .map(|s| s.command.join(" "))
            .collect::<Vec<_>>()
    );
}
