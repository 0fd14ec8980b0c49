//! Configuration: the gateway.yaml model, loading with file:line:column diagnostics, secret
//! references and the JSON Schema. A `Config` returned by `load` is validated and its secrets resolved.

pub mod duration;
pub mod model;
pub mod secret;

pub use duration::Duration;
pub use model::*;
pub use secret::{Secret, SecretSource};
