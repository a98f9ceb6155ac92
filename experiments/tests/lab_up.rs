//! `lab up` for real: the `lab` binary starts a private redis-server, both systems and their agents
//! as child processes, on free ports, and every test checks that nothing is left behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab_testkit::free_port;
use serde_json::Value;

/// `lab up` with its temporary folder inside `tmp`, every port free but those `fixed`.
fn lab_up_with(tmp: &Path, fixed: &[(&str, u16)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command.arg("up");
    for flag in [
        "--system1-http-port",
        "--system1-http2-port",
        "--system1-ws-port",
        "--system1-ops-port",
        "--system2-port",
        "--dashboard-port",
    ] {
        let port = match fixed.iter().find(|(f, _)| *f == flag) {
            Some((_, port)) => *port,
            None => free_port().unwrap(),
        };
        command.args([flag, &port.to_string()]);
    }
    command
        .env("TMPDIR", tmp)
        .env_remove("REDIS_URL")
        .env_remove("LAB_BASE_PORT");
    command
}

fn lab_up(tmp: &Path) -> Command {
    lab_up_with(tmp, &[])
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_nothing_left(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind in the temporary folder: {left:?}");
}

fn assert_gone(pid: u32) {
    // A stopped child of the (exited) supervisor is reaped; /proc no longer has it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn it_runs_both_systems_for_a_set_time_and_summarises_them() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("out").join("summary.json");
    std::fs::create_dir(tmp.path().join("out")).unwrap();
    let temp = tmp.path().join("temp");
    std::fs::create_dir(&temp).unwrap();
    let output = lab_up(&temp)
        .args(["--for", "4s", "--rate", "100", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for system in ["system1", "system2"] {
        let report = &summary[system];
        assert!(
            report["achieved_rate"].as_f64().unwrap() > 50.0,
            "{system}: {report:#}"
        );
        assert_eq!(report["lost"], 0, "{system} lost metrics: {all}");
        assert_eq!(report["errors"], 0, "{system} had errors: {all}");
        assert!(
            report["e2e_latency_ms"]["count"].as_u64().unwrap() > 100,
            "{system}: {report:#}"
        );
        assert_eq!(report["partial"], false);
    }
    assert_eq!(summary["system1"]["run"]["protocol"], "http1");
    assert_eq!(summary["system2"]["run"]["protocol"], "ws");
    // One connection per simulated server (5 by default).
    assert_eq!(summary["system1"]["run"]["connections"], 5);
    assert_eq!(summary["system2"]["run"]["connections"], 5);
    for child in ["redis", "system1", "system2"] {
        assert!(all.contains(&format!("{child} is ready")), "{all}");
        assert!(
            all.lines()
                .any(|l| l.starts_with(child) && l.contains("stopped by SIGTERM")),
            "{child} was not stopped by SIGTERM: {all}"
        );
    }
    assert!(all.contains("Every child has stopped"), "{all}");
    assert_nothing_left(&temp);
}

/// `GET path` on 127.0.0.1:port, HTTP/1.1 without a client crate: the status line and the body.
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[test]
fn the_dashboard_url_comes_first_and_the_page_gets_the_agents_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut lab = Running::start(lab_up_with(tmp.path(), &[("--dashboard-port", port)]));
    let first = lab.wait_for("telemetry lab: starting");
    assert!(first.contains(&format!("http://127.0.0.1:{port}/")), "{first}");
    let dashboard = lab.pid_of("dashboard");
    lab.wait_for(&format!("dashboard: http://127.0.0.1:{port}/"));
    let (status, page) = http_get(port, "/").expect("the page answers");
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("Telemetry lab"), "{page}");
    // Each system's agents' live second reaches the page's /api/agents, forwarded by lab up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let agents = loop {
        let (_, body) = http_get(port, "/api/agents").expect("/api/agents answers");
        let doc: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
        if doc["systems"]["system1"]["second"]["delivered"].is_u64()
            && doc["systems"]["system2"]["second"]["delivered"].is_u64()
        {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "no agents' figures on /api/agents: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(agents["fed"], true, "{agents:#}");
    assert_eq!(agents["refusedLines"], 0, "{agents:#}");
    // And the relays reach both systems' health endpoints.
    let (_, body) = http_get(port, "/api/status/system2").unwrap();
    let status: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(status["documents"]["health"]["status"], 200, "{status:#}");
    kill(lab.child.id(), "-TERM");
    let (status, all) = lab.finish();
    assert!(status.success(), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("dashboard (pid") && l.contains("stopped by SIGTERM")),
        "{all}"
    );
    assert_gone(dashboard);
    assert_nothing_left(tmp.path());
}

#[test]
fn without_redis_it_names_the_package_and_runs_system2_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("summary.json");
    let temp = tmp.path().join("temp");
    let empty_path = tmp.path().join("bin");
    std::fs::create_dir(&temp).unwrap();
    std::fs::create_dir(&empty_path).unwrap();
    let output = lab_up(&temp)
        .env("PATH", &empty_path)
        .args(["--for", "3s", "--rate", "50", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("apt-get install redis-server") && all.contains("brew install redis"),
        "{all}"
    );
    assert!(all.contains("Going on with System 2 alone"), "{all}");
    assert!(!all.contains("started system1"), "{all}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(summary["system1"].is_null(), "{summary:#}");
    assert!(
        summary["system2"]["achieved_rate"].as_f64().unwrap() > 25.0,
        "{summary:#}"
    );
    assert_eq!(summary["system2"]["lost"], 0);
    assert_nothing_left(&temp);
}

#[test]
fn a_busy_port_is_named_with_its_flag_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let output = lab_up_with(tmp.path(), &[("--system2-port", port)])
        .args(["--for", "3s"])
        .output()
        .unwrap();
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains(&format!("port {port} (System 2 WebSocket) is not available"))
            && all.contains("--system2-port")
            && all.contains("nothing was started"),
        "{all}"
    );
    assert!(!all.contains("(pid "), "something was started: {all}");
    assert!(!all.contains("backtrace"), "a user error is not a crash: {all}");
    assert_nothing_left(tmp.path());

    // So is a --json file that cannot be written.
    let output = lab_up(tmp.path())
        .args(["--json", "/nonexistent-folder/summary.json"])
        .output()
        .unwrap();
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains("the folder /nonexistent-folder does not exist; nothing was started"),
        "{all}"
    );
    assert!(!all.contains("(pid "), "something was started: {all}");

    // Two services given one port is the same mistake.
    let same = free_port().unwrap();
    let output = lab_up_with(
        tmp.path(),
        &[("--system1-ws-port", same), ("--system2-port", same)],
    )
    .output()
    .unwrap();
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains(&format!("port {same} is given to both"))
            && all.contains("--system1-ws-port")
            && all.contains("--system2-port"),
        "{all}"
    );
}

/// A running `lab up`, its output read line by line; killed if the test fails.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` and returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; seen:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The pid in a "started NAME (pid N)" line.
    fn pid_of(&mut self, name: &str) -> u32 {
        let line = self.wait_for(&format!("started {name} (pid "));
        line.split("(pid ")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "lab up did not exit: {}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_child_that_dies_is_named_and_the_rest_are_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lab = Running::start(lab_up(tmp.path()));
    let pids: Vec<u32> = ["redis", "system1", "system2", "agents-system1", "agents-system2"]
        .iter()
        .map(|name| lab.pid_of(name))
        .collect();
    lab.wait_for("System 2: WebSocket, in memory: ");
    kill(pids[2], "-KILL");
    let (status, all) = lab.finish();
    assert!(!status.success(), "{all}");
    assert!(
        all.contains(&format!("system2 (pid {}) exited (killed by SIGKILL)", pids[2])),
        "{all}"
    );
    assert!(all.contains("Stopping everything"), "{all}");
    for pid in pids {
        assert_gone(pid);
    }
    assert_nothing_left(tmp.path());
}

#[test]
fn with_restart_a_dead_child_is_started_again_and_sigterm_stops_the_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = lab_up(tmp.path());
    command.args(["--on-child-exit", "restart"]);
    let mut lab = Running::start(command);
    let system2 = lab.pid_of("system2");
    lab.pid_of("agents-system2");
    lab.wait_for("System 2: WebSocket, in memory: ");
    kill(system2, "-KILL");
    lab.wait_for("starting system2 again (restart 1 of 5)");
    let again = lab.wait_for("system2 is ready again (pid ");
    let new_pid: u32 = again
        .split("(pid ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert_ne!(new_pid, system2);
    kill(lab.child.id(), "-TERM");
    let (status, all) = lab.finish();
    assert!(status.success(), "{all}");
    assert!(all.contains("Interrupted: stopping"), "{all}");
    assert!(all.contains("Summary"), "{all}");
    assert_gone(new_pid);
    assert_nothing_left(tmp.path());
}

#[test]
fn a_service_that_cannot_start_is_named_with_the_end_of_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let nobody = free_port().unwrap();
    let output = lab_up(tmp.path())
        .args([
            "--redis-url",
            &format!("redis://127.0.0.1:{nobody}"),
            "--for",
            "3s",
        ])
        .output()
        .unwrap();
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains("system1 exited while starting (exit code 1)"),
        "{all}"
    );
    assert!(
        all.contains(&format!("cannot connect to Redis at 127.0.0.1:{nobody}")),
        "the log's tail is shown: {all}"
    );
    assert!(!all.contains("started agents"), "{all}");
    assert_nothing_left(tmp.path());
}

#[test]
fn a_killed_supervisor_leaves_no_service_running() {
    let tmp = tempfile::tempdir().unwrap();
    let redis_port = free_port().unwrap();
    let mut command = lab_up(tmp.path());
    command.args(["--redis-port", &redis_port.to_string()]);
    let mut lab = Running::start(command);
    let pids: Vec<u32> = ["redis", "system1", "system2", "agents-system1", "agents-system2"]
        .iter()
        .map(|name| lab.pid_of(name))
        .collect();
    assert!(std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok());
    // SIGKILL: the supervisor cannot stop anything; its children notice their stdin closing.
    kill(lab.child.id(), "-KILL");
    let _ = lab.finish();
    for pid in pids {
        assert_gone(pid);
    }
    // The redis-server under its guard too: nothing listens on its port any more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok() {
        assert!(Instant::now() < deadline, "redis-server outlived the supervisor");
        std::thread::sleep(Duration::from_millis(50));
    }
}
