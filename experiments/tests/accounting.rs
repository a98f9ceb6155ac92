//! The long accounting check: both systems under steady load for minutes, each with a dashboard, and
//! every metric accounted for by `seq`. Not in the default test run (it takes five minutes and both
//! cores); run it with
//!
//! ```sh
//! cargo test --release -p experiments --test accounting -- --ignored --nocapture
//! LAB_SOAK_SECS=60 cargo test --release -p experiments --test accounting -- --ignored   # shorter
//! ```
//!
//! System 2 gets 20 000 metrics/s over WebSocket, System 1 5 000/s over HTTP/2 (a Redis with AOF
//! `everysec`, two workers, the broadcaster). The claim checked: every metric sent is acked exactly
//! once, and reaches the dashboard in exactly one update of its own or inside a coalesced one; none
//! is lost, none duplicated. The figures are printed for docs/performance.md.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab_testkit::{Fsync, RedisServer, free_port};
use serde_json::Value;

/// A program of the lab, run as `lab child …`, killed when dropped. It runs while its stdin is open
/// (that is how `lab child` notices a vanished supervisor), so the pipe is kept here: `Child::wait`
/// would close it first.
struct Program(Child, #[allow(dead_code)] Option<std::process::ChildStdin>);

impl Program {
    fn start(name: &str, args: &[String], log: &Path) -> Program {
        let log = std::fs::File::create(log).expect("a log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["child", name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the lab binary starts");
        let stdin = child.stdin.take();
        Program(child, stdin)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_http(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            reply.starts_with("HTTP/1.1 200")
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "nothing answers {path} on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
#[ignore = "five minutes of load on both systems: run it by name, in release mode"]
fn every_metric_is_accounted_for_by_seq_over_minutes() {
    let secs: u64 = std::env::var("LAB_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::builder()
        .aof(Fsync::EverySec)
        .start()
        .expect("redis-server");
    let [http2, ws, ops, system2] = [(); 4].map(|()| free_port().unwrap());
    let http1 = free_port().unwrap();
    let _system1 = Program::start(
        "system1",
        &[
            s("--redis-url"),
            redis.url(),
            s("all"),
            s("--host"),
            s("127.0.0.1"),
            s("--http-port"),
            http1.to_string(),
            s("--http2-port"),
            http2.to_string(),
            s("--ws-host"),
            s("127.0.0.1"),
            s("--ws-port"),
            ws.to_string(),
            s("--ops-host"),
            s("127.0.0.1"),
            s("--ops-port"),
            ops.to_string(),
            s("--workers"),
            s("2"),
        ],
        &tmp.path().join("system1.log"),
    );
    let _system2 = Program::start(
        "system2",
        &[s("--host"), s("127.0.0.1"), s("--port"), system2.to_string()],
        &tmp.path().join("system2.log"),
    );
    wait_http(http2, "/healthz");
    wait_http(ws, "/api/health");
    wait_http(system2, "/api/health");

    let duration = format!("{secs}s");
    let agents = |name: &str, target: String, dashboard: String, protocol: &str, rate: &str| {
        let report = tmp.path().join(format!("{name}.json"));
        let args = [
            s("--target"),
            target,
            s("--dashboard"),
            dashboard,
            s("--protocol"),
            s(protocol),
            s("--rate"),
            s(rate),
            s("--agents"),
            s("20"),
            s("--duration"),
            duration.clone(),
            s("--cooldown"),
            s("30s"),
            s("--json"),
            report.display().to_string(),
            s("--quiet"),
        ];
        (
            Program::start("agents", &args, &tmp.path().join(format!("{name}.log"))),
            report,
        )
    };
    let (mut one, one_report) = agents(
        "system1",
        format!("http://127.0.0.1:{http2}"),
        format!("ws://127.0.0.1:{ws}"),
        "http2",
        "5000",
    );
    let (mut two, two_report) = agents(
        "system2",
        format!("ws://127.0.0.1:{system2}"),
        format!("ws://127.0.0.1:{system2}"),
        "ws",
        "20000",
    );
    for (name, program, report) in [
        ("System 1", &mut one, &one_report),
        ("System 2", &mut two, &two_report),
    ] {
        let status = program.0.wait().expect("the agents ran");
        let log = report.with_extension("log");
        assert!(
            status.success(),
            "{name}'s agents failed: {status}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let r: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
        println!(
            "{name}: sent {} acked {} delivered {} coalesced {} lost {} duplicates {} errors {} retries {} \
             achieved {:.0}/s ack p50/p99/p99.9/max {}/{}/{}/{} ms e2e p50/p99/p99.9/max {}/{}/{}/{} ms, \
             generator lag max {} ms, machine {}",
            r["sent"],
            r["acked"],
            r["delivered"],
            r["coalesced"],
            r["lost"],
            r["duplicates"],
            r["errors"],
            r["retries"],
            r["achieved_rate"].as_f64().unwrap_or(0.0),
            r["ack_latency_ms"]["p50"],
            r["ack_latency_ms"]["p99"],
            r["ack_latency_ms"]["p999"],
            r["ack_latency_ms"]["max"],
            r["e2e_latency_ms"]["p50"],
            r["e2e_latency_ms"]["p99"],
            r["e2e_latency_ms"]["p999"],
            r["e2e_latency_ms"]["max"],
            r["generator"]["max_lag_ms"],
            r["run"]["machine"],
        );
        assert_eq!(r["sent"], r["acked"], "{name}: every metric acked");
        assert_eq!(r["refused"], 0, "{name}: nothing refused");
        assert_eq!(r["lost"], 0, "{name}: nothing lost");
        assert_eq!(r["duplicates"], 0, "{name}: nothing delivered twice");
        let delivered_distinct = r["delivered"].as_u64().unwrap();
        let coalesced = r["coalesced"].as_u64().unwrap();
        assert_eq!(
            delivered_distinct + coalesced,
            r["acked"].as_u64().unwrap(),
            "{name}: each metric in exactly one update, or coalesced"
        );
    }
}
