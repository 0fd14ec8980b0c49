//! An agent's answer items as WhatsApp messages: Markdown converted (and split, for text),
//! media, buttons, lists and the rest in Meta's shape, each checked against Meta's limits before
//! anything is queued. Quoting and addressing are the outbox rows' business.

use crate::agent::{
    ButtonsItem, CtaUrlItem, ListItem, LocationItem, MediaItem, ReplyItem, TextItem,
};
use crate::cloudapi::outbound::{
    Action, Body, Button, Buttons, Choice, Content, CtaUrl, Footer, Header, Interactive,
    LimitError, List, Location, Media, MediaKind, Message, Reaction, Row, Section,
};

/// One message of a reply, with what the conversation's history keeps of it: the Markdown the
/// agent wrote for a text (on its first part; later parts keep nothing), a summary otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub message: Message,
    pub history: String,
}

impl Outgoing {
    /// A text sent as it is (a system text: no Markdown, within Meta's limit), kept whole in
    /// the history.
    pub fn text(body: String) -> Self {
        Outgoing {
            message: Message::text(body.as_str(), super::has_url(&body)),
            history: body,
        }
    }
}

/// An answer cut into the messages it becomes.
#[derive(Debug, Default)]
pub struct Shaped {
    pub messages: Vec<Outgoing>,
    /// A text item was longer than `max_parts` messages and was cut with an ellipsis.
    pub truncated: bool,
}

/// Why an answer cannot be sent as it is: nothing of it is queued.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("reply item {index} ({kind}) breaks Meta's limits: {error}")]
    Limit {
        /// The item's position in `replies`, from 0.
        index: usize,
        kind: &'static str,
        error: LimitError,
    },
    #[error("the reply is {messages} messages, more than policies.max_reply_parts ({max}) allows")]
    TooMany { messages: usize, max: usize },
}

/// The messages `items` become, in order. `turn_wamid` is the customer message a reaction
/// answers; a text item longer than `max_parts` messages is cut, and a reply of more than
/// `max_parts` messages in all is refused.
pub fn messages(
    items: &[ReplyItem],
    turn_wamid: &str,
    max_parts: usize,
) -> Result<Shaped, Refused> {
    let mut shaped = Shaped::default();
    for (index, item) in items.iter().enumerate() {
        let content = match item {
            ReplyItem::Text(t) => {
                text(t, max_parts, &mut shaped);
                continue;
            }
            ReplyItem::Image { image } => media(MediaKind::Image, image),
            ReplyItem::Video { video } => media(MediaKind::Video, video),
            ReplyItem::Audio { audio } => media(MediaKind::Audio, audio),
            ReplyItem::Document { document } => media(MediaKind::Document, document),
            ReplyItem::Sticker { sticker } => media(MediaKind::Sticker, sticker),
            ReplyItem::Buttons { buttons } => buttons_content(buttons),
            ReplyItem::List { list } => list_content(list),
            ReplyItem::CtaUrl { cta_url } => cta_content(cta_url),
            ReplyItem::Location { location } => location_content(location),
            ReplyItem::Reaction { reaction } => Content::Reaction {
                reaction: Reaction {
                    message_id: turn_wamid.to_owned(),
                    emoji: reaction.emoji.clone(),
                },
            },
        };
        let message = Message::new(content);
        message.check().map_err(|error| Refused::Limit {
            index,
            kind: item.kind(),
            error,
        })?;
        let history = message.summary();
        shaped.messages.push(Outgoing { message, history });
    }
    let max = max_parts.max(1);
    if shaped.messages.len() > max {
        return Err(Refused::TooMany {
            messages: shaped.messages.len(),
            max,
        });
    }
    Ok(shaped)
}

/// A text item's parts: Markdown to WhatsApp formatting, split at Meta's limit.
fn text(item: &TextItem, max_parts: usize, shaped: &mut Shaped) {
    let mut parts = super::shape(&item.text);
    shaped.truncated |= super::limit_parts(&mut parts, max_parts);
    let markdown = crate::text::without_nul(&item.text).into_owned();
    for (i, part) in parts.into_iter().enumerate() {
        let preview = item.preview_url.unwrap_or_else(|| super::has_url(&part));
        shaped.messages.push(Outgoing {
            message: Message::text(part, preview),
            history: if i == 0 {
                markdown.clone()
            } else {
                String::new()
            },
        });
    }
}

fn media(kind: MediaKind, item: &MediaItem) -> Content {
    Content::media(
        kind,
        Media {
            id: item.media_id.clone(),
            link: item.url.clone(),
            caption: item.caption.as_deref().map(whatsapp),
            filename: item.filename.clone(),
        },
    )
}

fn interactive(
    action: Action,
    body: &str,
    header: &Option<String>,
    footer: &Option<String>,
) -> Content {
    Content::Interactive {
        interactive: Interactive {
            action,
            header: header.clone().map(|text| Header::Text { text }),
            body: Body {
                text: whatsapp(body),
            },
            footer: footer.clone().map(|text| Footer { text }),
        },
    }
}

fn buttons_content(b: &ButtonsItem) -> Content {
    let buttons = b
        .buttons
        .iter()
        .map(|c| Button::Reply {
            reply: Choice {
                id: c.id.clone(),
                title: c.title.clone(),
            },
        })
        .collect();
    interactive(
        Action::Button(Buttons { buttons }),
        &b.body,
        &b.header,
        &b.footer,
    )
}

fn list_content(l: &ListItem) -> Content {
    let sections = l
        .sections
        .iter()
        .map(|s| Section {
            title: s.title.clone(),
            rows: s
                .rows
                .iter()
                .map(|r| Row {
                    id: r.id.clone(),
                    title: r.title.clone(),
                    description: r.description.clone(),
                })
                .collect(),
        })
        .collect();
    let action = Action::List(List {
        button: l.button.clone(),
        sections,
    });
    interactive(action, &l.body, &l.header, &l.footer)
}

fn cta_content(c: &CtaUrlItem) -> Content {
    let action = Action::CtaUrl(CtaUrl::CtaUrl {
        display_text: c.display_text.clone(),
        url: c.url.clone(),
    });
    interactive(action, &c.body, &c.header, &c.footer)
}

fn location_content(l: &LocationItem) -> Content {
    Content::Location {
        location: Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: l.name.clone(),
            address: l.address.clone(),
        },
    }
}

/// Markdown in a caption or a body, in WhatsApp formatting.
fn whatsapp(markdown: &str) -> String {
    super::to_whatsapp(&crate::text::without_nul(markdown))
}
