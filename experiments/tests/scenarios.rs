//! Scenario files: every built-in one parses, and a mistake is named by file, line and field
//! before anything starts (also through the real `lab run`).

use std::process::Command;
use std::time::Duration;

use experiments::scenario::{BUILT_IN, Protocol, Settings, find, parse, parse_sets};

fn none() -> Settings {
    Settings::default()
}

#[test]
fn every_built_in_scenario_parses_and_quick_is_short() {
    for (name, text) in BUILT_IN {
        let s = parse(name, text, &none()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&s.name, name);
        assert!(!s.steps.is_empty() && !s.description.is_empty());
    }
    let (file, text) = find("quick").unwrap();
    let quick = parse(&file, &text, &none()).unwrap();
    assert_eq!(quick.steps.len(), 2);
    assert!(quick.planned() < Duration::from_secs(45), "{:?}", quick.planned());
    let plan = parse("o", BUILT_IN[1].1, &none()).unwrap();
    let rates: Vec<f64> = plan.steps.iter().map(|s| s.rate).collect();
    assert_eq!(rates, [100.0, 1000.0, 5000.0, 10000.0]);
}

#[test]
fn defaults_steps_and_set_override_in_that_order() {
    let text = r#"
name = "t"
description = "d"
[defaults]
duration = "10s"
batch = 5
[[step]]
rate = 100
[[step]]
rate = 200
batch = 2
protocol = "http2"
"#;
    let s = parse("t.toml", text, &none()).unwrap();
    assert_eq!(s.steps[0].duration, Duration::from_secs(10));
    assert_eq!(s.steps[0].batch, 5);
    assert_eq!(s.steps[1].batch, 2);
    assert_eq!(s.steps[1].protocol, Protocol::Http2);
    assert_eq!(s.steps[0].label, "100/s http1 b5");
    let sets = parse_sets(&["duration=2s".into(), "batch=1".into()]).unwrap();
    let s = parse("t.toml", text, &sets).unwrap();
    assert!(
        s.steps
            .iter()
            .all(|s| s.duration == Duration::from_secs(2) && s.batch == 1)
    );
}

#[test]
fn an_unknown_field_is_named_with_its_file_and_line() {
    let text = "name = \"t\"\ndescription = \"d\"\n[[step]]\nrate = 100\nrat = 5\n";
    let e = parse("mine.toml", text, &none()).unwrap_err();
    assert_eq!(e.file, "mine.toml");
    assert_eq!(e.at.map(|a| a.0), Some(5), "{e}");
    assert_eq!(e.field.as_deref(), Some("rat"), "{e}");
    let shown = e.to_string();
    assert!(shown.starts_with("mine.toml:5:"), "{shown}");
    assert!(shown.contains("unknown field"), "{shown}");
}

#[test]
fn a_bad_value_is_named_with_its_line_and_field() {
    let cases = [
        ("duration = \"ten seconds\"", "duration"),
        ("rate = 0", "rate"),
        ("batch = 5000", "batch"),
        ("protocol = \"http3\"", "protocol"),
        ("agents = -1", "agents"),
    ];
    for (line, field) in cases {
        let text = format!(
            "name = \"t\"\ndescription = \"d\"\n[[step]]\n{}\n",
            if field == "rate" {
                line.to_string()
            } else {
                format!("rate = 100\n{line}")
            }
        );
        let e = parse("f.toml", &text, &none()).unwrap_err();
        let want_line = if field == "rate" { 4 } else { 5 };
        assert_eq!(e.at.map(|a| a.0), Some(want_line), "{line}: {e}");
        assert_eq!(e.field.as_deref(), Some(field), "{line}: {e}");
    }
}

#[test]
fn a_missing_rate_and_an_empty_scenario_are_refused() {
    let e = parse(
        "f.toml",
        "name = \"t\"\ndescription = \"d\"\n[[step]]\nbatch = 2\n",
        &none(),
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("rate"), "{e}");
    let e = parse(
        "f.toml",
        "name = \"t\"\ndescription = \"d\"\nstep = []\n",
        &none(),
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("step"), "{e}");
    let e = parse(
        "f.toml",
        "name = \"t\"\ndescription = \"d\"\n[[step]]\nrate = 1\nlabel = \"a\"\n[[step]]\nrate = 2\nlabel = \"a\"\n",
        &none(),
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("label"), "{e}");
}

#[test]
fn set_names_a_wrong_key_or_value() {
    let e = parse_sets(&["durration=5s".into()]).unwrap_err();
    assert_eq!(e.file, "--set");
    assert_eq!(e.field.as_deref(), Some("durration"), "{e}");
    let e = parse_sets(&["duration".into()]).unwrap_err();
    assert!(e.message.contains("key=value"), "{e}");
    let e = parse_sets(&["repeat=0".into()]).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("repeat"), "{e}");
}

