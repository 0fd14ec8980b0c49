//! `wa-gateway validate`: the file checked as `serve` would load it (secrets resolved,
//! certificates read, stored secrets looked up without changing storage), or with `--offline`
//! the file alone, for CI that has none of those. Problems print as text or as JSON Lines.

use crate::config::{self, Diagnostic, Reach, Severity};
use std::path::{Path, PathBuf};

/// The arguments of `wa-gateway validate`.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The configuration files (as with --config; several are checked one after the other,
    /// as a pre-commit hook passes them).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The configuration file [default: gateway.yaml].
    #[arg(short, long, env = "WA_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the file alone: structure, references, durations, URLs and policies, without
    /// resolving secrets, reading certificate files or opening storage.
    #[arg(long)]
    pub offline: bool,
    /// `text`: problems on stderr as file:line:column, the summary on stdout. `json`: one JSON
    /// object per problem per line on stdout (JSON Lines), the summary on stderr.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// How `validate` prints problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `file:line:column: path: message`, one a line.
    Text,
    /// `{"file","line","column","path","message","severity"}`, one a line (JSON Lines).
    Json,
}

/// Runs `validate`: 1 when any problem of any file is an error, 0 otherwise (warnings
/// included).
pub async fn run(args: ValidateArgs) -> u8 {
    let files = match args.files.is_empty() {
        true => vec![args.config.unwrap_or_else(|| PathBuf::from("gateway.yaml"))],
        false => args.files,
    };
    let reach = match args.offline {
        true => Reach::Offline,
        false => Reach::Full,
    };
    let mut failed = false;
    for path in &files {
        let (problems, summary) = check(path, reach).await;
        print(&problems, &summary, args.format);
        failed |= problems.iter().any(|d| d.severity == Severity::Error);
    }
    u8::from(failed)
}

fn print(problems: &[Diagnostic], summary: &[String], format: Format) {
    for d in problems {
        match format {
            Format::Text => eprintln!("{d}"),
            Format::Json => println!(
                "{}",
                serde_json::to_string(d).expect("a diagnostic serialises")
            ),
        }
    }
    for line in summary {
        match format {
            Format::Text => println!("{line}"),
            Format::Json => eprintln!("{line}"),
        }
    }
}

/// Every problem of the file at `path`, in file order, and the summary lines when it passed.
async fn check(path: &Path, reach: Reach) -> (Vec<Diagnostic>, Vec<String>) {
    let checked = match config::load_checked(path, reach) {
        Ok(c) => c,
        Err(e) => return (e.diagnostics, Vec::new()),
    };
    let mut problems = checked.warnings;
    let mut summary = vec![format!(
        "{}: ok — {}",
        path.display(),
        config::summary(&checked.config)
    )];
    match reach {
        Reach::Offline => summary.push(config::offline_skipped(&checked.config)),
        // What `serve` would refuse once storage is open: a stored name it does not hold.
        Reach::Full => match crate::secrets::missing_stored(&checked.config).await {
            Ok(missing) => {
                let refused = config::load::diagnostics_at(
                    path,
                    missing.into_iter().map(|i| (i.path, i.message)),
                );
                if !refused.diagnostics.is_empty() {
                    summary.clear();
                }
                problems.extend(refused.diagnostics);
            }
            Err(e) => problems.extend(
                config::load::diagnostics_at(
                    path,
                    [(
                        "storage.url".to_owned(),
                        format!(
                            "stored secrets were not looked up: storage could not be read \
                             ({e}); `serve` refuses the file if one is missing"
                        ),
                    )],
                )
                .diagnostics
                .into_iter()
                .map(|d| Diagnostic {
                    severity: Severity::Warning,
                    ..d
                }),
            ),
        },
    }
    problems.sort_by_key(|d| (d.line, d.column));
    (problems, summary)
}
