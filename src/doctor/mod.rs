//! Diagnostics of a number, read-only: Test Connection's six checks (`connection`), run from the
//! admin API's Test Connection button and from the `test-connection` and `doctor` commands
//! (`cli`), and `wa-gateway validate` (`validate`), the configuration file's check. It reads
//! Meta, the agent, the webhook listener and storage; it changes nothing anywhere.

pub mod cli;
pub mod connection;
pub mod validate;
