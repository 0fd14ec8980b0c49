//! An agent wrapped in the `policies.agent` resilience: retries with exponential backoff on
//! failures that may pass (timeouts, transport, 5xx), and a circuit breaker per agent.

use super::breaker::{BreakerState, CircuitBreaker};
use super::{Agent, AgentError, Answer, Turn};
use crate::config::AgentPolicy;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// Why a resilient call gave no answer; the pipeline then sends the fallback reply.
#[derive(Debug, thiserror::Error)]
pub enum AgentFailure {
    #[error(
        "agent {agent} is failing: its circuit breaker is open for {retry_in:?} more, calls fail fast until then"
    )]
    CircuitOpen { agent: String, retry_in: Duration },
    #[error("agent {agent} failed after {attempts} attempt(s): {source}")]
    Failed {
        agent: String,
        attempts: u32,
        source: AgentError,
    },
}

impl AgentFailure {
    /// A bounded label for metrics: `circuit_open` or the last error's label.
    pub fn label(&self) -> &'static str {
        match self {
            AgentFailure::CircuitOpen { .. } => "circuit_open",
            AgentFailure::Failed { source, .. } => source.label(),
        }
    }
}

/// One configured agent with its retry policy and its breaker.
#[derive(Debug)]
pub struct ResilientAgent {
    agent: Agent,
    name: String,
    policy: AgentPolicy,
    breaker: CircuitBreaker,
}

impl ResilientAgent {
    /// Wraps `agent` (called `name` in the config) with a closed breaker.
    pub fn new(name: impl Into<String>, agent: Agent, policy: AgentPolicy) -> Self {
        let breaker = CircuitBreaker::new(policy.breaker_failures, policy.breaker_cooldown.get());
        Self {
            agent,
            name: name.into(),
            policy,
            breaker,
        }
    }

    /// The agent's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connector being wrapped.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The breaker's state now, for metrics and the status page.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Asks the agent for its answer to `turn`, retrying what may pass (an empty answer is "no
    /// reply"). One call, whatever its retries, counts once towards the breaker.
    pub async fn call(&self, turn: &Turn) -> Result<Answer, AgentFailure> {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|retry_in| AgentFailure::CircuitOpen {
                agent: self.name.clone(),
                retry_in,
            })?;
        let mut delays = self.delays();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.agent.reply(turn).await {
                Ok(answer) => {
                    permit.success();
                    return Ok(answer);
                }
                Err(e) => e,
            };
            match delays.next().filter(|_| error.is_retryable()) {
                Some(delay) => {
                    tracing::info!(agent = %self.name, attempts, ?delay, error = %error, "agent call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    permit.failure();
                    return Err(AgentFailure::Failed {
                        agent: self.name.clone(),
                        attempts,
                        source: error,
                    });
                }
            }
        }
    }

    /// `retries` delays from `retry_backoff`, doubling, with jitter so that conversations
    /// waiting on the same failing agent do not retry in lockstep.
    fn delays(&self) -> impl Iterator<Item = Duration> {
        let first = self.policy.retry_backoff.get();
        ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(first.saturating_mul(16))
            .with_max_times(self.policy.retries as usize)
            .with_jitter()
            .build()
    }
}
