//! Why a configuration was refused: a list of diagnostics, each with file:line:column, the field
//! path and what to fix, and the warnings `wa-gateway validate` shows beside them. Messages are
//! built so that they never carry a secret's value.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// A broken rule: the field path, whether to point at its key rather than its value, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Issue {
    /// Field path such as `numbers[0].agent`.
    pub path: String,
    /// Point at the mapping key (e.g. a bad agent name) instead of the value.
    pub at_key: bool,
    /// What is wrong and what to do.
    pub message: String,
}

/// How bad a problem is: an error refuses the file, a warning only says something will go wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is refused (`validate` exits 1, `serve` does not start).
    #[default]
    Error,
    /// The file loads, but something needs attention (an expired Graph API version).
    Warning,
}

/// One problem in a configuration file; serialized, it is one line of `validate --format json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file as it was named to `load` / `parse`.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file (it could not be read).
    pub line: usize,
    /// 1-based column in characters; 0 with `line` 0.
    pub column: usize,
    /// Field path such as `numbers[0].agent`; empty for the document itself.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        if self.severity == Severity::Warning {
            f.write_str(" warning:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// A configuration that was refused, with every problem found (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// An error made of `diagnostics`, sorted by position.
    pub fn new(mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Self { diagnostics }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(line: usize, column: usize, path: &str, message: &str) -> Diagnostic {
        Diagnostic {
            file: "gateway.yaml".into(),
            line,
            column,
            path: path.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    #[test]
    fn one_line_per_diagnostic_in_file_order() {
        let err = ConfigError::new(vec![
            diag(
                12,
                14,
                "numbers[0].agent",
                "agent \"suport\" is not declared",
            ),
            diag(1, 10, "version", "version 2 is not supported"),
            diag(0, 0, "", "cannot read the file"),
            diag(3, 1, "", "did not find expected key"),
        ]);
        assert_eq!(
            err.to_string(),
            "gateway.yaml: cannot read the file\n\
             gateway.yaml:1:10: version: version 2 is not supported\n\
             gateway.yaml:3:1: did not find expected key\n\
             gateway.yaml:12:14: numbers[0].agent: agent \"suport\" is not declared"
        );
    }
}
