//! wa-gateway: connects AI agents to WhatsApp Business numbers through Meta's Cloud API.

pub mod config;
pub mod emulator;
pub mod ids;
pub mod ingress;
