//! `wa-gateway chat`: a customer in the terminal. Sends through the emulator's control API and
//! prints the gateway's replies as the emulator records them: `< text`, `< [image] caption`,
//! `< Pick one` + `  [buttons] Yes | No`; `/press N` presses the last message's Nth button or row.

use super::client::ControlClient;
use super::state::SentMessage;
use crate::cloudapi::outbound::{Action, Button, Content, Message};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// After a first reply, how long to wait for more parts of it (split replies).
const QUIET: Duration = Duration::from_millis(300);
/// One long-poll's wait in interactive mode.
const POLL: Duration = Duration::from_secs(30);

/// Plays customer `from` (named `name`) writing to number `pnid` through the emulator at
/// `emulator_url`. With `message`, sends it and prints the reply: exit code 0, or 1 if none came
/// within `timeout`. Without, sends each stdin line and prints replies as they come, until EOF.
pub async fn chat(
    emulator_url: &str,
    pnid: &str,
    from: &str,
    name: &str,
    message: Option<String>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let client = ControlClient::new(emulator_url);
    let mut out = std::io::stdout();
    match message {
        Some(text) => one_shot(&client, pnid, from, name, &text, timeout, &mut out).await,
        None => interactive(&client, pnid, from, name, timeout, &mut out).await,
    }
}

/// How a sent message reads in the terminal: its summary (`cloudapi::outbound`), each line after
/// the first indented under the `< `; media by upload with its file, `[image] photo.jpg (34 KB)
/// caption`.
fn render(m: &SentMessage) -> String {
    let summary = match serde_json::from_value::<Message>(m.body.clone()) {
        Ok(message) => match (&m.media, message.content.as_media()) {
            (Some(file), Some((kind, media))) => {
                let mut line = format!("[{}]", kind.as_str());
                if let Some(name) = &file.filename {
                    line.push(' ');
                    line.push_str(name);
                }
                line.push_str(&format!(" ({})", kilobytes(file.size)));
                if let Some(caption) = &media.caption {
                    line.push(' ');
                    line.push_str(caption);
                }
                line
            }
            _ => message.summary(),
        },
        // A type the gateway does not send as a typed message (a template): its type.
        Err(_) => format!("[{}]", m.body["type"].as_str().unwrap_or("message")),
    };
    format!("< {}", summary.replace('\n', "\n  "))
}

/// A file size as people read it: `34 KB`, `1.5 MB`.
fn kilobytes(size: u64) -> String {
    match size {
        s if s < 1024 => format!("{s} B"),
        s if s < 1024 * 1024 => format!("{} KB", (s + 512) / 1024),
        s => format!("{:.1} MB", s as f64 / (1024.0 * 1024.0)),
    }
}

/// The replies a customer can press in `m`, in order: reply buttons, or a list's rows, each as
/// the interactive message that pressing it sends back.
fn choices(m: &SentMessage) -> Vec<Value> {
    let Ok(Message {
        content: Content::Interactive { interactive },
        ..
    }) = serde_json::from_value::<Message>(m.body.clone())
    else {
        return Vec::new();
    };
    let context = json!({ "from": m.phone_number_id, "id": m.wamid });
    match interactive.action {
        Action::Button(b) => b
            .buttons
            .into_iter()
            .map(|Button::Reply { reply }| {
                json!({ "type": "interactive", "context": context, "interactive": {
                    "type": "button_reply", "button_reply": { "id": reply.id, "title": reply.title } } })
            })
            .collect(),
        Action::List(l) => l
            .sections
            .into_iter()
            .flat_map(|s| s.rows)
            .map(|row| {
                json!({ "type": "interactive", "context": context, "interactive": {
                    "type": "list_reply", "list_reply": { "id": row.id, "title": row.title,
                                                          "description": row.description } } })
            })
            .collect(),
        Action::CtaUrl(_) => Vec::new(),
    }
}

/// The choice `/press N` names among `choices`, or why there is none.
fn pressed(line: &str, choices: &[Value]) -> Option<Result<Value, String>> {
    let n = line.trim().strip_prefix("/press")?.trim();
    let picked = n
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| choices.get(i));
    Some(match (picked, choices.len()) {
        (Some(choice), _) => Ok(choice.clone()),
        (None, 0) => Err("nothing to press: the last message has no buttons or list".into()),
        (None, k) => Err(format!("press a number from 1 to {k}, e.g. `/press 1`")),
    })
}

