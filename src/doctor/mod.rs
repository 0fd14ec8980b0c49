//! Diagnostics of a number, read-only: Test Connection's six checks (`connection`), run from the
//! admin API's Test Connection button and from the `test-connection` and `doctor` commands
//! (`cli`). It reads Meta, the agent and the webhook listener; it changes nothing anywhere.

pub mod cli;
pub mod connection;
