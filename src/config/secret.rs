//! Secret references (`{ env: NAME }`, `{ file: PATH }`, `{ value: "…" }`, `{ stored: NAME }`) and
//! the resolved value. A secret's value never appears in Debug, Display, Serialize or an error
//! message. `stored:` values live encrypted in storage and are filled in by `crate::secrets`.

use schemars::JsonSchema;
use serde::de::{self, EnumAccess, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a secret's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the gateway process.
    Env(String),
    /// A file (e.g. a Kubernetes Secret mount); one trailing newline is ignored.
    File(PathBuf),
    /// The value inline; accepted only when `meta.graph_url` is `emulator`.
    Value(String),
    /// A value the gateway keeps in its storage, encrypted with `meta.encryption_key` (tokens
    /// from `wa-gateway signup` or `wa-gateway secret put`).
    Stored(String),
}

impl SecretSource {
    /// Where the value comes from, for people (never the value itself).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Value(_) => "inline value".into(),
            SecretSource::Stored(name) => format!("stored secret {name}"),
        }
    }
}

/// Whether `name` may name a stored secret: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
pub fn is_stored_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A secret reference and, once the config is loaded, its value.
#[derive(Clone)]
pub struct Secret {
    source: SecretSource,
    value: Arc<str>,
}

/// Why a secret could not be read; never holds the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set: export it, or point the reference elsewhere")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    Empty(String),
    #[error(
        "secret file {path} holds more than {MAX_SECRET_FILE_BYTES} bytes: point the reference at the file that holds only the secret"
    )]
    FileTooLarge { path: PathBuf },
}

/// The most a secret file may hold: tokens and keys are far shorter, and a reference to the
/// wrong file (`/dev/zero`, a log) must not be read without end.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_bounded(path: &std::path::Path) -> Result<String, SecretError> {
    use std::io::Read;
    let file_error = |source| SecretError::File {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(file_error)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(file_error)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretError::FileTooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

impl Secret {
    /// A secret whose value is given directly (tests, the emulator).
    pub fn inline(value: impl Into<String>) -> Self {
        let value: String = value.into();
        Self {
            value: Arc::from(value.as_str()),
            source: SecretSource::Value(value),
        }
    }

    /// The reference as written in the file.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The name of a `{ stored: NAME }` reference.
    pub fn stored_name(&self) -> Option<&str> {
        match &self.source {
            SecretSource::Stored(name) => Some(name),
            _ => None,
        }
    }

    /// Fills in a `stored:` reference's value once storage gave it (see `crate::secrets`).
    pub(crate) fn set_stored_value(&mut self, value: &str) {
        self.value = Arc::from(value);
    }

    /// Reads the value from its source (re-reading files each time). A `stored:` reference is
    /// left empty here: storage is not open while a file is parsed; `crate::secrets` fills it.
    pub fn resolve(&mut self) -> Result<(), SecretError> {
        let value = match &self.source {
            SecretSource::Stored(_) => return Ok(()),
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
            }
            SecretSource::File(path) => {
                let mut text = read_bounded(path)?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                text
            }
            SecretSource::Value(v) => v.clone(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.source.describe()));
        }
        self.value = Arc::from(value.as_str());
        Ok(())
    }

    /// The secret's value. Empty until resolved; `config::load` resolves every secret.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::Value(_) => f.write_str("Secret(inline, redacted)"),
            other => write!(f, "Secret({}, redacted)", other.describe()),
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = d.deserialize_any(SourceVisitor)?;
        Ok(Self {
            source,
            value: Arc::from(""),
        })
    }
}

/// Reads a reference by hand because serde's own "invalid type" errors quote the scalar, and a
/// scalar where a reference belongs is most often a token pasted into the file.
struct SourceVisitor;