#[test]
fn lab_run_names_the_mistake_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("broken.toml");
    std::fs::write(
        &file,
        "name = \"b\"\ndescription = \"d\"\n[[step]]\nrate = 100\nwarmup = 3\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5:", file.display())) && err.contains("field `warmup`"),
        "{err}"
    );
    assert!(
        !out_dir.exists(),
        "a report folder was created for a broken scenario"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["run", "no-such-scenario"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("quick"), "{err}");
}

#[test]
fn lab_list_shows_every_built_in_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("list")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for (name, _) in BUILT_IN {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name}: {text}");
    }
    assert!(!text.contains("broken"), "{text}");
}

#[test]
fn run_help_teaches_the_scenarios_the_report_and_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "lab list",
        "report.html",
        "--set",
        "partial",
        "docs/experiments.md",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

#[test]
fn workers_and_redis_fsync_are_settings_of_system1() {
    use experiments::scenario::Fsync;
    let (file, text) = find("durability").unwrap();
    let s = parse(&file, &text, &none()).unwrap();
    let fsyncs: Vec<Fsync> = s.steps.iter().map(|s| s.redis_fsync).collect();
    assert_eq!(
        fsyncs,
        [
            Fsync::Always,
            Fsync::Everysec,
            Fsync::Off,
            Fsync::Always,
            Fsync::Everysec,
            Fsync::Off
        ]
    );
    let killed: Vec<&[String]> = s.steps.iter().map(|s| s.faults.as_slice()).collect();
    assert!(killed[..3].iter().all(|f| f.is_empty()), "{killed:?}");
    assert!(
        killed[3..].iter().all(|f| f == &["restart-redis@10s:2s"]),
        "{killed:?}"
    );
    let (file, text) = find("scaling").unwrap();
    let s = parse(&file, &text, &none()).unwrap();
    let workers: Vec<u64> = s.steps.iter().map(|s| s.workers).collect();
    assert_eq!(workers, [1, 2, 4]);
    let e = parse_sets(&["redis_fsync=sometimes".into()]).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("redis_fsync"), "{e}");
}

#[test]
fn faults_are_one_or_a_list_each_checked_where_it_is_written() {
    let (file, text) = find("faults").unwrap();
    let s = parse(&file, &text, &none()).unwrap();
    assert!(s.steps.iter().all(|s| s.system1_processes && s.faults.len() == 1));
    let text = "name = \"f\"\ndescription = \"d\"\n[[step]]\nrate = 10\nfaults = [\"kill-worker@2s\", \"restart-system2@3s:1s\"]\n";
    let s = parse("f.toml", text, &none()).unwrap();
    assert_eq!(s.steps[0].faults, ["kill-worker@2s", "restart-system2@3s:1s"]);
    // A fault that is not one: the file, its line, the field, and the kinds there are.
    let text = "name = \"f\"\ndescription = \"d\"\n[[step]]\nrate = 10\nfaults = [\"kill-worker@2s\", \"reboot@3s\"]\n";
    let e = parse("f.toml", text, &none()).unwrap_err();
    assert_eq!(e.at.map(|a| a.0), Some(5), "{e}");
    assert_eq!(e.field.as_deref(), Some("faults"), "{e}");
    assert!(e.message.contains("restart-redis"), "{e}");
    let e = parse(
        "f.toml",
        &text.replace("[\"kill-worker@2s\", \"reboot@3s\"]", "3"),
        &none(),
    )
    .unwrap_err();
    assert!(e.message.contains("a fault"), "{e}");
    // And through --set, one fault for every step.
    let sets = parse_sets(&["faults=restart-redis@4s".into()]).unwrap();
    assert_eq!(
        sets.faults.as_deref(),
        Some(&["restart-redis@4s".to_string()][..])
    );
}

#[test]
fn saturation_runs_each_system_alone_up_a_ladder_with_a_bound() {
    use experiments::scenario::Systems;
    let (file, text) = find("saturation").unwrap();
    let s = parse(&file, &text, &none()).unwrap();
    assert_eq!(s.knee_p99_ms, Some(100.0));
    assert!(s.steps.iter().all(|s| s.only != Systems::Both && s.agents == 64));
    assert!(s.steps.iter().any(|s| s.only == Systems::System2));
    // Mistakes are named: an unknown system, a bound that is not one.
    let text = "name = \"s\"\ndescription = \"d\"\n[[step]]\nrate = 10\nonly = \"system3\"\n";
    let e = parse("s.toml", text, &none()).unwrap_err();
    assert_eq!(
        (e.at.map(|a| a.0), e.field.as_deref()),
        (Some(5), Some("only")),
        "{e}"
    );
    let text = "name = \"s\"\ndescription = \"d\"\nknee_p99_ms = -1\n[[step]]\nrate = 10\n";
    let e = parse("s.toml", text, &none()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("knee_p99_ms"), "{e}");
}
