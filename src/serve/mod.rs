//! What the running gateway shares while it serves: the state every task holds (config snapshot,
//! store, metrics, shutdown), the listeners a reload moves, connection deadlines and TLS slots.
//! Used by ingress, admin, pipeline and outbox; it must not import them, nor `app` above it.

pub mod http;
pub mod listen;
pub mod state;
pub mod tls;
