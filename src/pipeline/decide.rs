//! What a turn's inbox rows call for (an agent turn, a keyword confirmation, the reply for
//! unsupported messages, holding them for a person, or nothing), decided from facts alone.
//! Executing it is `turn.rs`'s job.

use crate::cloudapi::envelope::MessageType;
use crate::store::Keyword;
use std::future::Future;

/// Whether the number a message came to can answer it; `N` is the number, passed through to
/// the decision when it can.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum NumberState<N> {
    /// No longer in the config.
    Undeclared,
    /// Declared with `enabled: false`.
    Disabled,
    /// Its connection to Meta is broken (see `reconcile`).
    Disconnected,
    /// Ready to answer.
    Ready(N),
}

/// The facts a turn is decided on, taken from its first row and its number.
#[derive(Debug)]
pub(super) struct Facts<'a, N> {
    pub number: NumberState<N>,
    /// The number's `policies.reactions_start_turn`.
    pub reactions_start_turn: bool,
    /// The compliance keyword the row is, kept by its commit only when it changed the
    /// customer's opt-out state.
    pub keyword: Option<&'a Keyword>,
    /// Meta's message type.
    pub msg_type: &'a MessageType,
}

/// What a turn's rows call for.
#[derive(Debug, PartialEq)]
pub(super) enum Decision<'a, N> {
    /// Nothing: the rows are closed as skipped.
    Skip(SkipReason),
    /// Confirm the opt-out or opt-in the keyword recorded; no agent is called.
    Confirm(N, &'a Keyword),
    /// Answer with the number's reply for unsupported messages, if it has one.
    Unsupported(N),
    /// The conversation is paused for a person: the rows are kept as its history (and marked
    /// read), but no agent is called and nothing is sent.
    Paused(N),
    /// Call the agent.
    AgentTurn(N),
}

/// Why a turn answers nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SkipReason {
    Undeclared,
    Disabled,
    Disconnected,
    OptedOut,
    /// A reaction, on a number whose reactions do not start a turn.
    Reaction,
    /// A system message or a revoke.
    NotCustomerTurn,
}

impl SkipReason {
    /// The detail recorded on the skipped rows.
    pub fn detail(self) -> &'static str {
        match self {
            SkipReason::Undeclared => "number no longer declared",
            SkipReason::Disabled => "number disabled",
            SkipReason::Disconnected => "number disconnected",
            SkipReason::OptedOut => "customer opted out",
            SkipReason::Reaction => "reaction (policies.reactions_start_turn is off)",
            SkipReason::NotCustomerTurn => "not a customer turn",
        }
    }
}

