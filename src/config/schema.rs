//! The JSON Schema of gateway.yaml, generated from the model (`wa-gateway schema` prints it).

use super::model::Config;

/// The JSON Schema (draft 2020-12) of the configuration file.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).expect("a schema is plain JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn duration_schema() -> jsonschema::Validator {
        let schema = json_schema();
        jsonschema::validator_for(&schema["$defs"]["Duration"]).expect("Duration compiles")
    }

    fn parses(text: &str) -> bool {
        serde_json::from_value::<super::super::Duration>(serde_json::json!(text)).is_ok()
    }

    #[test]
    fn the_duration_pattern_and_the_parser_agree() {
        let schema = duration_schema();
        for (text, want) in [
            ("1day", true),
            ("0", true),
            ("2 minutes", true),
            ("0s", true),
            ("1h30m", true),
            ("1day 2h 3m 4s 5ms 6us 7ns", true),
            ("4.5s", true),
            ("29d", true),
            ("1 month", true),
            (" 24h ", true),
            ("1M", true),
            ("", false),
            ("5q", false),
            ("h", false),
            ("1.h", false),
            ("1 2h", false),
            ("-1s", false),
            ("24", false),
            ("1d,2h", false),
        ] {
            let json = serde_json::json!(text);
            assert_eq!(schema.is_valid(&json), want, "pattern on {text:?}");
            assert_eq!(parses(text), want, "parser on {text:?}");
        }
    }

    proptest! {
        /// Texts from the grammar's alphabet: whatever the pattern refuses, the parser refuses;
        /// what it accepts, the parser accepts unless the number is too large or too precise
        /// for a Duration (a string pattern cannot bound numbers).
        #[test]
        fn the_parser_takes_nothing_the_pattern_refuses(text in "[0-9 .hmsdayMµn]{0,12}") {
            let matched = duration_schema().is_valid(&serde_json::json!(text));
            let parsed = parses(&text);
            prop_assert!(!parsed || matched, "{text:?} parsed but the pattern refuses it");
            let precise = !text.contains('.') && text.len() < 10;
            prop_assert!(!matched || parsed || !precise, "{text:?} matched but did not parse");
        }
    }
}
