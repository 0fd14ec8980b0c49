//! Webhook ingress: the HTTP listener Meta calls, the verification handshake, the signature
//! check and the Cloud API envelope types.

pub mod content;
pub mod envelope;
pub mod intake;
pub mod probe;
pub mod server;
pub mod signature;
