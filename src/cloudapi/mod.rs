//! Meta's WhatsApp Cloud API wire format: the one home of what the gateway sends and receives.

pub mod outbound;
