//! Meta's limits on an outbound message, checked before a reply is queued (the gateway) and when
//! a send arrives (the emulator): a message that passes is one Meta takes. Breaking one is
//! Meta's error 131009 (parameter value not valid).

use super::Message;
use super::content::{Action, Button, Content, CtaUrl, Header, Interactive, Media, MediaKind};
use std::collections::HashSet;

/// Meta's limit on a text message body, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// A media caption.
pub const MAX_CAPTION_CHARS: usize = 1024;
/// The body of reply buttons or a call-to-action message.
pub const MAX_BUTTONS_BODY_CHARS: usize = 1024;
/// The body of a list message.
pub const MAX_LIST_BODY_CHARS: usize = 4096;
/// An interactive header or footer text.
pub const MAX_HEADER_CHARS: usize = 60;
/// Reply buttons in one message.
pub const MAX_BUTTONS: usize = 3;
/// A reply button's title, a list's button label, a call-to-action's display text.
pub const MAX_BUTTON_TITLE_CHARS: usize = 20;
/// A reply button's id.
pub const MAX_BUTTON_ID_CHARS: usize = 256;
/// Sections of a list, and rows in all of its sections together.
pub const MAX_LIST_ROWS: usize = 10;
/// A list section's or row's title.
pub const MAX_ROW_TITLE_CHARS: usize = 24;
/// A list row's description.
pub const MAX_ROW_DESCRIPTION_CHARS: usize = 72;
/// A list row's id.
pub const MAX_ROW_ID_CHARS: usize = 200;

/// A value of an outbound message that Meta would refuse, and where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct LimitError {
    /// The field, as a path in Meta's JSON (`interactive.action.buttons[3]`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl LimitError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        LimitError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

type Checked = Result<(), LimitError>;

impl Message {
    /// Whether Meta takes this message: every limit of its type.
    pub fn check(&self) -> Checked {
        match &self.content {
            Content::Text { text } => text_field("text.body", &text.body, MAX_TEXT_CHARS),
            Content::Interactive { interactive } => check_interactive(interactive),
            Content::Location { location } => {
                in_range("location.latitude", location.latitude, 90.0)?;
                in_range("location.longitude", location.longitude, 180.0)
            }
            Content::Reaction { reaction } => {
                if self.context.is_some() {
                    return Err(LimitError::new("context", "a reaction quotes no message"));
                }
                required("reaction.message_id", &reaction.message_id)?;
                check_emoji(&reaction.emoji)
            }
            media => match media.as_media() {
                Some((kind, m)) => check_media(kind, m),
                None => Ok(()),
            },
        }
    }
}

fn check_media(kind: MediaKind, media: &Media) -> Checked {
    let name = kind.as_str();
    match (&media.id, &media.link) {
        (Some(id), None) => required(&format!("{name}.id"), id)?,
        (None, Some(link)) => check_url(&format!("{name}.link"), link)?,
        _ => {
            return Err(LimitError::new(
                name,
                "exactly one of `id` and `link` is required",
            ));
        }
    }
    if let Some(caption) = &media.caption {
        if !kind.takes_caption() {
            return Err(LimitError::new(
                format!("{name}.caption"),
                format!("{name} messages take no caption"),
            ));
        }
        at_most(&format!("{name}.caption"), caption, MAX_CAPTION_CHARS)?;
    }
    if media.filename.is_some() && kind != MediaKind::Document {
        return Err(LimitError::new(
            format!("{name}.filename"),
            "only documents take a file name",
        ));
    }
    Ok(())
}

fn check_interactive(i: &Interactive) -> Checked {
    let body_max = match i.action {
        Action::List(_) => MAX_LIST_BODY_CHARS,
        Action::Button(_) | Action::CtaUrl(_) => MAX_BUTTONS_BODY_CHARS,
    };
    text_field("interactive.body.text", &i.body.text, body_max)?;
    if let Some(Header::Text { text }) = &i.header {
        text_field("interactive.header.text", text, MAX_HEADER_CHARS)?;
    }
    if let Some(footer) = &i.footer {
        text_field("interactive.footer.text", &footer.text, MAX_HEADER_CHARS)?;
    }
    match &i.action {
        Action::Button(b) => check_buttons(&b.buttons),
        Action::List(l) => check_list(l),
        Action::CtaUrl(CtaUrl::CtaUrl { display_text, url }) => {
            let at = "interactive.action.parameters";
            text_field(
                &format!("{at}.display_text"),
                display_text,
                MAX_BUTTON_TITLE_CHARS,
            )?;
            check_url(&format!("{at}.url"), url)
        }
    }
}

