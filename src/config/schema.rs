//! The JSON Schema of gateway.yaml, generated from the model (`wa-gateway schema` prints it).

use super::model::Config;

/// The JSON Schema (draft 2020-12) of the configuration file.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).expect("a schema is plain JSON")
}
