//! The `http` agent API as an OpenAPI 3.1 document (`wa-gateway schema --agent`): the [`Turn`]
//! the gateway POSTs, and the [`Answer`] (or v1's `{"reply": "…"}`) it reads back. The schemas
//! come from the types themselves, so they cannot drift from what is sent and parsed.

use super::{Answer, Handoff, Turn};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// The answer of contract v1, still read: one Markdown text, or none.
#[derive(JsonSchema)]
#[allow(dead_code)] // described, never built: `http.rs` reads v1 and v2 in one pass
struct AnswerV1 {
    /// Markdown; `null` or `""` is no reply.
    reply: Option<String>,
    handoff: Option<Handoff>,
}

/// The OpenAPI document of the agent API. Its schemas sit under `components.schemas`
/// (`Turn`, `Answer`, `AnswerV1` and their parts).
pub fn openapi() -> Value {
    // OpenAPI 3.1 takes JSON Schema 2020-12 as it is (`null` as a type, not 3.0's `nullable`).
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    // Each named type lands in the definitions with its parts; the references are built below.
    generator.subschema_for::<Turn>();
    generator.subschema_for::<Answer>();
    generator.subschema_for::<AnswerV1>();
    let schemas: serde_json::Map<String, Value> = generator.take_definitions(true);
    let reference = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "wa-gateway agent API",
            "version": "2",
            "description": "What the gateway POSTs to an `http` agent for each customer turn, \
                            and what the agent answers. See the README's Agents section.",
        },
        "paths": {
            "/": {
                "post": {
                    "summary": "Answer one customer turn",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": reference("Turn") } },
                    },
                    "responses": {
                        "200": {
                            "description": "The messages to send, in order, and an optional handoff (v2), or one text (v1).",
                            "content": { "application/json": { "schema": {
                                "anyOf": [reference("Answer"), reference("AnswerV1")],
                            } } },
                        },
                        "204": { "description": "No reply." },
                    },
                },
            },
        },
        "components": { "schemas": schemas },
    })
}
