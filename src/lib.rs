//! wa-gateway: connects AI agents to WhatsApp Business numbers through Meta's Cloud API.
//! The layout follows the data flow: ingress → store → pipeline → agent → outbox → graph, with
//! config, the emulator and the admin listener beside it.

pub mod admin;
pub mod agent;
pub mod app;
pub mod bench;
pub mod cloudapi;
pub mod cluster;
pub mod config;
pub mod customer;
pub mod emulator;
pub mod graph;
pub mod http;
pub mod ids;
pub mod ingress;
pub mod listen;
pub mod metrics;
pub mod onboard;
pub mod outbox;
pub mod pipeline;
pub mod policy;
pub mod reconcile;
pub mod reload;
pub mod reply;
pub mod retention;
pub mod secrets;
pub mod state;
pub mod store;
pub mod text;
pub mod tls;
