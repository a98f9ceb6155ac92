//! `lab run` for real: the `lab` binary runs the `quick` scenario end to end (each step a real
//! `lab up` with a private redis-server, both systems and their agents, on free ports), with short
//! steps set by `--set` so that the test stays quick, and its report is checked for content. And
//! Ctrl-C in the middle of a step stops everything and leaves a report marked partial.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn lab_run(tmp: &Path, out: &Path, sets: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command.args(["run", "quick", "--out"]).arg(out);
    for set in sets {
        command.args(["--set", set]);
    }
    command
        .env("TMPDIR", tmp)
        .env_remove("REDIS_URL")
        .env_remove("LAB_BASE_PORT");
    command
}

/// `lab run FILE --out OUT` with its temporary folders in `temp`; asserts it succeeded and returns
/// what it printed.
fn run_file(scenario: &Path, out: &Path, temp: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .env("TMPDIR", temp)
        .env_remove("REDIS_URL")
        .env_remove("LAB_BASE_PORT")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

fn assert_nothing_left(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind in the temporary folder: {left:?}");
}

#[test]
fn quick_runs_both_systems_and_writes_a_full_report() {
    let tmp = tempfile::tempdir().unwrap();
    let temp = tmp.path().join("temp");
    std::fs::create_dir(&temp).unwrap();
    let out = tmp.path().join("report");
    let output = lab_run(
        &temp,
        &out,
        &[
            "duration=2s",
            "warmup=500ms",
            "cooldown=0s",
            "workers=3",
            "redis_fsync=always",
        ],
    )
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("report.html"), "{text}");
    assert_nothing_left(&temp);

    // Both systems measured at both rates, nothing lost on an unhurried run.
    let csv = std::fs::read_to_string(out.join("figures.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for (row, (step, system)) in rows.iter().zip([
        ("\"200/s\"", "system1"),
        ("\"200/s\"", "system2"),
        ("\"1000/s\"", "system1"),
        ("\"1000/s\"", "system2"),
    ]) {
        assert_eq!((row[0], row[2]), (step, system), "{csv}");
        let achieved: f64 = row[4].parse().unwrap();
        assert!(achieved > 0.0, "{csv}");
        assert!(
            !row[14].is_empty() && row[14].parse::<f64>().unwrap() > 0.0,
            "e2e p50: {csv}"
        );
        assert_eq!(row[7], "0", "lost: {csv}");
    }

    // `lab up --warmup`: the warm-up is sent (200/s for 2.5 s) but not measured (2 s).
    let step: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("steps/01-200-s.json")).unwrap()).unwrap();
    for system in ["system1", "system2"] {
        let sent = step[system]["sent"].as_u64().unwrap();
        assert!((450..=550).contains(&sent), "{system} sent {sent}, not 500");
        let measured = step[system]["run"]["measured_secs"].as_f64().unwrap();
        assert!(measured < 2.4, "{system} measured {measured} s, not 2");
    }

    // `lab up --system1-workers`, from the scenario's `workers`.
    let log = std::fs::read_to_string(out.join("logs/01-200-s/system1.log")).unwrap();
    assert_eq!(log.matches("worker started").count(), 3, "{log}");

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["| Transport |", "| Best use |", "System 1", "System 2"] {
        assert!(md.contains(needle), "{needle}: {md}");
    }
    assert!(!md.contains("n/a"), "the comparison table is filled: {md}");
    assert!(!md.contains("PARTIAL"), "{md}");
    for file in [
        "report.html",
        "latency.svg",
        "throughput.svg",
        "spectrum-01-200-s.svg",
        "spectrum-02-1000-s.svg",
        "steps/01-200-s.json",
        "steps/02-1000-s-system2-e2e.hgrm",
        "env.json",
        "run.json",
    ] {
        let len = std::fs::metadata(out.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .len();
        assert!(len > 0, "{file} is empty");
    }
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("env.json")).unwrap()).unwrap();
    for key in [
        "cpu_model",
        "cores",
        "memory",
        "kernel",
        "redis_server",
        "rustc",
        "git_commit",
        "git_dirty",
        "load_average_before",
        "load_average_after",
        "step_commands",
    ] {
        assert!(!env[key].is_null(), "env.json lacks {key}");
    }
}

#[test]
fn ctrl_c_stops_every_process_and_writes_a_partial_report() {
    let tmp = tempfile::tempdir().unwrap();
    let temp = tmp.path().join("temp");
    std::fs::create_dir(&temp).unwrap();
    let out = tmp.path().join("report");
    let mut child = lab_run(&temp, &out, &["duration=60s", "warmup=0s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first step's agents are sending.
    let log = out.join("logs/01-200-s.out");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started agents-system2")) {
        assert!(Instant::now() < deadline, "the first step never started sending");
        assert!(child.try_wait().unwrap().is_none(), "lab run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2)); // a little to measure
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "lab run did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a partial run is not a success");
    assert_nothing_left(&temp);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("PARTIAL REPORT: interrupted"), "{md}");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["partial"], true);
    assert_eq!(run["steps"][0]["status"], "interrupted");
    assert_eq!(run["steps"][1]["status"], "not run");
    // What the first step measured before Ctrl-C is in the report, marked partial by the agents.
    let step: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("steps/01-200-s.json")).unwrap()).unwrap();
    assert_eq!(step["system2"]["partial"], true, "{step}");
    assert!(step["system2"]["sent"].as_u64().unwrap() > 0);
}