fn no_answer(timeout: Duration, pnid: &str) -> String {
    format!(
        "the gateway did not answer within {} s. Check that `wa-gateway serve` is running with \
         this emulator as its graph_url, that its webhook URL reaches the gateway, that number \
         {pnid} is declared and enabled with an agent, and the gateway's log for errors.",
        timeout.as_secs_f32()
    )
}

/// The seq after which replies to this message will come.
async fn baseline(client: &ControlClient, pnid: &str, from: &str) -> anyhow::Result<u64> {
    let page = client
        .sent_page(Some(pnid), Some(from), u64::MAX, Duration::ZERO)
        .await?;
    Ok(page.last_seq)
}

pub(crate) async fn one_shot(
    client: &ControlClient,
    pnid: &str,
    from: &str,
    name: &str,
    text: &str,
    timeout: Duration,
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    let mut after = baseline(client, pnid, from).await?;
    client.customer_says(pnid, from, Some(name), text).await?;
    let deadline = Instant::now() + timeout;
    let mut replies = Vec::new();
    // Long-polls are capped server-side, so keep asking until the deadline.
    while replies.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("{}", no_answer(timeout, pnid));
            return Ok(1);
        }
        replies = client
            .sent_after(Some(pnid), Some(from), after, left)
            .await?;
    }
    loop {
        for m in &replies {
            writeln!(out, "{}", render(m))?;
            after = after.max(m.seq);
        }
        out.flush()?;
        replies = client
            .sent_after(Some(pnid), Some(from), after, QUIET)
            .await?;
        if replies.is_empty() {
            return Ok(0);
        }
    }
}

async fn interactive(
    client: &ControlClient,
    pnid: &str,
    from: &str,
    name: &str,
    timeout: Duration,
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    let after = baseline(client, pnid, from).await?;
    eprintln!(
        "chatting with number {pnid} as {name} ({from}); type a message, `/press N` to press a \
         button or list row, Ctrl-D to quit"
    );
    let (tx, mut replies) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll_replies(
        client.clone(),
        pnid.to_owned(),
        from.to_owned(),
        after,
        tx,
    ));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    // Whether the last line sent still waits for its first reply.
    let mut awaiting = false;
    // What `/press N` picks from: the last message's buttons or rows.
    let mut last_choices = Vec::new();
    let code = loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => match pressed(&line, &last_choices) {
                    Some(Ok(choice)) => {
                        client.customer_sends(pnid, from, Some(name), choice).await?;
                        awaiting = true;
                    }
                    Some(Err(why)) => eprintln!("{why}"),
                    None => {
                        client.customer_says(pnid, from, Some(name), &line).await?;
                        awaiting = true;
                    }
                },
                None => break drain(&mut replies, awaiting, timeout, pnid, out).await?,
            },
            Some(m) = replies.recv() => {
                writeln!(out, "{}", render(&m))?;
                out.flush()?;
                // A later message without buttons (a text after them) keeps them pressable.
                let new = choices(&m);
                if !new.is_empty() {
                    last_choices = new;
                }
                awaiting = false;
            }
        }
    };
    poller.abort();
    Ok(code)
}

/// At EOF: wait for the answer to the last line (if any is due), then for a quiet spell.
async fn drain(
    replies: &mut mpsc::UnboundedReceiver<SentMessage>,
    awaiting: bool,
    timeout: Duration,
    pnid: &str,
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    if awaiting {
        match tokio::time::timeout(timeout, replies.recv()).await {
            Ok(Some(m)) => writeln!(out, "{}", render(&m))?,
            _ => {
                eprintln!("{}", no_answer(timeout, pnid));
                return Ok(1);
            }
        }
    }
    while let Ok(Some(m)) = tokio::time::timeout(QUIET, replies.recv()).await {
        writeln!(out, "{}", render(&m))?;
    }
    out.flush()?;
    Ok(0)
}

