//! Markdown → WhatsApp formatting: walks pulldown-cmark's event stream and re-emits only what
//! WhatsApp renders. It never splits text; the 4096-character limit belongs to `split`.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// Converts an agent's Markdown to WhatsApp formatting.
pub fn to_whatsapp(markdown: &str) -> String {
    if is_plain(markdown) {
        return markdown.to_owned();
    }
    convert(markdown)
}

/// Text in which Markdown can mean nothing, so converting it would give it back unchanged: one
/// line of letters, digits, spaces and sentence punctuation, starting with a letter (no list
/// item, heading, indented code or block quote can start there) and not ending in a space.
/// Most short agent replies are like this; they skip the parser.
fn is_plain(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphabetic)
        && bytes.last() != Some(&b' ')
        && !text.contains("  ")
        && bytes.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b' ' | b','
                        | b'.'
                        | b':'
                        | b';'
                        | b'?'
                        | b'\''
                        | b'!'
                        | b'/'
                        | b'@'
                        | b'%'
                        | b'-'
                )
        })
}

/// The conversion proper, through pulldown-cmark.
pub(super) fn convert(markdown: &str) -> String {
    let mut writer = Writer::default();
    for event in Parser::new_ext(
        markdown,
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES,
    ) {
        writer.event(event);
    }
    writer.finish()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Bold,
    Italic,
    Strike,
}

impl Style {
    fn marker(self) -> char {
        match self {
            Style::Bold => '*',
            Style::Italic => '_',
            Style::Strike => '~',
        }
    }

    /// Nesting order when one span is the whole content of another: bold outermost.
    fn rank(self) -> u8 {
        self as u8
    }
}

enum FrameKind {
    /// `marked` is false when the same style is already open outside: WhatsApp cannot nest a
    /// style in itself, and `*a *b* c*` would close early.
    Style {
        style: Style,
        marked: bool,
    },
    Link {
        url: String,
    },
}

/// An open inline span collecting its rendered content.
struct Frame {
    kind: FrameKind,
    text: String,
    /// The style and inner text of a child span that is, so far, this frame's whole content; lets
    /// `***x***` (emphasis around strong) come out as `*_x_*`.
    sole: Option<(Style, String)>,
}

enum Container {
    Quote,
    List { next: Option<u64>, items: usize },
    Item { marker: String, used: bool },
}

#[derive(Default)]
struct Writer {
    lines: Vec<String>,
    containers: Vec<Container>,
    frames: Vec<Frame>,
    /// Inline content of the current leaf block, not yet emitted as lines.
    block: String,
    blank_pending: bool,
    code: Option<String>,
    row: Vec<String>,
}

impl Writer {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => match self.code.as_mut() {
                Some(code) => code.push_str(&text),
                None => self.push_text(&text),
            },
            Event::Code(code) => self.push_text(&format!("`{code}`")),
            Event::Html(html) | Event::InlineHtml(html) => self.push_text(&html),
            Event::InlineMath(math) | Event::DisplayMath(math) => self.push_text(&math),
            Event::FootnoteReference(label) => self.push_text(&format!("[{label}]")),
            Event::SoftBreak | Event::HardBreak => self.push_text("\n"),
            Event::Rule => self.end_block(),
            Event::TaskListMarker(done) => self.push_text(if done { "[x] " } else { "[ ] " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Emphasis => self.open_style(Style::Italic),
            Tag::Strong => self.open_style(Style::Bold),
            Tag::Strikethrough => self.open_style(Style::Strike),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.open(FrameKind::Link {
                    url: dest_url.to_string(),
                })
            }
            Tag::Heading { .. } => {
                self.flush();
                self.open_style(Style::Bold);
            }
            Tag::CodeBlock(_) => {
                self.flush();
                self.code = Some(String::new());
            }
            Tag::BlockQuote(_) => {
                self.flush();
                self.containers.push(Container::Quote);
            }
            Tag::List(start) => {
                self.flush();
                if self.in_item() {
                    self.blank_pending = false;
                }
                self.containers.push(Container::List {
                    next: start,
                    items: 0,
                });
            }
            Tag::Item => {
                self.flush();
                let marker = match self.containers.last_mut() {
                    Some(Container::List { next, items }) => {
                        if *items > 0 {
                            self.blank_pending = false;
                        }
                        *items += 1;
                        match next {
                            Some(n) => {
                                let marker = format!("{n}. ");
                                *n = n.saturating_add(1);
                                marker
                            }
                            None => "- ".to_owned(),
                        }
                    }
                    _ => "- ".to_owned(),
                };
                self.containers.push(Container::Item {
                    marker,
                    used: false,
                });
            }
            Tag::TableHead | Tag::TableRow => self.row.clear(),
            _ => self.flush(),
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough => self.close(),
            TagEnd::Link | TagEnd::Image => self.close(),
            TagEnd::Heading(_) => {
                self.close();
                self.end_block();
            }
            TagEnd::CodeBlock => {
                let code = self.code.take().unwrap_or_default();
                self.emit_line("```");
                for line in code.trim_end_matches(['\n', '\r']).split('\n') {
                    self.emit_line(line);
                }
                self.emit_line("```");
                self.blank_pending = true;
            }
            TagEnd::BlockQuote(_) => {
                self.end_block();
                self.containers.pop();
            }
            TagEnd::List(_) => {
                self.flush();
                self.containers.pop();
                self.blank_pending = !self.in_item();
            }
            TagEnd::Item => {
                self.flush();
                self.containers.pop();
            }
            TagEnd::TableCell => {
                let cell = std::mem::take(&mut self.block);
                self.row
                    .push(cell.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                let row = std::mem::take(&mut self.row).join(" | ");
                self.emit_line(&row);
            }
            _ => self.end_block(),
        }
    }

