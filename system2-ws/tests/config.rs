//! System 2's configuration convention: every flag has an env var (the original's names), flags win
//! over env vars, defaults are the original's, bad values are refused with the flag named.

use std::process::{Command, Output};

fn system2(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_system2"));
    cmd.args(args)
        .env_remove("SYSTEM2_WS_PORT")
        .env_remove("LOG_LEVEL")
        .env_remove("RUST_LOG");
    cmd.envs(env.iter().copied()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn defaults_are_the_originals() {
    let out = system2(&["--print-config"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "port: 4100",
        "agg_window_ms: 1000",
        "buffer_size: 500",
        "host: 0.0.0.0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
}

#[test]
fn the_originals_env_vars_are_honoured_and_flags_win() {
    let env = [
        ("SYSTEM2_WS_PORT", "4999"),
        ("SYSTEM2_AGG_WINDOW_MS", "250"),
        ("SYSTEM2_BUFFER_SIZE", "64"),
    ];
    let text = stdout(&system2(&["--print-config"], &env));
    for expected in ["port: 4999", "agg_window_ms: 250", "buffer_size: 64"] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
    let text = stdout(&system2(&["--print-config", "--port", "5000"], &env));
    assert!(text.contains("port: 5000"), "{text}");
}

#[test]
fn bad_values_are_refused_naming_the_flag() {
    for (args, env, fragment) in [
        (vec!["--port", "70000"], vec![], "--port"),
        (vec!["--port", "http"], vec![], "invalid digit"),
        (vec![], vec![("SYSTEM2_BUFFER_SIZE", "0")], "--buffer-size"),
        (vec![], vec![("SYSTEM2_AGG_WINDOW_MS", "-5")], "--agg-window-ms"),
        (vec!["--host", "localhost:80"], vec![], "--host"),
        (vec!["--no-such-flag"], vec![], "--no-such-flag"),
    ] {
        let mut all = vec!["--print-config"];
        all.extend(args);
        let out = system2(&all, &env);
        assert_eq!(out.status.code(), Some(2), "{all:?} {env:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(fragment), "{all:?}: {}", stderr(&out));
    }
}

#[test]
fn help_teaches_every_env_var() {
    let text = stdout(&system2(&["--help"], &[]));
    for var in [
        "SYSTEM2_WS_PORT",
        "SYSTEM2_AGG_WINDOW_MS",
        "SYSTEM2_BUFFER_SIZE",
        "LOG_LEVEL",
        "LOG_FORMAT",
    ] {
        assert!(text.contains(var), "--help does not mention {var}:\n{text}");
    }
}

#[test]
fn a_bad_log_level_is_a_clear_error() {
    let out = system2(&[], &[("LOG_LEVEL", "loud")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid log level \"loud\""),
        "{}",
        stderr(&out)
    );
}
