//! `wa-gateway chat`: a customer in the terminal. Sends through the emulator's control API and
//! prints the gateway's replies (`< text`) as the emulator records them.

use super::client::ControlClient;
use super::state::SentMessage;
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

/// How a sent message reads in the terminal: its text, or `[image] photo.jpg (34 KB) caption`.
fn render(m: &SentMessage) -> String {
    if let Some(text) = &m.text {
        return format!("< {text}");
    }
    let kind = m.body["type"].as_str().unwrap_or("message");
    let mut line = format!("< [{kind}]");
    if let Some(file) = &m.media {
        if let Some(name) = &file.filename {
            line.push(' ');
            line.push_str(name);
        }
        line.push_str(&format!(" ({})", kilobytes(file.size)));
    }
    if let Some(caption) = m.body[kind]["caption"].as_str() {
        line.push(' ');
        line.push_str(caption);
    }
    line
}

/// A file size as people read it: `34 KB`, `1.5 MB`.
fn kilobytes(size: u64) -> String {
    match size {
        s if s < 1024 => format!("{s} B"),
        s if s < 1024 * 1024 => format!("{} KB", (s + 512) / 1024),
        s => format!("{:.1} MB", s as f64 / (1024.0 * 1024.0)),
    }
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
    eprintln!("chatting with number {pnid} as {name} ({from}); type a message, Ctrl-D to quit");
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
    let code = loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    client.customer_says(pnid, from, Some(name), &line).await?;
                    awaiting = true;
                }
                None => break drain(&mut replies, awaiting, timeout, pnid, out).await?,
            },
            Some(m) = replies.recv() => {
                writeln!(out, "{}", render(&m))?;
                out.flush()?;
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
    use serde_json::json;

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