/// Long-polls the emulator for replies to `from` and forwards them until the receiver goes.
async fn poll_replies(
    client: ControlClient,
    pnid: String,
    from: String,
    mut after: u64,
    tx: mpsc::UnboundedSender<SentMessage>,
) {
    loop {
        match client
            .sent_after(Some(&pnid), Some(&from), after, POLL)
            .await
        {
            Ok(messages) => {
                for m in messages {
                    after = after.max(m.seq);
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                eprintln!("{err}");
                // The emulator is away; try again shortly rather than spin.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(body: Value) -> SentMessage {
        SentMessage {
            seq: 1,
            phone_number_id: "106".into(),
            to: "1555".into(),
            wamid: "wamid.OUT".into(),
            text: body["text"]["body"].as_str().map(str::to_owned),
            body,
            biz_opaque_callback_data: None,
            context_message_id: None,
            received_at_ms: 0,
            media: None,
        }
    }

    fn buttons() -> SentMessage {
        sent(
            json!({ "type": "interactive", "interactive": { "type": "button", "body": { "text": "Pick one" },
            "action": { "buttons": [ { "type": "reply", "reply": { "id": "y", "title": "Yes" } },
                                     { "type": "reply", "reply": { "id": "n", "title": "No" } } ] } } }),
        )
    }

    #[test]
    fn every_kind_reads_as_a_line() {
        let list = sent(
            json!({ "type": "interactive", "interactive": { "type": "list", "body": { "text": "Topics" },
            "action": { "button": "Open", "sections": [ { "rows": [ { "id": "a", "title": "Track" }, { "id": "b", "title": "Return" } ] } ] } } }),
        );
        for (m, line) in [
            (
                sent(json!({ "type": "text", "text": { "body": "hi", "preview_url": false } })),
                "< hi",
            ),
            (buttons(), "< Pick one\n  [buttons] Yes | No"),
            (list, "< Topics\n  [list] Open: Track | Return"),
            (
                sent(json!({ "type": "image", "image": { "id": "1", "caption": "photo.jpg" } })),
                "< [image] photo.jpg",
            ),
            (
                sent(
                    json!({ "type": "location", "location": { "latitude": 1.5, "longitude": 2.0, "name": "Store" } }),
                ),
                "< [location] Store (1.5, 2)",
            ),
            (
                sent(
                    json!({ "type": "reaction", "reaction": { "message_id": "wamid.A", "emoji": "👍" } }),
                ),
                "< [reaction] 👍",
            ),
            (
                sent(json!({ "type": "template", "template": { "name": "hello" } })),
                "< [template]",
            ),
        ] {
            assert_eq!(render(&m), line);
        }
    }

    #[test]
    fn press_sends_the_chosen_reply_quoting_the_message() {
        let choices = choices(&buttons());
        let Some(Ok(second)) = pressed("/press 2", &choices) else {
            panic!("a choice")
        };
        assert_eq!(
            second["interactive"]["button_reply"],
            json!({ "id": "n", "title": "No" })
        );
        assert_eq!(second["context"]["id"], "wamid.OUT");
        assert_eq!(pressed("hello", &choices), None, "not a command");
        assert_eq!(
            pressed("/press 3", &choices),
            Some(Err("press a number from 1 to 2, e.g. `/press 1`".into()))
        );
        assert!(matches!(pressed("/press 1", &[]), Some(Err(e)) if e.contains("nothing to press")));
    }

    #[test]
    fn media_reads_with_its_file() {
        let mut m = SentMessage {
            seq: 1,
            phone_number_id: "1".into(),
            to: "2".into(),
            wamid: "wamid.1".into(),
            text: None,
            body: json!({ "type": "image", "image": { "id": "9", "caption": "Your order" } }),
            biz_opaque_callback_data: None,
            context_message_id: None,
            received_at_ms: 0,
            media: Some(super::super::media_store::SentFile {
                filename: Some("photo.jpg".into()),
                size: 34 * 1024 + 100,
            }),
        };
        assert_eq!(render(&m), "< [image] photo.jpg (34 KB) Your order");
        m.media = None;
        m.body = json!({ "type": "sticker", "sticker": { "link": "https://x.example/s.webp" } });
        assert_eq!(render(&m), "< [sticker]");
        assert_eq!(kilobytes(3 * 1024 * 1024 / 2), "1.5 MB");
    }
}