/// A scenario of one short step that kills a System 1 worker, then Redis (AOF always), then System
/// 2, all in one run: the report counts each system's loss by seq, says why, and plots the step's
/// timeline with the faults marked.
#[test]
fn a_fault_step_reports_loss_recovery_and_a_timeline_through_the_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let temp = tmp.path().join("temp");
    std::fs::create_dir(&temp).unwrap();
    let out = tmp.path().join("report");
    let scenario = tmp.path().join("f.toml");
    std::fs::write(
        &scenario,
        r#"name = "f"
description = "faults, short"
[[step]]
label = "three faults"
rate = 200
duration = "9s"
warmup = "0s"
cooldown = "0s"
redis_fsync = "always"
faults = ["kill-worker@2s", "restart-redis@3500ms:1s", "restart-system2@5s:1s"]
"#,
    )
    .unwrap();
    run_file(&scenario, &out, &temp);
    assert_nothing_left(&temp);

    // The raw data: what the supervisor did, and both timelines.
    let step: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("steps/01-three-faults.json")).unwrap())
            .unwrap();
    let faults = step["faults"].as_array().unwrap();
    let kinds: Vec<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["kill-worker", "restart-redis", "restart-system2"],
        "{step:#}"
    );
    assert!(
        faults[0]["what"][0]
            .as_str()
            .unwrap()
            .starts_with("kill -9 system1-worker-1"),
        "{step:#}"
    );
    assert!(
        faults[0]["back_s"].is_null(),
        "a killed worker stays dead: {step:#}"
    );
    for f in &faults[1..] {
        let (at, back) = (f["at_s"].as_f64().unwrap(), f["back_s"].as_f64().unwrap());
        assert!(back >= at + 1.0, "back {back} s, at {at} s: {step:#}");
    }
    for key in ["system1", "system2"] {
        let live = step["live"][key].as_array().unwrap();
        assert!(live.len() >= 8, "{key}: {} seconds of timeline", live.len());
    }
    // System 1 acknowledged only what Redis had appended (AOF always) and lost none of it, through
    // a dead worker (another claimed its entries) and a Redis restart.
    assert_eq!(step["system1"]["lost"], 0, "{:#}", step["system1"]);
    assert_eq!(step["system1"]["duplicates"], 0, "{:#}", step["system1"]);

    // The report: the faults table with a row per fault and system, why, and the timeline plot.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Faults"), "{md}");
    for fault in ["kill-worker@2s", "restart-redis@3.5s:1s", "restart-system2@5s:1s"] {
        assert_eq!(md.matches(&format!("| {fault} |")).count(), 2, "{fault}: {md}");
    }
    assert!(
        md.contains("System 1 lost nothing: the dead worker's unacknowledged entries"),
        "{md}"
    );
    assert!(md.contains("System 1 lost nothing it had acknowledged"), "{md}");
    let svg = std::fs::read_to_string(out.join("timeline-01-three-faults.svg")).unwrap();
    assert_eq!(
        svg.matches(r#"class="marker""#).count(),
        5,
        "3 faults, 2 of them back: {svg}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<h2>Faults</h2>") && html.contains("Through the fault"),
        "{html}"
    );
}

/// A knee search on System 2 alone with a bound no system can meet: the first rate does not keep
/// up, so the higher one is skipped (not run, and the run is not partial), and the report says so,
/// with the CPU each process used.
#[test]
fn a_knee_search_stops_its_ladder_at_the_first_rate_that_fails_and_names_the_busiest_process() {
    let tmp = tempfile::tempdir().unwrap();
    let temp = tmp.path().join("temp");
    std::fs::create_dir(&temp).unwrap();
    let out = tmp.path().join("report");
    let scenario = tmp.path().join("k.toml");
    std::fs::write(
        &scenario,
        r#"name = "k"
description = "a knee no one reaches"
knee_p99_ms = 0.000001
[defaults]
duration = "2s"
warmup = "0s"
cooldown = "0s"
only = "system2"
[[step]]
rate = 100
[[step]]
rate = 200
"#,
    )
    .unwrap();
    let text = run_file(&scenario, &out, &temp);
    assert!(
        text.contains("skipped: past the knee (step 1 at 100/s did not keep up)"),
        "{text}"
    );
    assert_nothing_left(&temp);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["partial"], false, "{run:#}");
    assert_eq!(run["steps"][0]["status"], "ok", "{run:#}");
    // System 2 alone: no System 1 report, and its lab up was told so.
    let step: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("steps/01-100-s-http1-b1.json")).unwrap())
            .unwrap();
    assert!(
        step["system1"].is_null() && !step["system2"].is_null(),
        "{step:#}"
    );
    assert!(
        run["steps"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "system2"),
        "{run:#}"
    );
    let cpu: Vec<&str> = step["cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        cpu.contains(&"system2") && cpu.contains(&"agents-system2"),
        "{cpu:?}"
    );
    assert!(
        !cpu.iter().any(|c| c.starts_with("system1") || *c == "redis"),
        "{cpu:?}"
    );

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Where each system stopped keeping up"), "{md}");
    let row = md
        .lines()
        .find(|l| l.starts_with("| System 2 | WebSocket"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        row.contains("— (not even the lowest rate)") && row.contains("| 100/s |"),
        "{row}"
    );
    assert!(row.contains("e2e p99") && row.contains("cores"), "{row}");
    assert!(
        md.contains("## CPU by process") && md.contains("agents-system2 "),
        "{md}"
    );
}
