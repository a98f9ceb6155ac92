//! The agents' command line: env vars (the original's FAKE_* names), flags winning, every invalid
//! value refused with the flag named, and the `merge` and `sink` subcommands end to end.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const VARS: [&str; 12] = [
    "FAKE_SERVER_COUNT",
    "FAKE_SERVER_INTERVAL_MS",
    "FAKE_SPIKE_PROBABILITY",
    "FAKE_SPIKE_MULTIPLIER",
    "FAKE_JITTER_MS",
    "AGENTS_TARGET",
    "AGENTS_RATE",
    "AGENTS_DURATION",
    "AGENTS_PROTOCOL",
    "AGENTS_BATCH",
    "AGENTS_DASHBOARD",
    "AGENTS_JSON",
];

fn agents(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agents"));
    for var in VARS {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_originals_env_vars_are_honoured_and_flags_win() {
    let env = [
        ("FAKE_SERVER_COUNT", "12"),
        ("FAKE_SPIKE_PROBABILITY", "0.5"),
        ("FAKE_JITTER_MS", "7"),
        ("AGENTS_RATE", "300"),
    ];
    let out = text(&agents(&["--print-config"], &env).stdout);
    for expected in [
        "agents: 12",
        "spike_probability: 0.5",
        "jitter_ms: 7",
        "rate: Some(\n        300.0",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
    let out = text(&agents(&["--print-config", "--agents", "3"], &env).stdout);
    assert!(out.contains("agents: 3"), "{out}");
}

#[test]
fn help_teaches_every_flag_and_its_env_var() {
    let help = text(&agents(&["--help"], &[]).stdout);
    for needle in [
        "--target",
        "--protocol",
        "--agents",
        "--rate",
        "--interval-ms",
        "--batch",
        "--connections",
        "--duration",
        "--warmup",
        "--cooldown",
        "--dashboard",
        "--wire",
        "--seed",
        "--spike-probability",
        "--spike-multiplier",
        "--jitter-ms",
        "--json",
        "FAKE_SERVER_COUNT",
        "FAKE_SERVER_INTERVAL_MS",
        "FAKE_SPIKE_PROBABILITY",
        "coordinated",
        "merge",
        "sink",
    ] {
        assert!(help.contains(needle), "--help does not mention {needle}:\n{help}");
    }
}

#[test]
fn invalid_values_are_refused_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--rate", "0"], "--rate"),
        (&["--rate", "fast"], "--rate"),
        (&["--duration", "5x"], "unknown unit"),
        (&["--duration=-3s"], "--duration"),
        (&["--spike-probability", "2"], "between 0 and 1"),
        (&["--spike-multiplier", "0.5"], "between 1 and 100"),
        (&["--batch", "0"], "--batch"),
        (&["--batch", "1001"], "--batch"),
        (&["--connections", "0"], "--connections"),
        (&["--protocol", "smtp"], "--protocol"),
        (&["--wire", "v2"], "--wire"),
        (&["--id-prefix", "bad id "], "--id-prefix"),
        (&["--seed=-1"], "--seed"),
    ];
    for (args, fragment) in cases {
        let out = agents(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(fragment),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn contradictory_settings_are_refused_before_anything_runs() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--target", "http://h:4000", "--protocol", "ws"],
            "does not fit --protocol",
        ),
        (
            &["--target", "ws://h:4100", "--protocol", "http2"],
            "does not fit --protocol",
        ),
        (&["--wire", "original", "--batch", "5"], "no batches"),
        (
            &["--agents", "2", "--connections", "3"],
            "each connection carries at least one agent",
        ),
        (&["--dashboard", "http://h:4002"], "must be a ws:// URL"),
        (&["--jitter-ms", "5", "--batch", "10"], "use --batch 1"),
    ];
    for (args, fragment) in cases {
        let out = agents(args, &[]);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(fragment),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn an_unreachable_target_is_reported_not_hidden() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("ws://127.0.0.1:{port}");
    let out = agents(
        &[
            "--target",
            &target,
            "--rate",
            "10",
            "--duration",
            "1s",
            "--cooldown",
            "0s",
        ],
        &[],
    );
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("connect"), "{stdout}");
    assert!(
        text(&out.stderr).contains("nothing was acknowledged"),
        "{}",
        text(&out.stderr)
    );
}

struct Sink(Child);

impl Sink {
    /// `agents sink` on a free port, once it accepts connections.
    fn start() -> (Sink, u16) {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = Sink(
            Command::new(env!("CARGO_BIN_EXE_agents"))
                .args(["sink", "--port", &port.to_string()])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        (sink, port)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn reports_of_two_processes_merge_into_one() {
    let (_sink, port) = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, merged) = (
        dir.path().join("a.json"),
        dir.path().join("b.json"),
        dir.path().join("m.json"),
    );
    for (file, protocol, target) in [
        (&a, "ws", format!("ws://127.0.0.1:{port}")),
        (&b, "http1", format!("http://127.0.0.1:{port}")),
    ] {
        let out = agents(
            &[
                "--target",
                &target,
                "--protocol",
                protocol,
                "--rate",
                "200",
                "--duration",
                "1s",
                "--json",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("sent 200, acked 200"),
            "{}",
            text(&out.stdout)
        );
    }
    let out = agents(
        &[
            "merge",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--json",
            merged.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    assert_eq!(report["sent"], 400);
    assert_eq!(report["acked"], 400);
    assert_eq!(report["intended_rate"], 400.0);
    assert_eq!(report["ack_latency_ms"]["count"], 400);
    assert_eq!(report["run"]["processes"], 2);

    let missing = agents(&["merge", dir.path().join("nope.json").to_str().unwrap()], &[]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("cannot read"),
        "{}",
        text(&missing.stderr)
    );
    std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
    let bad = agents(&["merge", dir.path().join("bad.json").to_str().unwrap()], &[]);
    assert!(
        text(&bad.stderr).contains("is not an agents report"),
        "{}",
        text(&bad.stderr)
    );
}

/// `--live-json`: one line per second on stdout, each that second's figures, beside the summary.
#[test]
fn live_json_prints_each_seconds_figures() {
    let (_sink, port) = Sink::start();
    let out = agents(
        &[
            "--target",
            &format!("ws://127.0.0.1:{port}"),
            "--rate",
            "300",
            "--duration",
            "3s",
            "--live-json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let live: Vec<agents::report::LiveSecond> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    // A line per whole second of the run (the last one may end with the run, before its tick).
    assert!(live.len() >= 2, "{stdout}");
    assert!(live.iter().all(|s| s.second.intended == 300), "{stdout}");
    for (t, s) in live.iter().enumerate() {
        assert_eq!(s.second.t, t as u64, "the lines are in order, one per second");
        assert_eq!(s.overdue, None, "no dashboard, so no loss is known: {s:?}");
        assert_eq!(s.errors, 0);
    }
    let acked: u64 = live.iter().map(|s| s.second.acked).sum();
    assert!(acked >= 600, "{stdout}");
    let counted: u64 = live.iter().map(|s| s.ack_latency_ms.count).sum();
    // Each second's histogram holds that second's acks only (give or take an ack that lands
    // between reading the counter and reading the histogram).
    assert!(counted.abs_diff(acked) <= 5, "{counted} timed vs {acked} acked");
    assert!(
        stdout.contains("sent 900, acked 900"),
        "the summary follows: {stdout}"
    );
}
