//! Splits WhatsApp-formatted text into parts within a character limit, cutting at the best
//! boundary that breaks no grapheme, formatting span or URL. It changes nothing but whitespace
//! at the cuts and the fences that close and reopen a code block split across parts.

use linkify::LinkFinder;
use unicode_segmentation::UnicodeSegmentation;

const FENCE: &str = "```";
/// `"\n```"` closing a part, or `"```\n"` reopening the next one.
const FENCE_CHARS: usize = 4;
/// Smallest limit honoured: a part inside a split code block spends 8 characters on fences.
const MIN_LIMIT: usize = 16;
/// Grapheme clusters longer than this (only seen in abuse such as Zalgo text) are cut between
/// scalar values, so that every unit fits in a part whatever the fences cost.
const MAX_UNIT_CHARS: usize = 8;
const TERMINALS: &[char] = &['.', '!', '?', '…', '。', '！', '？', '؟', '۔', '।'];
const CLOSERS: &[char] = &['*', '_', '~', '`', ')', ']', '"', '\'', '”', '’', '»', '」'];

/// Splits WhatsApp-formatted text into parts of at most `max_chars` characters (Meta counts
/// characters; treat it as Unicode scalar values, and never cut inside a grapheme cluster).
///
/// Prefers paragraph boundaries, then line and sentence ends, then word boundaries; never splits
/// inside a formatting span or a URL that fits in a part; a ``` block that must be split is closed
/// at the end of one part and reopened in the next; a token longer than a part is hard-cut at a
/// grapheme boundary. Limits below 16 are raised to 16. Returns no parts for blank text.
pub fn split(text: &str, max_chars: usize) -> Vec<String> {
    let max = max_chars.max(MIN_LIMIT);
    // ASCII that fits (a byte is a character, a character a grapheme cluster, but for CR LF,
    // which is whitespace either way) is one part without its surrounding whitespace.
    if text.is_ascii() && text.len() <= max {
        let part = text.trim();
        return if part.is_empty() {
            Vec::new()
        } else {
            vec![part.to_owned()]
        };
    }
    by_layout(text, max)
}

/// [`split`] without its shortcut for short ASCII text.
pub(super) fn by_layout(text: &str, max: usize) -> Vec<String> {
    Layout::new(text, max).parts()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Code {
    Outside,
    /// Strictly inside a block's content: a cut here must close and reopen the block.
    Inside,
    /// Inside a fence, or at the very edge of a block's content: no cut.
    Blocked,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Word,
    Sentence,
    Line,
    Paragraph,
}

/// A cut at a whitespace run: the part ends at boundary `end`, the next starts at `next`.
struct Break {
    end: usize,
    next: usize,
    rank: Rank,
}

/// The text as units (grapheme clusters) with, at each boundary between units, what a cut there
/// would break.
struct Layout<'t> {
    text: &'t str,
    max: usize,
    /// Byte offset of each boundary; `bounds[k]..bounds[k + 1]` is unit `k`.
    bounds: Vec<usize>,
    /// Characters before each boundary.
    chars: Vec<usize>,
    space: Vec<bool>,
    code: Vec<Code>,
    /// Boundaries strictly inside a formatting span or URL short enough to move whole.
    blocked: Vec<bool>,
    breaks: Vec<Break>,
}

impl<'t> Layout<'t> {
    fn new(text: &'t str, max: usize) -> Self {
        let mut bounds = Vec::new();
        for (at, grapheme) in text.grapheme_indices(true) {
            if grapheme.chars().count() > MAX_UNIT_CHARS {
                bounds.extend(grapheme.char_indices().map(|(i, _)| at + i));
            } else {
                bounds.push(at);
            }
        }
        bounds.push(text.len());
        let mut chars = vec![0; bounds.len()];
        for k in 1..bounds.len() {
            chars[k] = chars[k - 1] + text[bounds[k - 1]..bounds[k]].chars().count();
        }
        let space = (0..bounds.len() - 1)
            .map(|k| {
                text[bounds[k]..bounds[k + 1]]
                    .chars()
                    .all(char::is_whitespace)
            })
            .collect();
        let mut layout = Layout {
            text,
            max,
            code: vec![Code::Outside; bounds.len()],
            blocked: vec![false; bounds.len()],
            bounds,
            chars,
            space,
            breaks: Vec::new(),
        };
        let literal = layout.mark_code_blocks();
        let literal = layout.mark_urls(literal);
        layout.mark_spans(literal);
        layout.find_breaks();
        layout
    }

