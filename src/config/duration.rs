//! A human-readable duration for the config file (`500ms`, `20s`, `24h`), with one grammar for
//! the parser and the JSON Schema's pattern, so that an editor and the gateway agree.

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
        // humantime alone takes a little more than the pattern says (`1 2h` is 12h): the
        // grammar is checked first, so the schema and the parser refuse the same texts.
        let text = s.trim();
        is_duration(text)
            .then(|| humantime::parse_duration(text).ok())
            .flatten()
            .map(Duration)
            .ok_or_else(|| {
                E::custom(format!(
                    "invalid duration {s:?}: write e.g. 500ms, 20s, 5m, 24h or 1day 2h"
                ))
            })
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// humantime's unit names, longest first within each unit.
const UNITS: &[&str] = &[
    "nanos", "nsec", "ns", "usec", "us", "µs", "millis", "msec", "ms", "seconds", "second", "secs",
    "sec", "s", "minutes", "minute", "mins", "min", "m", "hours", "hour", "hrs", "hr", "h", "days",
    "day", "d", "weeks", "week", "wks", "wk", "w", "months", "month", "M", "years", "year", "yrs",
    "yr", "y",
];

/// The grammar of [`PATTERN`] (on trimmed text): `0`, or one or more `NUMBER[.DIGITS] UNIT`
/// spans, spaces allowed between and inside spans.
fn is_duration(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let mut rest = text;
    let mut spans = 0;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let int = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if int == 0 {
            return false;
        }
        rest = &rest[int..];
        if let Some(after) = rest.strip_prefix('.') {
            let frac = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if frac == 0 {
                return false;
            }
            rest = &after[frac..];
        }
        rest = rest.trim_start();
        let word = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == 'µ')
                .len();
        if !UNITS.contains(&&rest[..word]) {
            return false;
        }
        rest = &rest[word..];
        spans += 1;
    }
    spans > 0
}

/// The JSON Schema pattern of a duration: the same grammar as [`is_duration`].
fn pattern() -> String {
    let units = UNITS.join("|");
    format!(r"^\s*(0|\d+(\.\d+)?\s*({units})(\s*\d+(\.\d+)?\s*({units}))*)\s*$")
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as 500ms, 20s, 5m, 24h or 1day 2h (humantime's units).",
            "pattern": pattern(),
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
