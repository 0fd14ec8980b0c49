//! The `echo` agent: answers the customer's own text with a prefix, after an optional delay.
//! For demos and tests; it never fails.

use super::Turn;
use std::time::Duration;

/// Replies `{prefix}{text}`; a message without text gets no reply.
#[derive(Clone, Debug)]
pub struct EchoAgent {
    prefix: String,
    delay: Duration,
}

impl EchoAgent {
    /// An echo that waits `delay` ("thinking") before answering.
    pub fn new(prefix: String, delay: Duration) -> Self {
        Self { prefix, delay }
    }

    pub(super) async fn reply(&self, turn: &Turn) -> Option<String> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        turn.message
            .text
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| format!("{}{t}", self.prefix))
    }
}
