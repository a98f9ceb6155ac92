//! System 1's configuration convention: the original's env vars, flags win, secrets never print.

use std::process::{Command, Output};

const ORIGINAL_VARS: [&str; 10] = [
    "SYSTEM1_HTTP_PORT",
    "SYSTEM1_HTTP2_PORT",
    "SYSTEM1_WS_PORT",
    "SYSTEM1_WORKER_COUNT",
    "SYSTEM1_REDIS_HOST",
    "SYSTEM1_REDIS_PORT",
    "SYSTEM1_REDIS_DB",
    "SYSTEM1_REDIS_USERNAME",
    "SYSTEM1_REDIS_STREAM_KEY",
    "SYSTEM1_REDIS_CHANNEL",
];

fn system1(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_system1"));
    for var in ORIGINAL_VARS
        .iter()
        .chain(&["SYSTEM1_REDIS_PASSWORD", "REDIS_URL"])
    {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn defaults_are_the_originals() {
    let text = stdout(&system1(&["all", "--print-config"], &[]));
    for expected in [
        "http_port: 4000",
        "http2_port: 4001",
        "ws_port: 4002",
        "redis_port: 6379",
        "stream_key: \"metrics:stream\"",
        "channel: \"metrics:pubsub\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
}

#[test]
fn the_originals_env_vars_are_honoured_and_flags_win() {
    let env = [
        ("SYSTEM1_HTTP_PORT", "5000"),
        ("SYSTEM1_REDIS_HOST", "redis.lab"),
        ("SYSTEM1_REDIS_DB", "3"),
        ("SYSTEM1_WORKER_COUNT", "4"),
        ("SYSTEM1_REDIS_STREAM_KEY", "s"),
    ];
    let text = stdout(&system1(&["all", "--print-config"], &env));
    for expected in [
        "http_port: 5000",
        "redis_host: \"redis.lab\"",
        "redis_db: 3",
        "workers: 4",
        "stream_key: \"s\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
    let text = stdout(&system1(&["api", "--http-port", "5001", "--print-config"], &env));
    assert!(text.contains("http_port: 5001"), "{text}");
}

#[test]
fn the_password_never_prints() {
    let out = system1(
        &["worker", "--print-config"],
        &[("SYSTEM1_REDIS_PASSWORD", "hunter2")],
    );
    let text = stdout(&out);
    let compact: String = text.split_whitespace().collect();
    assert!(compact.contains(r#"redis_password:Some("***",)"#), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let help = stdout(&system1(&["--help"], &[("SYSTEM1_REDIS_PASSWORD", "hunter2")]));
    assert!(!help.contains("hunter2"), "{help}");
}

#[test]
fn help_lists_the_roles_and_every_original_env_var() {
    let help = stdout(&system1(&["--help"], &[]));
    for role in ["api", "worker", "broadcaster", "all"] {
        assert!(help.contains(role), "{help}");
    }
    let all_help = stdout(&system1(&["all", "--help"], &[]));
    for var in ORIGINAL_VARS {
        assert!(
            all_help.contains(var),
            "`system1 all --help` does not mention {var}:\n{all_help}"
        );
    }
}

#[test]
fn bad_values_are_refused_naming_the_flag() {
    for (args, fragment) in [
        (vec!["worker", "--workers", "0"], "--workers"),
        (vec!["api", "--http-port=-1"], "--http-port"),
        (vec!["--redis-db", "x", "api"], "--redis-db"),
        (vec![], "Usage"),
    ] {
        let out = system1(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(fragment), "{args:?}: {err}");
    }
}

/// The workers' ops port follows the other roles: all interfaces unless told otherwise, by flag or env var.
#[test]
fn the_workers_ops_host_defaults_to_every_interface_and_can_be_set() {
    let text = stdout(&system1(&["worker", "--print-config"], &[]));
    assert!(text.contains("ops_host: 0.0.0.0"), "{text}");
    let env = [("SYSTEM1_WORKER_OPS_HOST", "127.0.0.1")];
    let text = stdout(&system1(&["all", "--print-config"], &env));
    assert!(text.contains("ops_host: 127.0.0.1"), "{text}");
    let text = stdout(&system1(&["worker", "--ops-host", "::1", "--print-config"], &env));
    assert!(text.contains("ops_host: ::1"), "flags win: {text}");
    let out = system1(&["worker", "--ops-host", "localhost"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ops-host"));
    let help = stdout(&system1(&["worker", "--help"], &[]));
    assert!(help.contains("SYSTEM1_WORKER_OPS_HOST"), "{help}");
}

/// TLS comes from files (both needed) or is generated, never both.
#[test]
fn tls_flags_are_checked_together() {
    for (args, fragment) in [
        (vec!["api", "--tls-cert", "c.pem"], "--tls-key"),
        (vec!["api", "--tls-key", "k.pem"], "--tls-cert"),
        (
            vec![
                "api",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--tls-self-signed",
            ],
            "cannot be used with",
        ),
    ] {
        let out = system1(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(fragment), "{args:?}: {err}");
    }
    let env = [("SYSTEM1_TLS_SELF_SIGNED", "1")];
    let text = stdout(&system1(&["all", "--print-config"], &env));
    assert!(text.contains("tls_self_signed: true"), "{text}");
    let env = [("SYSTEM1_TLS_CERT", "c.pem"), ("SYSTEM1_TLS_KEY", "k.pem")];
    let text = stdout(&system1(&["api", "--print-config"], &env));
    assert!(text.contains("tls_cert: Some(\n"), "{text}");
    let help = stdout(&system1(&["api", "--help"], &[]));
    for var in ["SYSTEM1_TLS_CERT", "SYSTEM1_TLS_KEY", "SYSTEM1_TLS_SELF_SIGNED"] {
        assert!(help.contains(var), "{help}");
    }
}
