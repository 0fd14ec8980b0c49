//! Shapes an agent's reply for WhatsApp: Markdown becomes WhatsApp formatting, then parts within
//! Meta's text limit; the other items of an answer become Meta's messages (`items.rs`). Pure
//! functions; sending them belongs to the outbox.

mod items;
mod markdown;
mod split;
#[cfg(test)]
mod tests;

pub use items::{Outgoing, Refused, Shaped, messages};
pub use markdown::to_whatsapp;
pub use split::split;

use linkify::{LinkFinder, LinkKind};

pub use crate::cloudapi::outbound::MAX_TEXT_CHARS;

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

/// What ends a reply cut at its last allowed part.
pub const ELLIPSIS: char = '…';

/// The whole pipeline: drop NUL characters (no one means to send them, and PostgreSQL text
/// cannot hold them), convert, then split at Meta's 4096-character limit. Empty when the reply
/// holds nothing to send.
pub fn shape(markdown: &str) -> Vec<String> {
    let markdown = crate::text::without_nul(markdown);
    split(&to_whatsapp(&markdown), MAX_TEXT_CHARS)
}

/// Keeps at most `max` parts (at least one); when parts are dropped, the last one kept ends with
/// [`ELLIPSIS`], still within Meta's limit. Returns whether anything was cut.
pub fn limit_parts(parts: &mut Vec<String>, max: usize) -> bool {
    let max = max.max(1);
    if parts.len() <= max {
        return false;
    }
    parts.truncate(max);
    if let Some(last) = parts.last_mut() {
        end_with_ellipsis(last);
    }
    true
}

/// Appends [`ELLIPSIS`] to `part`, dropping whole grapheme clusters (and the whitespace they
/// leave) from its end until it fits in [`MAX_TEXT_CHARS`].
fn end_with_ellipsis(part: &mut String) {
    use unicode_segmentation::UnicodeSegmentation;
    let mut chars = part.chars().count();
    while chars + 1 > MAX_TEXT_CHARS {
        let Some((at, g)) = part.grapheme_indices(true).next_back() else {
            break;
        };
        chars -= g.chars().count();
        part.truncate(at);
    }
    let kept = part.trim_end().len();
    part.truncate(kept);
    part.push(ELLIPSIS);
}