const NOT_A_REFERENCE: &str =
    "a secret must be a reference, not the value itself: write { env: NAME } or { file: PATH }";

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ env: NAME }, { file: PATH }, { stored: NAME } or { value: \"…\" }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(A::Error::custom(
                "empty secret reference: write { env: NAME } or { file: PATH }",
            ));
        };
        let text = map.next_value::<String>().map_err(|_| {
            A::Error::custom(format!("`{kind}` of a secret reference must be a string"))
        })?;
        let source = match kind.as_str() {
            "env" => SecretSource::Env(text),
            "file" => SecretSource::File(PathBuf::from(text)),
            "value" => SecretSource::Value(text),
            "stored" => SecretSource::Stored(text),
            _ => {
                return Err(A::Error::unknown_variant(
                    &kind,
                    &["env", "file", "stored", "value"],
                ));
            }
        };
        if map.next_key::<String>()?.is_some() {
            return Err(A::Error::custom(
                "a secret reference holds exactly one of env, file, stored or value",
            ));
        }
        Ok(source)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretSource, E> {
        Err(E::custom(NOT_A_REFERENCE))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretSource, E> {
        Err(E::custom(NOT_A_REFERENCE))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretSource, E> {
        Err(E::custom(NOT_A_REFERENCE))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretSource, E> {
        Err(E::custom(NOT_A_REFERENCE))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretSource, E> {
        Err(E::custom(NOT_A_REFERENCE))
    }

    fn visit_unit<E: de::Error>(self) -> Result<SecretSource, E> {
        Err(E::custom(NOT_A_REFERENCE))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<SecretSource, A::Error> {
        Err(A::Error::custom(NOT_A_REFERENCE))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<SecretSource, A::Error> {
        Err(A::Error::custom(NOT_A_REFERENCE))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.source {
            SecretSource::Value(_) => SecretSource::Value("[redacted]".into()).serialize(s),
            other => other.serialize(s),
        }
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SecretSource::json_schema(g)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_file_is_read_only_up_to_its_bound() {
        let mut endless = super::Secret {
            value: std::sync::Arc::from(""),
            source: super::SecretSource::File("/dev/zero".into()),
        };
        let err = endless.resolve().expect_err("/dev/zero is no secret");
        assert!(
            err.to_string().contains("holds more than 65536 bytes"),
            "{err}"
        );
    }

    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::inline("hunter2-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-secret");
    }

    #[test]
    fn file_secret_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "abc\n").unwrap();
        let mut s = Secret {
            source: SecretSource::File(path),
            value: Arc::from(""),
        };
        s.resolve().unwrap();
        assert_eq!(s.expose(), "abc");
    }

    #[test]
    fn missing_env_names_the_variable() {
        let mut s = Secret {
            source: SecretSource::Env("WA_GATEWAY_TEST_UNSET_VAR".into()),
            value: Arc::from(""),
        };
        let err = s.resolve().unwrap_err().to_string();
        assert!(err.contains("WA_GATEWAY_TEST_UNSET_VAR"), "{err}");
    }

    #[test]
    fn a_pasted_value_is_refused_without_being_echoed() {
        for yaml in [
            "EAAGpasted",
            "{ env: [EAAGpasted] }",
            "{ env: A, file: EAAGpasted }",
        ] {
            let err = serde_norway::from_str::<Secret>(yaml)
                .unwrap_err()
                .to_string();
            assert!(!err.contains("EAAGpasted"), "{yaml}: {err}");
        }
        let s: Secret = serde_norway::from_str("{ file: /run/token }").unwrap();
        assert_eq!(s.source(), &SecretSource::File("/run/token".into()));
    }

    #[test]
    fn a_stored_reference_waits_for_storage_and_stays_redacted() {
        let mut s: Secret = serde_norway::from_str("{ stored: acme }").unwrap();
        assert_eq!(s.stored_name(), Some("acme"));
        s.resolve().unwrap();
        assert_eq!(s.expose(), "", "parsing alone never fills a stored value");
        s.set_stored_value("EAAGstored-plaintext");
        assert_eq!(s.expose(), "EAAGstored-plaintext");
        for shown in [
            format!("{s:?}"),
            format!("{s}"),
            serde_json::to_string(&s).unwrap(),
        ] {
            assert!(!shown.contains("plaintext"), "{shown}");
        }
        assert_eq!(format!("{s:?}"), "Secret(stored secret acme, redacted)");
    }
}