    fn units(&self) -> usize {
        self.bounds.len() - 1
    }

    fn unit(&self, k: usize) -> &'t str {
        &self.text[self.bounds[k]..self.bounds[k + 1]]
    }

    fn width(&self, from: usize, to: usize) -> usize {
        self.chars[to] - self.chars[from]
    }

    /// Pairs ``` fences into blocks; returns which units are code (never formatting markers).
    fn mark_code_blocks(&mut self) -> Vec<bool> {
        let n = self.units();
        let mut fences = Vec::new();
        let mut k = 0;
        while k + 3 <= n {
            if (k..k + 3).all(|i| self.unit(i) == "`") {
                fences.push(k);
                k += 3;
            } else {
                k += 1;
            }
        }
        let mut literal = vec![false; n];
        for pair in fences.chunks_exact(2) {
            let (open, close) = (pair[0], pair[1]);
            literal[open..close + 3].iter_mut().for_each(|l| *l = true);
            for b in open + 1..close + 3 {
                self.code[b] = if b > open + 3 && b < close {
                    Code::Inside
                } else {
                    Code::Blocked
                };
            }
        }
        literal
    }

    /// Keeps URLs whole; their `_` and `~` are not formatting.
    fn mark_urls(&mut self, mut literal: Vec<bool>) -> Vec<bool> {
        let mut finder = LinkFinder::new();
        finder.url_must_have_scheme(false);
        let mut ranges = Vec::new();
        for link in finder.links(self.text) {
            let from = self.bounds.partition_point(|&b| b < link.start());
            let to = self
                .bounds
                .partition_point(|&b| b < link.end())
                .min(self.units());
            if from < to && !literal[from..to].iter().any(|&l| l) {
                literal[from..to].iter_mut().for_each(|l| *l = true);
                ranges.push((from, to));
            }
        }
        for (from, to) in ranges {
            self.block(from + 1, to - 1, to);
        }
        literal
    }

    /// Blocks boundaries `first..=last` when the thing spanning units up to `end` fits in a part.
    fn block(&mut self, first: usize, last: usize, end: usize) {
        if self.width(first - 1, end) <= self.max {
            self.blocked[first..=last]
                .iter_mut()
                .for_each(|b| *b = true);
        }
    }

    /// Finds WhatsApp's spans on each line: `` `code` `` first, then `*`, `_` and `~`, which
    /// open before a non-space and close after one, away from letters and digits outside.
    fn mark_spans(&mut self, mut literal: Vec<bool>) {
        let n = self.units();
        let mut line = vec![0; n];
        for k in 1..n {
            line[k] = line[k - 1] + usize::from(self.unit(k - 1).contains('\n'));
        }
        let ticks: Vec<usize> = (0..n)
            .filter(|&k| !literal[k] && self.unit(k) == "`")
            .collect();
        let mut spans = Vec::new();
        let mut i = 0;
        while i + 1 < ticks.len() {
            if line[ticks[i]] == line[ticks[i + 1]] {
                literal[ticks[i]..=ticks[i + 1]]
                    .iter_mut()
                    .for_each(|l| *l = true);
                spans.push((ticks[i], ticks[i + 1]));
                i += 2;
            } else {
                i += 1;
            }
        }
        let word = |k: usize| self.unit(k).starts_with(char::is_alphanumeric);
        for marker in ["*", "_", "~"] {
            let is_marker = |k: usize| !literal[k] && self.unit(k) == marker;
            let closers: Vec<usize> = (1..n)
                .filter(|&k| is_marker(k) && !self.space[k - 1] && (k + 1 == n || !word(k + 1)))
                .collect();
            for open in (0..n.saturating_sub(1)).filter(|&k| is_marker(k) && !self.space[k + 1]) {
                if open > 0 && word(open - 1) {
                    continue;
                }
                let at = closers.partition_point(|&c| c < open + 2);
                if let Some(&close) = closers.get(at).filter(|&&c| line[c] == line[open]) {
                    spans.push((open, close));
                }
            }
        }
        for (open, close) in spans {
            self.block(open + 1, close, close + 1);
        }
    }

    /// Collects the whitespace runs between words as candidate cuts, ranked by what they end.
    fn find_breaks(&mut self) {
        let n = self.units();
        let mut k = 0;
        while k < n {
            if !self.space[k] {
                k += 1;
                continue;
            }
            let start = k;
            while k < n && self.space[k] {
                k += 1;
            }
            if start == 0 || k == n {
                continue;
            }
            let run = &self.text[self.bounds[start]..self.bounds[k]];
            let newlines = run.matches('\n').count();
            let before = self.text[..self.bounds[start]].trim_end_matches(CLOSERS);
            let rank = match newlines {
                0 if before.ends_with(TERMINALS) => Rank::Sentence,
                0 => Rank::Word,
                1 => Rank::Line,
                _ => Rank::Paragraph,
            };
            let mut next = k;
            if rank >= Rank::Line
                && self.code[start] == Code::Inside
                && self.code[k] == Code::Inside
            {
                // Keep a code line's indentation at the start of the next part.
                let last_newline = (start..k).rev().find(|&u| self.unit(u).contains('\n'));
                next = last_newline.map_or(k, |u| u + 1);
            }
            if self.code[start] != Code::Blocked && self.code[next] != Code::Blocked {
                self.breaks.push(Break {
                    end: start,
                    next,
                    rank,
                });
            }
        }
    }

    fn parts(&self) -> Vec<String> {
        let n = self.units();
        let last = (0..n).rev().find(|&k| !self.space[k]).map_or(0, |k| k + 1);
        let mut pos = 0;
        let mut reopen = false;
        let mut parts = Vec::new();
        loop {
            if !reopen {
                while pos < last && self.space[pos] {
                    pos += 1;
                }
            }
            if pos >= last {
                return parts;
            }
            let open = if reopen { FENCE_CHARS } else { 0 };
            let mut part = String::new();
            if reopen {
                part.push_str(FENCE);
                part.push('\n');
            }
            if self.width(pos, last) + open <= self.max {
                part.push_str(&self.text[self.bounds[pos]..self.bounds[last]]);
                parts.push(part);
                return parts;
            }
            let (end, next) = self
                .choose(pos, open, true)
                .or_else(|| self.choose(pos, open, false))
                .unwrap_or((pos + 1, pos + 1));
            part.push_str(&self.text[self.bounds[pos]..self.bounds[end]]);
            reopen = self.code[end] == Code::Inside;
            if reopen {
                part.push('\n');
                part.push_str(FENCE);
            }
            parts.push(part);
            pos = next;
        }
    }

    /// The best cut for a part starting at unit `pos`, as (end, next start). With `strict`
    /// off, spans and URLs may be cut: they overlap so that no strict cut fits.
    fn choose(&self, pos: usize, open: usize, strict: bool) -> Option<(usize, usize)> {
        let fits = |end: usize| {
            let close = if self.code[end] == Code::Inside {
                FENCE_CHARS
            } else {
                0
            };
            self.width(pos, end) + open + close <= self.max
        };
        let allowed = |end: usize| !(strict && self.blocked[end]) && fits(end);
        let first = self.breaks.partition_point(|b| b.end <= pos);
        let window = self.breaks[first..]
            .iter()
            .take_while(|b| self.width(pos, b.end) + open <= self.max)
            .filter(|b| allowed(b.end));
        let mut best: [Option<&Break>; 4] = [None; 4];
        for candidate in window {
            for slot in &mut best[..=candidate.rank as usize] {
                *slot = Some(candidate);
            }
        }
        // Good boundaries win only if they fill half a part; otherwise take the last word end.
        let half = (self.max - open) / 2;
        let good = [Rank::Paragraph, Rank::Line, Rank::Sentence]
            .iter()
            .filter_map(|&rank| best[rank as usize])
            .find(|b| self.width(pos, b.end) >= half);
        if let Some(cut) = good.or(best[Rank::Word as usize]) {
            return Some((cut.end, cut.next));
        }
        let reach = self
            .chars
            .partition_point(|&c| c <= self.chars[pos] + self.max - open);
        (pos + 1..reach.min(self.units()))
            .rev()
            .find(|&b| {
                !self.space[b - 1] && !self.space[b] && self.code[b] != Code::Blocked && allowed(b)
            })
            .map(|b| (b, b))
    }
}