fn check_buttons(buttons: &[Button]) -> Checked {
    let at = "interactive.action.buttons";
    if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
        return Err(LimitError::new(
            at,
            format!("{} buttons; Meta takes 1 to {MAX_BUTTONS}", buttons.len()),
        ));
    }
    let (mut ids, mut titles) = (HashSet::new(), HashSet::new());
    for (n, Button::Reply { reply }) in buttons.iter().enumerate() {
        let field = format!("{at}[{n}].reply");
        text_field(
            &format!("{field}.title"),
            &reply.title,
            MAX_BUTTON_TITLE_CHARS,
        )?;
        text_field(&format!("{field}.id"), &reply.id, MAX_BUTTON_ID_CHARS)?;
        unique(&format!("{field}.id"), &mut ids, &reply.id)?;
        unique(&format!("{field}.title"), &mut titles, &reply.title)?;
    }
    Ok(())
}

fn check_list(list: &super::content::List) -> Checked {
    let at = "interactive.action";
    text_field(
        &format!("{at}.button"),
        &list.button,
        MAX_BUTTON_TITLE_CHARS,
    )?;
    let rows: usize = list.sections.iter().map(|s| s.rows.len()).sum();
    if list.sections.is_empty() || list.sections.len() > MAX_LIST_ROWS {
        return Err(LimitError::new(
            format!("{at}.sections"),
            format!(
                "{} sections; Meta takes 1 to {MAX_LIST_ROWS}",
                list.sections.len()
            ),
        ));
    }
    if rows == 0 || rows > MAX_LIST_ROWS {
        return Err(LimitError::new(
            format!("{at}.sections"),
            format!("{rows} rows in all; Meta takes 1 to {MAX_LIST_ROWS}"),
        ));
    }
    let mut ids = HashSet::new();
    for (s, section) in list.sections.iter().enumerate() {
        let field = format!("{at}.sections[{s}]");
        match &section.title {
            Some(title) => text_field(&format!("{field}.title"), title, MAX_ROW_TITLE_CHARS)?,
            None if list.sections.len() > 1 => {
                return Err(LimitError::new(
                    format!("{field}.title"),
                    "required when a list has several sections",
                ));
            }
            None => {}
        }
        for (r, row) in section.rows.iter().enumerate() {
            let field = format!("{field}.rows[{r}]");
            text_field(&format!("{field}.id"), &row.id, MAX_ROW_ID_CHARS)?;
            text_field(&format!("{field}.title"), &row.title, MAX_ROW_TITLE_CHARS)?;
            if let Some(d) = &row.description {
                at_most(
                    &format!("{field}.description"),
                    d,
                    MAX_ROW_DESCRIPTION_CHARS,
                )?;
            }
            unique(&format!("{field}.id"), &mut ids, &row.id)?;
        }
    }
    Ok(())
}

/// A required text of 1 to `max` characters, not only whitespace.
fn text_field(field: &str, value: &str, max: usize) -> Checked {
    required(field, value)?;
    at_most(field, value, max)
}

fn required(field: &str, value: &str) -> Checked {
    if value.trim().is_empty() {
        return Err(LimitError::new(field, "must not be empty"));
    }
    Ok(())
}

fn at_most(field: &str, value: &str, max: usize) -> Checked {
    let n = value.chars().count();
    if n > max {
        return Err(LimitError::new(
            field,
            format!("{n} characters; Meta takes at most {max}"),
        ));
    }
    Ok(())
}

fn unique<'a>(field: &str, seen: &mut HashSet<&'a str>, value: &'a str) -> Checked {
    if !seen.insert(value) {
        return Err(LimitError::new(
            field,
            format!("{value:?} appears twice; Meta needs each one unique in the message"),
        ));
    }
    Ok(())
}

fn in_range(field: &str, value: f64, limit: f64) -> Checked {
    if !(value.is_finite() && (-limit..=limit).contains(&value)) {
        return Err(LimitError::new(
            field,
            format!("{value} is not between -{limit} and {limit}"),
        ));
    }
    Ok(())
}

fn check_url(field: &str, value: &str) -> Checked {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        _ => Err(LimitError::new(
            field,
            format!("{value:?} is not an http(s) URL"),
        )),
    }
}

