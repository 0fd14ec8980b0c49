//! External tools the chart and metrics tests drive (promtool, the chart venv's Python): found
//! on PATH or through an environment variable. A missing tool fails the test, or under
//! `.ci/test` skips it and says so in the run's summary (`tests/common/skip.rs`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Whether the tests run in CI, where every tool must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub use crate::common::skip::missing;

/// An executable named `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// promtool, from `WA_GATEWAY_PROMTOOL` or PATH.
pub fn promtool() -> Option<PathBuf> {
    let found = match std::env::var_os("WA_GATEWAY_PROMTOOL") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => on_path("promtool"),
    };
    if found.is_none() {
        missing(
            "promtool",
            "not found on PATH or in WA_GATEWAY_PROMTOOL",
            "Install it with `apt-get install prometheus` (Debian ships promtool in it)",
        );
    }
    found
}

/// The Python of the chart tools' virtual environment: `WA_GATEWAY_CHART_PYTHON`, else
/// `.venv-chart/bin/python` in the repository (what `.ci/run` creates), if it can import the
/// pinned tools.
pub fn chart_python() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("WA_GATEWAY_CHART_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".venv-chart/bin/python"));
    let hint = "Create it with `python3 -m venv .venv-chart && .venv-chart/bin/pip install -r charts/requirements.txt` \
                and set WA_GATEWAY_CHART_PYTHON=.venv-chart/bin/python (.ci/run does both)";
    if !python.is_file() {
        missing(
            "chart tools",
            &format!("no Python at {}", python.display()),
            hint,
        );
        return None;
    }
    let probe = Command::new(&python)
        .args(["-c", "import helm_python, kubernetes_validate, yaml"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Some(python),
        Ok(out) => {
            missing(
                "chart tools",
                &format!(
                    "{} cannot import helm_python and kubernetes_validate: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                hint,
            );
            None
        }
        Err(e) => {
            missing(
                "chart tools",
                &format!("cannot run {}: {e}", python.display()),
                hint,
            );
            None
        }
    }
}

/// Runs `cmd` with `stdin` as its input and returns what it did.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin piped");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for the tool")
}

/// Everything a finished command said, for assertion messages.
pub fn said(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
