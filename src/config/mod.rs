//! Configuration: the gateway.yaml model, loading with file:line:column diagnostics, secret
//! references and the JSON Schema. A `Config` returned by `load` is validated and its secrets resolved.

pub mod cert;
pub mod duration;
pub mod error;
pub mod load;
pub mod locate;
pub mod model;
pub mod policy;
pub mod retention;
pub mod schema;
pub mod secret;
pub mod summary;
pub mod telemetry;
pub mod validate;
pub mod watch;

#[cfg(test)]
mod tests;

pub use duration::Duration;
pub use error::{ConfigError, Diagnostic, Severity};
pub use load::{Checked, Loaded, check, load, load_checked, parse};
pub use model::*;
pub use policy::*;
pub use schema::json_schema;
pub use secret::{Secret, SecretSource};
pub use summary::{offline_skipped, summary};
pub use validate::Reach;
