//! Webhook ingress: the HTTP listener Meta calls (verification handshake and signed POSTs), the
//! body intake limits, the Test Connection probe, and the replay of dead letters through the
//! same path. The wire format itself lives in `cloudapi`.

mod echoes;
pub mod intake;
pub mod probe;
pub mod replay;
pub mod server;
