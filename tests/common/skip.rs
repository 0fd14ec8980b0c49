//! What a test does when a real part it needs (PostgreSQL, Chromium, promtool, the chart
//! tools) is missing. In CI (`CI=true`) it fails. Under `.ci/test` (which sets
//! `WA_GATEWAY_SKIPS`) it is recorded as skipped, with why, for the run's closing summary
//! (`N passed, N failed, N skipped`). Anywhere else it fails too, saying to run `.ci/test`:
//! a test that could not run its real part is never reported as passed.

use std::io::Write;

/// Fails the test, or under `.ci/test` records it as skipped; the caller returns after it.
pub fn missing(part: &str, why: &str, hint: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{part} is required in CI: {why}. {hint}");
    }
    let Some(log) = std::env::var_os("WA_GATEWAY_SKIPS") else {
        panic!(
            "{part} is missing: {why}. {hint}. Or run the tests with `.ci/test`, which installs \
             and starts what is missing and reports a test it still cannot run as skipped"
        );
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| {
            s.rsplit_once('-')
                .map_or(s.clone(), |(name, _hash)| name.to_owned())
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("{binary}::{test}\t{part}: {why}. {hint}\n");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("cannot record a skip in {}: {e}", log.to_string_lossy()));
    file.write_all(line.as_bytes()).expect("record the skip");
    eprintln!("\n*** SKIPPED ({part}: {why}). {hint} ***\n");
}
