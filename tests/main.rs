//! The integration tests, one module a file, built as one test binary (`integration`). When
//! each `tests/*.rs` file was a binary of its own, each compiled `tests/common` again and linked
//! every dependency: about a minute of a clean CI build on two cores. A test's name
//! starts with its file's: `backlog::…`, `replicas::…` (`.config/nextest.toml` selects by them).
//! `secrets.rs` and `telemetry.rs` stay binaries of their own: each installs the process's log
//! subscriber, which would capture (or refuse) the others' under a plain `cargo test`, where a
//! binary's tests share one process.

#[macro_use]
mod common;
mod tools;

mod admin;
mod admin_page;
mod admin_security;
mod agent_contract;
mod audit;
mod backlog;
mod batched;
mod chart;
mod cli;
mod compliance;
mod conversation;
mod crash;
mod doctor;
mod handoff;
mod ingress;
mod leases;
mod limits;
mod media;
mod metrics;
mod onboard;
mod outbound_media;
mod pg_database;
mod quick_start;
mod reconcile;
mod reload;
mod replicas;
mod retention;
mod skip_policy;
mod spine;
mod status_loop;
mod structure;
mod tls;
mod undelivered;
