//! The testkit's own tests: the helpers every other suite relies on must themselves be right.

use std::time::Duration;

use lab_testkit::{Fsync, RedisServer, TestkitError};
use redis::Commands;

#[test]
fn starts_on_a_free_port_and_answers() {
    let server = RedisServer::start().unwrap();
    let port = server.port().unwrap();
    assert_ne!(port, 6379, "must never use the shared Redis");
    let mut con = server.connection();
    let _: () = con.set("k", "v").unwrap();
    let v: String = con.get("k").unwrap();
    assert_eq!(v, "v");
}

#[test]
fn two_servers_do_not_share_state() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.url(), b.url());
    let _: () = a.connection().set("only-in-a", 1).unwrap();
    let in_b: Option<i64> = b.connection().get("only-in-a").unwrap();
    assert_eq!(in_b, None);
}

#[test]
fn unix_socket_servers_work() {
    let server = RedisServer::builder().unix_socket().start().unwrap();
    assert!(server.url().starts_with("redis+unix://"));
    assert_eq!(server.port(), None);
    let pong: String = redis::cmd("PING").query(&mut server.connection()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn stop_then_restart_keeps_aof_data_and_address() {
    let mut server = RedisServer::builder().aof(Fsync::Always).start().unwrap();
    let url = server.url();
    let _: () = server.connection().xadd("s", "*", &[("f", "1")]).unwrap();
    server.stop();
    assert!(!server.is_running());
    assert!(
        server
            .client()
            .get_connection_with_timeout(Duration::from_millis(200))
            .is_err()
    );
    server.restart().unwrap();
    assert_eq!(server.url(), url, "clients must find it where it was");
    let len: usize = server.connection().xlen("s").unwrap();
    assert_eq!(len, 1, "an AOF-fsynced write survives a restart");
}

#[test]
fn a_crash_with_fsync_always_loses_nothing_acknowledged() {
    let mut server = RedisServer::builder().aof(Fsync::Always).start().unwrap();
    let mut con = server.connection();
    for i in 0..100 {
        let _: String = con.xadd("s", "*", &[("i", i)]).unwrap();
    }
    server.kill();
    assert!(!server.is_running());
    server.restart().unwrap();
    let len: usize = server.connection().xlen("s").unwrap();
    assert_eq!(len, 100);
}

#[test]
fn without_aof_a_restart_starts_empty() {
    let mut server = RedisServer::start().unwrap();
    let _: () = server.connection().set("k", 1).unwrap();
    server.kill();
    server.restart().unwrap();
    let v: Option<i64> = server.connection().get("k").unwrap();
    assert_eq!(v, None);
}

#[test]
fn the_server_dies_with_its_handle() {
    let server = RedisServer::start().unwrap();
    let client = server.client();
    let dir = server.dir().to_owned();
    drop(server);
    assert!(
        client
            .get_connection_with_timeout(Duration::from_millis(200))
            .is_err()
    );
    assert!(!dir.exists(), "the data directory is removed");
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    // Changing the environment of this process would race the other tests, which run in parallel
    // threads; so the check runs in a child process of this same test binary.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "missing_binary_child", "--nocapture", "--ignored"])
        .env("REDIS_SERVER_BIN", "/nonexistent/redis-server")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
#[ignore = "run by a_missing_binary_is_a_clear_error in a child process"]
fn missing_binary_child() {
    let err = RedisServer::start().unwrap_err();
    assert!(matches!(err, TestkitError::NotInstalled { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("apt-get install redis-server"), "{msg}");
    assert!(msg.contains("/nonexistent/redis-server"), "{msg}");
}

#[test]
fn bad_configuration_reports_the_log_tail() {
    let err = RedisServer::builder()
        .args(["--maxmemory-policy", "no-such-policy"])
        .start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TestkitError::DidNotStart { .. }), "{msg}");
    assert!(
        msg.contains("maxmemory-policy") || msg.contains("argument"),
        "{msg}"
    );
}
