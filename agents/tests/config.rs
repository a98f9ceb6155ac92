//! The agents' configuration convention: the original's FAKE_* env vars, flags win, bad values refused.

use std::process::{Command, Output};

fn agents(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agents"));
    for var in [
        "FAKE_SERVER_COUNT",
        "FAKE_SERVER_INTERVAL_MS",
        "FAKE_SPIKE_PROBABILITY",
        "FAKE_SPIKE_MULTIPLIER",
        "FAKE_JITTER_MS",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

#[test]
fn the_originals_env_vars_are_honoured_and_flags_win() {
    let env = [
        ("FAKE_SERVER_COUNT", "12"),
        ("FAKE_SPIKE_PROBABILITY", "0.5"),
        ("FAKE_JITTER_MS", "7"),
    ];
    let text = String::from_utf8_lossy(&agents(&["--print-config"], &env).stdout).into_owned();
    for expected in ["agents: 12", "spike_probability: 0.5", "jitter_ms: 7"] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
    let text =
        String::from_utf8_lossy(&agents(&["--print-config", "--agents", "3"], &env).stdout).into_owned();
    assert!(text.contains("agents: 3"), "{text}");
}

#[test]
fn bad_values_are_refused_naming_the_flag() {
    for (env, fragment) in [
        (("FAKE_SPIKE_PROBABILITY", "1.5"), "must be between 0 and 1"),
        (("FAKE_SERVER_COUNT", "0"), "--agents"),
        (("FAKE_SERVER_INTERVAL_MS", "soon"), "--interval-ms"),
    ] {
        let out = agents(&["--print-config"], &[env]);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(fragment), "{env:?}: {err}");
    }
}
