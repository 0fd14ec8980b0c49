//! Webhook ingress: the HTTP listener Meta calls (verification handshake and signed POSTs), the
//! body intake limits and the Test Connection probe. The wire format itself lives in `cloudapi`.

mod echoes;
pub mod intake;
pub mod probe;
pub mod server;