/// One emoji (a single grapheme cluster that is not plain ASCII), or empty to take a reaction
/// back.
fn check_emoji(emoji: &str) -> Checked {
    use unicode_segmentation::UnicodeSegmentation;
    if emoji.is_empty() {
        return Ok(());
    }
    let one = emoji.graphemes(true).count() == 1;
    if !one || emoji.is_ascii() {
        return Err(LimitError::new(
            "reaction.emoji",
            format!("{emoji:?} is not one emoji"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn check(message: Value) -> Result<(), String> {
        let m: Message = serde_json::from_value(message).expect("parses");
        m.check().map_err(|e| e.to_string())
    }

    fn buttons(n: usize) -> Value {
        let b: Vec<Value> = (0..n)
            .map(|i| json!({ "type": "reply", "reply": { "id": format!("b{i}"), "title": format!("B{i}") } }))
            .collect();
        json!({ "type": "interactive", "interactive": { "type": "button", "body": { "text": "Pick" }, "action": { "buttons": b } } })
    }

    fn list(rows: usize, sections: usize) -> Value {
        let s: Vec<Value> = (0..sections)
            .map(|s| {
                let r: Vec<Value> = (0..rows)
                    .map(|r| json!({ "id": format!("s{s}r{r}"), "title": format!("Row {r}") }))
                    .collect();
                json!({ "title": format!("S{s}"), "rows": r })
            })
            .collect();
        json!({ "type": "interactive", "interactive": { "type": "list", "body": { "text": "Pick" }, "action": { "button": "Open", "sections": s } } })
    }

    #[test]
    fn what_meta_takes_passes() {
        for ok in [
            json!({ "type": "text", "text": { "body": "hi", "preview_url": false } }),
            buttons(1),
            buttons(3),
            list(10, 1),
            list(5, 2),
            json!({ "type": "image", "image": { "link": "https://x.example/a.jpg", "caption": "c" } }),
            json!({ "type": "document", "document": { "id": "123", "filename": "a.pdf" } }),
            json!({ "type": "location", "location": { "latitude": -33.9, "longitude": 151.2 } }),
            json!({ "type": "reaction", "reaction": { "message_id": "wamid.A", "emoji": "👍🏽" } }),
            json!({ "type": "reaction", "reaction": { "message_id": "wamid.A", "emoji": "" } }),
            json!({ "type": "interactive", "interactive": { "type": "cta_url", "body": { "text": "See" },
                    "action": { "name": "cta_url", "parameters": { "display_text": "Open", "url": "https://x.example" } } } }),
        ] {
            assert_eq!(check(ok.clone()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_meta_refuses_names_the_field() {
        let mut long_title = buttons(1);
        long_title["interactive"]["action"]["buttons"][0]["reply"]["title"] = json!("a".repeat(21));
        let mut twice = buttons(2);
        twice["interactive"]["action"]["buttons"][1]["reply"]["id"] = json!("b0");
        let mut untitled = list(2, 2);
        untitled["interactive"]["action"]["sections"][1]
            .as_object_mut()
            .unwrap()
            .remove("title");
        for (bad, says) in [
            (
                buttons(4),
                "interactive.action.buttons: 4 buttons; Meta takes 1 to 3",
            ),
            (buttons(0), "interactive.action.buttons: 0 buttons"),
            (
                long_title,
                "interactive.action.buttons[0].reply.title: 21 characters; Meta takes at most 20",
            ),
            (
                twice,
                "interactive.action.buttons[1].reply.id: \"b0\" appears twice",
            ),
            (list(11, 1), "11 rows in all; Meta takes 1 to 10"),
            (list(6, 2), "12 rows in all"),
            (
                untitled,
                "interactive.action.sections[1].title: required when a list has several sections",
            ),
            (
                json!({ "type": "image", "image": { "id": "1", "link": "https://x.example/a.jpg" } }),
                "image: exactly one of `id` and `link`",
            ),
            (
                json!({ "type": "image", "image": { "link": "ftp://x.example/a.jpg" } }),
                "image.link: \"ftp://x.example/a.jpg\" is not an http(s) URL",
            ),
            (
                json!({ "type": "audio", "audio": { "id": "1", "caption": "c" } }),
                "audio.caption: audio messages take no caption",
            ),
            (
                json!({ "type": "image", "image": { "id": "1", "filename": "a.jpg" } }),
                "image.filename: only documents take a file name",
            ),
            (
                json!({ "type": "location", "location": { "latitude": 91.0, "longitude": 0.0 } }),
                "location.latitude: 91 is not between -90 and 90",
            ),
            (
                json!({ "type": "reaction", "reaction": { "message_id": "wamid.A", "emoji": "ok" } }),
                "reaction.emoji: \"ok\" is not one emoji",
            ),
            (
                json!({ "type": "text", "text": { "body": "a".repeat(MAX_TEXT_CHARS + 1), "preview_url": false } }),
                "text.body: 4097 characters",
            ),
        ] {
            let err = check(bad.clone()).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn stored_interactive_messages_are_metas_json() {
        let m: Message = serde_json::from_value(buttons(1)).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), buttons(1));
        let m: Message = serde_json::from_value(list(2, 2)).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), list(2, 2));
    }
}
