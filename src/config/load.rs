//! Turns gateway.yaml into a validated `Config` with every secret resolved, or into diagnostics
//! that point at file:line:column. Reads the file and the secrets; changes nothing.

use super::error::{ConfigError, Diagnostic, Severity};
use super::locate::{Location, SourceMap, SyntaxError, join_key, parent};
use super::model::{Agent, Config};
use super::secret::SecretSource;
use super::validate::{Reach, validate};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A loaded configuration with where it came from and the hash of the bytes it was read from
/// (a reload whose file hashes the same can be skipped).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated configuration, secrets resolved.
    pub config: Config,
    /// The file it was read from.
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
}

impl Loaded {
    /// Reads, validates and resolves the file at `path`.
    pub fn from_path(path: &Path) -> Result<Loaded, ConfigError> {
        let text = read(path)?;
        let config = parse(&text, path)?;
        Ok(Loaded {
            config,
            path: path.to_owned(),
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// The line `wa-gateway validate` prints: `gateway.yaml: ok — 1 number (1 enabled), …`.
    pub fn summary(&self) -> String {
        format!(
            "{}: ok — {}",
            self.path.display(),
            super::summary::summary(&self.config)
        )
    }
}

/// Reads the file at `path`, validates it and resolves its secrets.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&read(path)?, path)
}

/// Reads the file at `path` and checks it as far as `reach` allows (`wa-gateway validate`).
pub fn load_checked(path: &Path, reach: Reach) -> Result<Checked, ConfigError> {
    check(&read(path)?, path, reach)
}

/// Like `load` for text already read; `origin` names the file in diagnostics. Warnings are
/// logged.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let checked = check(text, origin, Reach::Full)?;
    for w in &checked.warnings {
        tracing::warn!("{w}");
    }
    Ok(checked.config)
}

/// A configuration that passed, with the warnings found on the way.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The validated configuration; with `Reach::Offline`, secrets other than inline values
    /// are left empty.
    pub config: Config,
    /// Problems that do not refuse the file, each with `Severity::Warning`.
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates `text` as far as `reach` allows; `origin` names the file.
pub fn check(text: &str, origin: &Path, reach: Reach) -> Result<Checked, ConfigError> {
    let at = |loc: Location, path: &str, message: String| Diagnostic {
        file: origin.to_owned(),
        line: loc.line,
        column: loc.column,
        path: path.to_owned(),
        message,
        severity: Severity::Error,
    };
    // The source map is built only for a file with something to report: a valid one (every
    // reload of a large file) needs no positions.
    let syntax = |e: SyntaxError| {
        ConfigError::new(vec![at(
            e.location,
            "",
            format!("YAML syntax error: {}", e.message),
        )])
    };
    let mut config: Config = match serde_norway::from_str(text) {
        Ok(config) => config,
        Err(e) => {
            let map = SourceMap::build(text).map_err(syntax)?;
            let (loc, path, message) = from_serde(&e, text, &map);
            return Err(ConfigError::new(vec![at(loc, &path, message)]));
        }
    };
    let map = SourceMap::lazy(text);

    let mut diagnostics: Vec<Diagnostic> = validate(&config, &map, reach)
        .into_iter()
        .map(|issue| {
            let loc = match issue.at_key {
                true => map.key(&issue.path),
                false => None,
            }
            .unwrap_or_else(|| map.nearest(&issue.path));
            at(loc, &issue.path, issue.message)
        })
        .collect();
    for (path, secret) in config.secrets_mut() {
        let inline = matches!(secret.source(), SecretSource::Value(_));
        if reach == Reach::Offline && !inline {
            continue;
        }
        if let Err(e) = secret.resolve() {
            // SecretError names the variable or the file, never the value.
            diagnostics.push(at(map.nearest(&path), &path, format!("secret: {e}")));
        } else if is_encryption_key(&path)
            && secret.stored_name().is_none()
            && let Err(e) = crate::vault::EncryptionKey::parse(secret.expose())
        {
            // KeyError says how long the key is, never what it holds.
            diagnostics.push(at(map.nearest(&path), &path, e.to_string()));
        }
    }
    if !diagnostics.is_empty() {
        return Err(ConfigError::new(diagnostics));
    }
    let mut warnings = super::retention::warnings(&config.storage.retention);
    if let Some(why) = crate::cloudapi::versions::expiry_warning(
        &config.meta.api_version,
        std::time::SystemTime::now(),
        std::time::Duration::ZERO,
    ) {
        warnings.push(("meta.api_version".to_owned(), why));
    }
    let warnings = warnings
        .into_iter()
        .map(|(path, why)| Diagnostic {
            severity: Severity::Warning,
            ..at(map.nearest(&path), &path, why)
        })
        .collect();
    Ok(Checked { config, warnings })
}

fn is_encryption_key(path: &str) -> bool {
    path == "meta.encryption_key" || path.starts_with("meta.previous_encryption_keys[")
}

/// Diagnostics for problems found after loading (a stored secret missing from storage), placed
/// at the fields' positions in `file` as it is now; at line 0 when it cannot be read.
pub fn diagnostics_at(
    file: &Path,
    issues: impl IntoIterator<Item = (String, String)>,
) -> ConfigError {
    let text = std::fs::read_to_string(file).ok();
    let map = text.as_deref().and_then(|text| SourceMap::build(text).ok());
    ConfigError::new(
        issues
            .into_iter()
            .map(|(path, message)| {
                let loc = map
                    .as_ref()
                    .map(|m| m.nearest(&path))
                    .unwrap_or(Location { line: 0, column: 0 });
                Diagnostic {
                    file: file.to_owned(),
                    line: loc.line,
                    column: loc.column,
                    path,
                    message,
                    severity: Severity::Error,
                }
            })
            .collect(),
    )
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(vec![Diagnostic {
            file: path.to_owned(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the configuration file: {e}"),
            severity: Severity::Error,
        }])
    })
}