/// What the rows described by `facts` call for. `opted_out` (whether the customer opted out of
/// the number) and `paused` (whether the conversation is paused for a person) are awaited only
/// when the answer matters, since reading them may cost a database read; `None` from either
/// (shutting down) gives `None`: the turn is left for the next start. A keyword is confirmed
/// even in a paused conversation: opting out never waits for a person.
pub(super) async fn decide<'a, N>(
    facts: Facts<'a, N>,
    opted_out: impl Future<Output = Option<bool>>,
    paused: impl Future<Output = Option<bool>>,
) -> Option<Decision<'a, N>> {
    let number = match facts.number {
        NumberState::Undeclared => return Some(Decision::Skip(SkipReason::Undeclared)),
        NumberState::Disabled => return Some(Decision::Skip(SkipReason::Disabled)),
        NumberState::Disconnected => return Some(Decision::Skip(SkipReason::Disconnected)),
        NumberState::Ready(number) => number,
    };
    // A keyword that changed the customer's opt-out state when it was committed: confirm it.
    if let Some(keyword) = facts.keyword {
        return Some(Decision::Confirm(number, keyword));
    }
    if opted_out.await? {
        return Some(Decision::Skip(SkipReason::OptedOut));
    }
    // Messages that are not a customer turn.
    Some(match facts.msg_type {
        MessageType::Reaction if !facts.reactions_start_turn => {
            Decision::Skip(SkipReason::Reaction)
        }
        MessageType::System | MessageType::Revoke => Decision::Skip(SkipReason::NotCustomerTurn),
        _ if paused.await? => Decision::Paused(number),
        MessageType::Unsupported => Decision::Unsupported(number),
        _ => Decision::AgentTurn(number),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OptAction;
    use std::cell::Cell;

    #[test]
    fn what_rows_call_for() {
        let stop = Keyword {
            action: OptAction::Stop,
            keyword: "STOP".into(),
        };
        use Decision::*;
        use NumberState::*;
        // (number, reactions_start_turn, keyword, type, opted out, decision, opt-out read)
        type Case<'a> = (
            NumberState<()>,
            bool,
            Option<&'a Keyword>,
            MessageType,
            Option<bool>,
            Option<Decision<'a, ()>>,
            bool,
        );
        let not_paused = || async { Some(false) };
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (Undeclared, false, None, MessageType::Text, Some(false), Some(Skip(SkipReason::Undeclared)), false),
            (Disabled, false, Some(&stop), MessageType::Text, Some(false), Some(Skip(SkipReason::Disabled)), false),
            (Disconnected, false, None, MessageType::Text, Some(true), Some(Skip(SkipReason::Disconnected)), false),
            (Ready(()), false, Some(&stop), MessageType::Text, Some(true), Some(Confirm((), &stop)), false),
            (Ready(()), false, None, MessageType::Text, Some(false), Some(AgentTurn(())), true),
            (Ready(()), false, None, MessageType::Text, Some(true), Some(Skip(SkipReason::OptedOut)), true),
            (Ready(()), false, None, MessageType::Reaction, Some(true), Some(Skip(SkipReason::OptedOut)), true),
            (Ready(()), false, None, MessageType::Reaction, Some(false), Some(Skip(SkipReason::Reaction)), true),
            (Ready(()), true, None, MessageType::Reaction, Some(false), Some(AgentTurn(())), true),
            (Ready(()), true, None, MessageType::System, Some(false), Some(Skip(SkipReason::NotCustomerTurn)), true),
            (Ready(()), true, None, MessageType::Revoke, Some(false), Some(Skip(SkipReason::NotCustomerTurn)), true),
            (Ready(()), false, None, MessageType::Unsupported, Some(false), Some(Unsupported(())), true),
            (Ready(()), false, None, MessageType::Image, Some(false), Some(AgentTurn(())), true),
            (Ready(()), false, None, MessageType::Text, None, None, true),
        ];
        for (i, (number, reactions, keyword, msg_type, opted_out, want, read)) in
            cases.iter().enumerate()
        {
            let asked = Cell::new(false);
            let facts = Facts {
                number: *number,
                reactions_start_turn: *reactions,
                keyword: *keyword,
                msg_type,
            };
            let got = futures::executor::block_on(decide(
                facts,
                async {
                    asked.set(true);
                    *opted_out
                },
                not_paused(),
            ));
            assert_eq!(&got, want, "case {i}");
            assert_eq!(asked.get(), *read, "case {i}: opt-out read");
        }
    }

    #[test]
    fn a_paused_conversation_gets_no_agent_turn_but_its_keywords_are_confirmed() {
        let stop = Keyword {
            action: OptAction::Stop,
            keyword: "STOP".into(),
        };
        use Decision::*;
        use NumberState::*;
        // (number, keyword, type, opted out, paused, decision, pause read)
        type Case<'a> = (
            NumberState<()>,
            Option<&'a Keyword>,
            MessageType,
            bool,
            Option<bool>,
            Option<Decision<'a, ()>>,
            bool,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (Ready(()), None, MessageType::Text, false, Some(true), Some(Paused(())), true),
            (Ready(()), None, MessageType::Image, false, Some(true), Some(Paused(())), true),
            (Ready(()), None, MessageType::Unsupported, false, Some(true), Some(Paused(())), true),
            (Ready(()), None, MessageType::Text, false, Some(false), Some(AgentTurn(())), true),
            (Ready(()), Some(&stop), MessageType::Text, false, Some(true), Some(Confirm((), &stop)), false),
            (Ready(()), None, MessageType::Text, true, Some(true), Some(Skip(SkipReason::OptedOut)), false),
            (Ready(()), None, MessageType::System, false, Some(true), Some(Skip(SkipReason::NotCustomerTurn)), false),
            (Disabled, None, MessageType::Text, false, Some(true), Some(Skip(SkipReason::Disabled)), false),
            (Ready(()), None, MessageType::Text, false, None, None, true),
        ];
        for (i, (number, keyword, msg_type, opted_out, paused, want, read)) in
            cases.iter().enumerate()
        {
            let asked = Cell::new(false);
            let facts = Facts {
                number: *number,
                reactions_start_turn: false,
                keyword: *keyword,
                msg_type,
            };
            let got =
                futures::executor::block_on(decide(facts, async { Some(*opted_out) }, async {
                    asked.set(true);
                    *paused
                }));
            assert_eq!(&got, want, "case {i}");
            assert_eq!(asked.get(), *read, "case {i}: pause read");
        }
    }
}
