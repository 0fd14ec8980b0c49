//! Shapes an agent's reply for WhatsApp: Markdown becomes WhatsApp formatting, then parts within
//! Meta's text limit. Pure functions of the text; sending them belongs to the outbox.

mod markdown;
mod split;
#[cfg(test)]
mod tests;

pub use markdown::to_whatsapp;
pub use split::split;

use linkify::{LinkFinder, LinkKind};

/// Meta's limit on a text message body, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// Whether the text holds a URL (sets Meta's preview_url).
pub fn has_url(text: &str) -> bool {
    // Meta previews only links with a scheme, so bare domains do not count, and a text without
    // a colon has none.
    text.contains(':') && finds_url(text)
}

fn finds_url(text: &str) -> bool {
    let mut finder = LinkFinder::new();
    finder.kinds(&[LinkKind::Url]);
    finder.links(text).next().is_some()
}

/// The whole pipeline: convert, then split at Meta's 4096-character limit. Empty when the reply
/// holds nothing to send.
pub fn shape(markdown: &str) -> Vec<String> {
    split(&to_whatsapp(markdown), MAX_TEXT_CHARS)
}
