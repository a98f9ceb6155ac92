//! The `system2` binary itself: start-up errors are clear, and SIGTERM shuts it down cleanly.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn system2() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_system2"));
    for var in [
        "SYSTEM2_WS_PORT",
        "SYSTEM2_AGG_WINDOW_MS",
        "SYSTEM2_WINDOWS_MS",
        "LOG_LEVEL",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let port = free_port();
    let mut child = system2()
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The first log line says where it listens, in pino/bunyan JSON.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["name"], "system2");
    assert!(
        first["msg"].as_str().unwrap().contains("System 2 listening"),
        "{first}"
    );

    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert!(
        matches!(client.next().await, Some(Ok(Message::Text(_)))),
        "connection.ack"
    );

    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let close = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap();
    let Some(Ok(Message::Close(Some(frame)))) = close else {
        panic!("expected a close frame, got {close:?}")
    };
    assert_eq!(u16::from(frame.code), 1001);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit within its shutdown bound"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
}

#[test]
fn a_port_in_use_names_the_flag_to_change_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = system2()
        .args(["--host", "127.0.0.1", "--port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&port) && err.contains("--port") && err.contains("SYSTEM2_WS_PORT"),
        "{err}"
    );
}

#[test]
fn an_unusable_window_configuration_fails_at_start_up() {
    let out = system2()
        .args(["--host", "127.0.0.1", "--port", "0", "--windows-ms", "1000,0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid configuration") && err.contains("window length"),
        "{err}"
    );
}
