//! The `system1` binary: `all` starts every role, and SIGTERM stops them cleanly.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_testkit::RedisServer;

/// Kills the child if the test fails before it stops by itself.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    lab_testkit::free_port().expect("a free port")
}

#[tokio::test]
async fn all_roles_run_and_sigterm_stops_them_cleanly() {
    let redis = RedisServer::start().unwrap();
    let (http, http2, ws, ops) = (free_port(), free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_system1"))
        .args([
            "--redis-url",
            &redis.url(),
            "--log-format",
            "json",
            "all",
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--http-port",
            &http.to_string(),
            "--http2-port",
            &http2.to_string(),
        ])
        .args([
            "--ws-port",
            &ws.to_string(),
            "--ops-port",
            &ops.to_string(),
            "--block-ms",
            "200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let child = &mut guard.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "system1 did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metric = serde_json::json!({"serverId": "s", "timestamp": lab_core::now_ms(), "metrics": {"cpu": 1, "memory": 2, "disk": 3}});
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://127.0.0.1:{http2}/metrics"))
        .json(&metric)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    // Each role reports healthy once it is connected to Redis (the broadcaster: once it is reading
    // its fan-out), which may be a moment after its port opens.
    for port in [ws, ops] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let health = client
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .unwrap();
            if health.status().as_u16() == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "port {port} still answers {} after 10 s",
                health.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not stop within its bounds"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let log: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(log.iter().any(|l| l.contains("SIGTERM")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("System 1 stopped")), "{log:?}");
}

#[test]
fn a_port_in_use_names_the_flag_to_change_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_system1"))
        .args([
            "--redis-url",
            "redis://127.0.0.1:1/",
            "api",
            "--host",
            "127.0.0.1",
            "--http-port",
            &port,
            "--http2-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&port) && err.contains("SYSTEM1_HTTP_PORT"), "{err}");
}

/// A certificate file that cannot be read stops `system1 api` at once, with the path in the message
/// and no panic.
#[test]
fn a_bad_certificate_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_system1"))
        .env_remove("RUST_BACKTRACE")
        .args([
            "--redis-url",
            "redis://127.0.0.1:1/",
            "api",
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--http2-port",
            "0",
            "--tls-cert",
        ])
        .arg(&missing)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the TLS certificate file")
            && err.contains(missing.to_str().unwrap())
            && err.contains("No such file"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `--tls-self-signed` says where the certificate for clients to trust was written.
#[test]
fn a_self_signed_certificate_is_written_and_its_path_logged() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_system1"))
        .args([
            "--redis-url",
            "redis://127.0.0.1:1/",
            "--log-format",
            "json",
            "api",
            "--host",
            "127.0.0.1",
            "--http-port",
            &port.to_string(),
            "--http2-port",
            "0",
            "--tls-self-signed",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let stdout = BufReader::new(guard.0.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("self-signed"))
        .expect("a log line about the certificate");
    let log: serde_json::Value = serde_json::from_str(&line).unwrap();
    let path = log["certificate"].as_str().expect("the path is logged");
    assert!(
        path.ends_with(&format!("system1-api-{port}-self-signed.pem")),
        "{path}"
    );
    let pem = std::fs::read_to_string(path).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(!pem.contains("PRIVATE KEY"), "the key is never written");
    let _ = std::fs::remove_file(path);
}
