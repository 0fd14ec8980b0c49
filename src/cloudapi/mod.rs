//! Meta's Cloud API wire format, in one home: webhook envelopes, what an agent sees of a message
//! and the webhook signature. It speaks the wire and imports nothing above `ids` and `text`.

pub mod content;
pub mod envelope;
pub mod signature;
