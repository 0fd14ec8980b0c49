//! Conversation policies as pure pieces the pipeline calls: the service window, opt-out
//! keywords, a language hint, and Meta's send limits. No storage and no HTTP here.

pub mod language;
pub mod limits;
pub mod optout;
pub mod window;

pub use language::{
    LanguageHint, detect as detect_language, detect_among as detect_language_among,
};
pub use limits::SendLimiter;
pub use optout::{KeywordHit, KeywordKind, KeywordMatcher};
pub use window::{window_closes_at, window_open};
