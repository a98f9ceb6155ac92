//! The `lab` front door (`cargo lab …`): it lists what it can do.

use std::process::Command;

#[test]
fn without_arguments_it_teaches_its_subcommands() {
    let out = Command::new(env!("CARGO_BIN_EXE_lab")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = String::from_utf8_lossy(&out.stderr);
    assert!(
        help.contains("up") && help.contains("Start Redis, both systems"),
        "{help}"
    );
}

fn lab(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .env_remove("LAB_RATE")
        .env_remove("LAB_BATCH")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn up_help_teaches_what_it_shows_and_how_to_move_ports() {
    let (code, help) = lab(&["up", "--help"]);
    assert_eq!(code, Some(0));
    for needle in [
        "--for",
        "--base-port",
        "end-to-end",
        "Ctrl-C",
        "--on-child-exit",
        "cargo lab up",
    ] {
        assert!(help.contains(needle), "{needle} missing: {help}");
    }
}

#[test]
fn bad_flags_are_refused_with_the_reason_before_anything_starts() {
    for (args, reason) in [
        (&["up", "--rate=-5"][..], "not a rate"),
        (&["up", "--rate", "NaN"], "not a rate"),
        (&["up", "--rate", "lots"], "\"lots\" is not a number"),
        (&["up", "--for", "banana"], "is not a duration"),
        (&["up", "--batch", "0"], "--batch"),
        (&["up", "--batch", "1001"], "--batch"),
        (&["up", "--agents", "0"], "--agents"),
        (&["up", "--base-port", "65500"], "--base-port"),
        (&["up", "--protocol", "ws"], "possible values: http1, http2"),
        (
            &["up", "--on-child-exit", "ignore"],
            "possible values: stop, restart",
        ),
        (&["up", "--host", "not-an-address"], "--host"),
    ] {
        let (code, text) = lab(args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains(reason), "{args:?} should say {reason:?}: {text}");
        assert!(!text.contains("(pid "), "{args:?} started something: {text}");
    }
}
