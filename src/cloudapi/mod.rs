//! Meta's Cloud API wire format, in one home: webhook envelopes, what an agent sees of a message,
//! the webhook signature, the outbound message payloads and the Graph API versions' end dates.
//! It imports nothing above `ids`.

pub mod content;
pub mod envelope;
pub mod outbound;
pub mod signature;
pub mod versions;
