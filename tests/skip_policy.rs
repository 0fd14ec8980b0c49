//! A test whose real part is missing is never reported as passed: it fails, in CI and under a
//! plain `cargo test`, and only under `.ci/test` (`WA_GATEWAY_SKIPS`) is it recorded as skipped
//! for the run's closing summary. Runs `a_test_missing_its_part` in a child process under each
//! of the three.

use crate::common::skip;

use std::process::Command;

/// Does nothing unless asked to by the test below; then its part is "missing".
#[test]
fn a_test_missing_its_part() {
    if std::env::var_os("WA_GATEWAY_SKIP_POLICY_CHILD").is_some() {
        skip::missing("a part", "not here", "install it");
    }
}

fn child(env: &[(&str, &str)]) -> bool {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "skip_policy::a_test_missing_its_part",
            "--test-threads",
            "1",
        ])
        .env_remove("CI")
        .env_remove("WA_GATEWAY_SKIPS")
        .env("WA_GATEWAY_SKIP_POLICY_CHILD", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    out.status.success()
}

#[test]
fn a_missing_part_fails_unless_the_runner_records_the_skip() {
    assert!(!child(&[]), "a plain cargo test fails without the part");
    assert!(!child(&[("CI", "true")]), "CI fails without the part");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.tsv");
    let log_str = log.to_str().unwrap();
    assert!(
        child(&[("WA_GATEWAY_SKIPS", log_str)]),
        "under .ci/test it returns"
    );
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        recorded,
        "integration::skip_policy::a_test_missing_its_part\ta part: not here. install it\n"
    );
    assert!(
        !child(&[("WA_GATEWAY_SKIPS", log_str), ("CI", "true")]),
        "CI never skips"
    );
}
