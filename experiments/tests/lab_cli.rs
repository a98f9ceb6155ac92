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
