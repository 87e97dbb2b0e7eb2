//! End-to-end tests: run the built `pulsefocus` binary as a user would.

mod common;
use common::pulsefocus;

#[test]
fn help_lists_usage() {
    let out = pulsefocus().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: pulsefocus"));
}

#[test]
fn unknown_command_fails() {
    let out = pulsefocus().arg("no-such-command").output().unwrap();
    assert!(!out.status.success());
}
