//! wa-gateway: connects AI agents to WhatsApp Business numbers through Meta's Cloud API.

pub mod agent;
pub mod config;
pub mod graph;
pub mod ids;
pub mod ingress;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod state;
pub mod store;
pub mod admin;
pub mod http;
pub mod app;