/// Position, field path and message of a deserialization error. serde_norway keeps the path
/// only inside its Display text (`listen: unknown field ... at line 3 column 3`), so it is taken
/// from there; positions of unknown and missing keys come from the source map.
fn from_serde(
    e: &serde_norway::Error,
    source: &str,
    map: &SourceMap,
) -> (Location, String, String) {
    let serde_loc = e.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let mut text = e.to_string();
    if let Some(l) = &serde_loc {
        let suffix = format!(" at line {} column {}", l.line, l.column);
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_owned();
        }
    }
    let (path, message) = match text.split_once(": ") {
        Some((p, m)) if !p.is_empty() && !p.contains(char::is_whitespace) => {
            (p.to_owned(), m.to_owned())
        }
        _ => (String::new(), text),
    };

    // serde buffers internally tagged enums, so an error inside an agent comes with the path
    // `agents` and the position of that mapping; find the agent (and field) at fault.
    let mut field = None;
    let path = match path.as_str() {
        "agents" => match agent_at_fault(source, &message) {
            Some((name, f)) => {
                field = f;
                join_key("agents", &name)
            }
            None => path,
        },
        _ => path,
    };

    if let Some(key) = backticked_after(&message, "unknown field ") {
        let full = join_key(&path, key);
        let loc = map.key(&full).or(serde_loc).unwrap_or(Location::START);
        let expected = message
            .split_once("expected ")
            .map(|(_, list)| list.to_owned());
        let fix = match expected.as_deref().and_then(|list| closest(key, list)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => match &expected {
                Some(list) => format!("expected {list}"),
                None => "remove it".to_owned(),
            },
        };
        return (loc, full, format!("unknown key `{key}`: {fix}"));
    }
    if let Some(key) = backticked_after(&message, "missing field ") {
        let loc = map.value(&path).or(serde_loc).unwrap_or(Location::START);
        let message = format!("required key `{key}` is missing here");
        return (loc, join_key(&path, key), message);
    }
    let path = match field {
        Some(f) => join_key(&path, &f),
        None => path,
    };
    let loc = map
        .value(&path)
        .or(serde_loc)
        .unwrap_or_else(|| map.nearest(parent(&path)));
    (loc, path, message)
}

/// The first agent that fails to deserialize on its own, and the field whose string value the
/// error message quotes (a bad duration), if any.
fn agent_at_fault(text: &str, message: &str) -> Option<(String, Option<String>)> {
    let root: serde_norway::Value = serde_norway::from_str(text).ok()?;
    let agents = root.get("agents")?.as_mapping()?;
    agents.iter().find_map(|(name, value)| {
        serde_norway::from_value::<Agent>(value.clone()).err()?;
        let field = value.as_mapping().and_then(|fields| {
            fields.iter().find_map(|(k, v)| {
                let quoted = format!("{:?}", v.as_str()?);
                message
                    .contains(&quoted)
                    .then(|| k.as_str().map(str::to_owned))?
            })
        });
        Some((name.as_str()?.to_owned(), field))
    })
}

/// The text between backticks right after `prefix` at the start of `message`.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// The candidate in serde's "`a`, `b` or `c`" list within two edits of `key`, if any.
fn closest<'a>(key: &str, list: &'a str) -> Option<&'a str> {
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(|c| (edit_distance(key, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
