//! A human-readable duration for the config file (`500ms`, `20s`, `24h`).

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// A duration written as `500ms`, `20s`, `5m`, `24h` (humantime syntax).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// `n` seconds.
    pub const fn from_secs(n: u64) -> Self {
        Self(std::time::Duration::from_secs(n))
    }

    /// `n` milliseconds.
    pub const fn from_millis(n: u64) -> Self {
        Self(std::time::Duration::from_millis(n))
    }

    /// The standard-library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(DurationVisitor)
    }
}

/// A visitor rather than `String::deserialize` + `map_err`: an error raised while the scalar is
/// being visited carries the scalar's own position and field path.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 500ms, 20s, 5m or 24h")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|_| {
                E::custom(format!(
                    "invalid duration {s:?}: write e.g. 500ms, 20s, 5m, 24h"
                ))
            })
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as 500ms, 20s, 5m or 24h.",
            "pattern": "^\\s*\\d+(\\.\\d+)?\\s*(ns|us|ms|s|sec|m|min|h|hr|d)(\\s*\\d+\\s*(ns|us|ms|s|sec|m|min|h|hr|d))*\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humantime_and_names_the_bad_text() {
        let d: Duration = serde_norway::from_str("1m 30s").unwrap();
        assert_eq!(d, Duration::from_secs(90));
        let err = serde_norway::from_str::<Duration>("5q")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration \"5q\""), "{err}");
    }
}