    fn in_item(&self) -> bool {
        self.containers
            .iter()
            .any(|c| matches!(c, Container::Item { .. }))
    }

    fn open_style(&mut self, style: Style) {
        let nested = self
            .frames
            .iter()
            .any(|f| matches!(f.kind, FrameKind::Style { style: s, marked: true } if s == style));
        self.open(FrameKind::Style {
            style,
            marked: !nested,
        });
    }

    fn open(&mut self, kind: FrameKind) {
        self.frames.push(Frame {
            kind,
            text: String::new(),
            sole: None,
        });
    }

    fn close(&mut self) {
        let Some(frame) = self.frames.pop() else {
            return;
        };
        match frame.kind {
            FrameKind::Style {
                style,
                marked: true,
            } => self.close_style(style, frame.text, frame.sole),
            FrameKind::Style { marked: false, .. } => self.push_text(&frame.text),
            FrameKind::Link { url } => {
                let text = frame.text.trim();
                let bare = url.strip_prefix("mailto:").unwrap_or(&url);
                if text.is_empty() || text == url || text == bare {
                    self.push_text(bare);
                } else {
                    self.push_text(&format!("{text} ({url})"));
                }
            }
        }
    }

    fn close_style(&mut self, style: Style, text: String, sole: Option<(Style, String)>) {
        let marker = style.marker();
        let (lead, body, trail) = split_spaces(&text);
        match sole {
            Some((inner, content)) if inner.rank() < style.rank() => {
                let body = format!("{marker}{content}{marker}");
                let outer = inner.marker();
                self.push_child(inner, &body, &format!("{lead}{outer}{body}{outer}{trail}"));
            }
            _ if body.is_empty() || body.contains('\n') => {
                self.push_text(&wrap_lines(&text, marker))
            }
            _ => self.push_child(style, body, &format!("{lead}{marker}{body}{marker}{trail}")),
        }
    }

    /// Appends a rendered styled span whose markers enclose `inner`.
    fn push_child(&mut self, style: Style, inner: &str, rendered: &str) {
        match self.frames.last_mut() {
            Some(frame) => {
                frame.sole = frame
                    .text
                    .trim()
                    .is_empty()
                    .then(|| (style, inner.to_owned()));
                frame.text.push_str(rendered);
            }
            None => self.block.push_str(rendered),
        }
    }

    fn push_text(&mut self, text: &str) {
        match self.frames.last_mut() {
            Some(frame) => {
                if !text.trim().is_empty() {
                    frame.sole = None;
                }
                frame.text.push_str(text);
            }
            None => self.block.push_str(text),
        }
    }

    /// Emits the pending inline content as lines of the current leaf block.
    fn flush(&mut self) {
        let block = std::mem::take(&mut self.block);
        let block = block.trim();
        if block.is_empty() {
            return;
        }
        for line in block.split('\n') {
            self.emit_line(line);
        }
    }

    fn end_block(&mut self) {
        self.flush();
        self.blank_pending = true;
    }

    fn emit_line(&mut self, line: &str) {
        if std::mem::take(&mut self.blank_pending) && !self.lines.is_empty() {
            self.lines.push(String::new());
        }
        let mut prefix = String::new();
        for container in &mut self.containers {
            match container {
                Container::Quote => prefix.push_str("> "),
                Container::List { .. } => {}
                Container::Item { used: true, .. } => prefix.push_str("  "),
                Container::Item { marker, used } => {
                    prefix.push_str(marker);
                    *used = true;
                }
            }
        }
        self.lines.push(prefix + line);
    }

    /// Joins the lines without trailing whitespace and with at most one blank line in a row.
    fn finish(mut self) -> String {
        while let Some(frame) = self.frames.pop() {
            self.push_text(&frame.text);
        }
        self.flush();
        let mut out = String::new();
        let mut blank = false;
        for line in self
            .lines
            .iter()
            .flat_map(|l| l.split('\n'))
            .map(str::trim_end)
        {
            if line.is_empty() {
                blank = !out.is_empty();
                continue;
            }
            if blank {
                out.push('\n');
                blank = false;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
        }
        out
    }
}

/// Splits `text` into leading whitespace, the trimmed body and trailing whitespace.
fn split_spaces(text: &str) -> (&str, &str, &str) {
    let body = text.trim();
    let start = text.len() - text.trim_start().len();
    (&text[..start], body, &text[start + body.len()..])
}

/// Wraps each non-blank line in `marker`, moving surrounding spaces outside: WhatsApp renders a
/// span only when the markers touch the text, and never across a line break.
fn wrap_lines(text: &str, marker: char) -> String {
    text.split('\n')
        .map(|line| match split_spaces(line) {
            (_, "", _) => line.to_owned(),
            (lead, body, trail) => format!("{lead}{marker}{body}{marker}{trail}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
