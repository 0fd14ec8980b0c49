//! Outbound media by URL, on SQLite and PostgreSQL: the gateway downloads the file an agent
//! names (from a media host on 127.0.0.1), checks it against Meta's limits, uploads it to the
//! emulator and sends it by id; the same bytes again reuse the upload; a file Meta would
//! refuse fails its row and never reaches Meta; a host's 500 is retried; `policies.media.upload:
//! false` sends the link; expired uploads are pruned, and an upload Meta forgot is made again.

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A gateway whose number is answered by an agent that replies with `reply(text)` to a
/// customer's `text`; `policies` is YAML under `policies:` (indented by 2), `storage` under
/// `storage:`.
async fn gateway(
    db: Db,
    reply: impl Fn(&str) -> Value + Send + Sync + 'static,
    policies: &str,
    storage: &str,
) -> Option<(RecordingAgent, TestGateway)> {
    let agent = RecordingAgent::scripted(Arc::new(move |turn: &Value| {
        let text = turn["message"]["text"].as_str().unwrap_or_default();
        (200, reply(text))
    }))
    .await;
    let opts = Options {
        agents: format!(
            "  rec: {{ kind: http, url: \"{}\", timeout: 5s }}\n",
            agent.url
        ),
        extra: format!(
            "policies:\n  delivery: {{ initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }}\n{}",
            local_media_host(policies)
        ),
        storage_extra: storage.to_owned(),
        ..Options::default()
    };
    let t = spawn_gateway_with_agent(db, opts, "rec").await?;
    Some((agent, t))
}

/// `policies` allowing downloads from the test's media host on 127.0.0.1 (off by default),
/// unless they say `private_hosts` themselves.
fn local_media_host(policies: &str) -> String {
    if policies.contains("private_hosts") {
        policies.to_owned()
    } else if policies.contains("media: {") {
        policies.replacen("media: {", "media: { private_hosts: true,", 1)
    } else {
        format!("{policies}  media: {{ private_hosts: true }}\n")
    }
}

fn image(url: &str, caption: &str) -> Value {
    json!({ "replies": [ { "image": { "url": url, "caption": caption } } ] })
}

/// An image by URL is downloaded, uploaded once and sent by the upload's id; the same image for
/// another customer reuses the upload.
async fn image_by_url_is_uploaded_once_and_sent_by_id(db: Db) {
    let host = MediaServer::start().await;
    let photo = jpeg(34 * 1024);
    let url = host.serve("shop/photo.jpg", "image/jpeg", photo.clone());
    let reply_url = url.clone();
    let Some((_, mut t)) = gateway(db, move |_| image(&reply_url, "Your **order**"), "", "").await
    else {
        return;
    };
    t.emu
        .customer_says(PNID, "919880000001", "A", "my order?")
        .await;
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await, "sent");
    let uploads = t.emu.uploads();
    assert_eq!(uploads.len(), 1, "one upload");
    assert_eq!(uploads[0].bytes, photo, "the host's bytes");
    assert_eq!(uploads[0].mime_type, "image/jpeg");
    assert_eq!(uploads[0].phone_number_id, PNID);
    assert_eq!(uploads[0].filename.as_deref(), Some("photo.jpg"));
    let body = &t.emu.sent()[0].body;
    assert_eq!(
        body["image"],
        json!({ "id": uploads[0].id, "caption": "Your *order*" }),
        "sent by id, not by link"
    );

    t.emu
        .customer_says(PNID, "919880000002", "B", "and mine?")
        .await;
    assert!(t.emu.wait_sent(|s| s.len() == 2, WAIT).await, "sent again");
    assert_eq!(t.emu.uploads().len(), 1, "no second upload");
    assert_eq!(t.emu.sent()[1].body["image"]["id"], uploads[0].id.as_str());
    assert_eq!(host.hits("shop/photo.jpg"), 2, "downloaded for each turn");
    assert_eq!(t.count("SELECT COUNT(*) FROM media_uploads").await, 1);
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'",
            2,
            WAIT
        )
        .await
    );
    let metrics = t.metrics().await;
    for result in ["uploaded", "cached"] {
        let line = format!(
            "wa_gateway_media_files_total{{phone_number_id=\"{PNID}\",result=\"{result}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    t.stop().await;
}

/// A 6 MB "image" and an HTML page served as an image fail their rows with the reason, never
/// reach Meta, and the items after them still go, in order.
/// Each `(customer, text, _)` writes `text`; the agent answers a text, an image, a text. Waits
/// until every image failed and the texts went out in order; returns each image's recorded
/// error.
async fn images_fail_between_texts(t: &TestGateway, cases: &[(&str, &str, &str)]) -> Vec<String> {
    for (customer, text, _) in cases {
        t.emu.customer_says(PNID, customer, "M", text).await;
    }
    let failed = "SELECT COUNT(*) FROM outbox WHERE state = 'failed'";
    assert!(
        t.wait_count(failed, cases.len() as i64, WAIT).await,
        "every image failed"
    );
    assert!(
        t.emu.wait_sent(|s| s.len() == 2 * cases.len(), WAIT).await,
        "the texts"
    );
    let mut recorded = Vec::new();
    for (customer, _, _) in cases {
        assert_eq!(t.texts_to(customer), ["before", "after"], "in order");
        recorded.push(
            t.scalar(&format!(
                "SELECT error_message FROM outbox WHERE customer = '{customer}' AND state = 'failed'"
            ))
            .await,
        );
    }
    recorded
}

/// By default a media URL inside the network (here the test's host on 127.0.0.1, and a cloud
/// metadata address) is never fetched: its message fails with the reason, the others go out.
async fn a_media_url_inside_the_network_is_refused_by_default(db: Db) {
    let host = MediaServer::start().await;
    let local = host.serve("photo.jpg", "image/jpeg", jpeg(1024));
    let reply = move |text: &str| {
        let url = if text == "local" {
            local.clone()
        } else {
            "http://169.254.169.254/latest/meta-data/iam".to_owned()
        };
        json!({ "replies": [ { "text": "before" }, { "image": { "url": url } }, { "text": "after" } ] })
    };
    let Some((_, mut t)) = gateway(db, reply, "  media: { private_hosts: false }\n", "").await
    else {
        return;
    };
    let cases = [
        ("919882000001", "local", "127.0.0.1"),
        ("919882000002", "metadata", "169.254.169.254"),
    ];
    let recorded = images_fail_between_texts(&t, &cases).await;
    for ((_, _, address), recorded) in cases.iter().zip(recorded) {
        assert!(
            recorded.contains(&format!("{address} is not a public address"))
                && recorded.contains("policies.media.private_hosts"),
            "{recorded}"
        );
    }
    assert_eq!(host.hits("photo.jpg"), 0, "never fetched");
    assert!(t.emu.uploads().is_empty(), "nothing uploaded");
    t.stop().await;
}

async fn files_meta_would_refuse_fail_their_row_and_never_reach_meta(db: Db) {
    let host = MediaServer::start().await;
    let big = host.serve("big.jpg", "image/jpeg", jpeg(6 * 1024 * 1024));
    let page = host.serve(
        "page.jpg",
        "text/html",
        b"<html><body>Not here</body></html>".to_vec(),
    );
    let reply = move |text: &str| {
        let url = if text == "big" { &big } else { &page };
        json!({ "replies": [ { "text": "before" }, { "image": { "url": url } }, { "text": "after" } ] })
    };
    let Some((_, mut t)) = gateway(db, reply, "", "").await else {
        return;
    };
    let cases = [
        (
            "919881000001",
            "big",
            "image files may be at most 5242880 bytes",
        ),
        (
            "919881000002",
            "page",
            "the file is text/html; Meta takes image files as image/jpeg, image/png",
        ),
    ];
    let recorded = images_fail_between_texts(&t, &cases).await;
    for ((_, _, reason), recorded) in cases.iter().zip(recorded) {
        assert!(recorded.contains(reason), "{recorded}");
        assert!(recorded.contains("cannot be sent"), "{recorded}");
    }
    assert!(t.emu.uploads().is_empty(), "nothing uploaded");
    assert!(
        t.emu.sent().iter().all(|s| s.body["type"] == "text"),
        "no image reached Meta"
    );
    t.stop().await;
}

/// The media host answers 500, then the file: the row is retried and delivered once.
async fn a_media_host_500_is_retried_and_delivered_once(db: Db) {
    let host = MediaServer::start().await;
    let url = host.serve_failing(
        "flaky.png",
        "image/png",
        b"\x89PNG\r\n\x1a\n-data".to_vec(),
        1,
    );
    let reply_url = url.clone();
    let Some((_, mut t)) = gateway(db, move |_| image(&reply_url, "Here"), "", "").await else {
        return;
    };
    t.emu
        .customer_says(PNID, "919882000001", "F", "picture?")
        .await;
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'",
            1,
            WAIT
        )
        .await,
        "delivered"
    );
    assert_eq!(host.hits("flaky.png"), 2, "one failure, one success");
    assert_eq!(t.emu.uploads().len(), 1);
    assert_eq!(t.emu.uploads()[0].mime_type, "image/png");
    let attempts: i64 = t.count("SELECT attempts FROM outbox").await;
    assert_eq!(attempts, 2, "the failed download was an attempt");
    assert!(
        !t.emu
            .wait_sent(|s| s.len() > 1, Duration::from_millis(2500))
            .await,
        "exactly once"
    );
    assert_eq!(
        t.emu.sent()[0].body["image"]["id"],
        t.emu.uploads()[0].id.as_str()
    );
    t.stop().await;
}

/// Meta forgot a cached upload (deleted, or older than Meta keeps it): the refused send
/// uploads the file afresh and sends once, by the new id, which the cache keeps from then on.
async fn a_cached_id_meta_forgot_is_uploaded_again(db: Db) {
    let host = MediaServer::start().await;
    let url = host.serve("kept.jpg", "image/jpeg", jpeg(4096));
    let reply_url = url.clone();
    let Some((_, mut t)) = gateway(db, move |_| image(&reply_url, "Kept"), "", "").await else {
        return;
    };
    t.emu.customer_says(PNID, "919885000001", "K", "one").await;
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await);
    let first = t.emu.uploads()[0].id.clone();
    assert!(t.emu.forget_media(&first));
    t.emu.customer_says(PNID, "919885000002", "K", "two").await;
    assert!(t.emu.wait_sent(|s| s.len() == 2, WAIT).await);
    let uploads = t.emu.uploads();
    assert_eq!(
        uploads.len(),
        1,
        "the forgotten one is gone, one new upload"
    );
    assert_ne!(uploads[0].id, first);
    assert_eq!(t.emu.sent()[1].body["image"]["id"], uploads[0].id.as_str());
    let cached: String = t.scalar("SELECT media_id FROM media_uploads").await;
    assert_eq!(cached, uploads[0].id);
    assert!(
        !t.emu
            .wait_sent(|s| s.len() > 2, Duration::from_millis(2500))
            .await,
        "each once"
    );
    t.stop().await;
}

/// `policies.media.upload: false` sends the link for Meta to fetch.
async fn upload_off_sends_the_link(db: Db) {
    let host = MediaServer::start().await;
    let url = host.serve("linked.jpg", "image/jpeg", jpeg(1024));
    let reply_url = url.clone();
    let policies = "  media: { upload: false }\n";
    let Some((_, mut t)) = gateway(db, move |_| image(&reply_url, "Linked"), policies, "").await
    else {
        return;
    };
    t.emu
        .customer_says(PNID, "919883000001", "L", "link?")
        .await;
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await);
    assert_eq!(
        t.emu.sent()[0].body["image"],
        json!({ "link": url, "caption": "Linked" })
    );
    assert!(t.emu.uploads().is_empty());
    assert_eq!(host.hits("linked.jpg"), 0, "the gateway fetched nothing");
    t.stop().await;
}

/// An upload is reused for `policies.media.cache_for` only: retention prunes it after, and the
/// same file is uploaded again.
async fn expired_uploads_are_pruned_and_uploaded_again(db: Db) {
    let host = MediaServer::start().await;
    let url = host.serve("old.jpg", "image/jpeg", jpeg(2048));
    let reply_url = url.clone();
    let policies = "  media: { cache_for: 1s }\n";
    let storage = "  retention: { interval: 1s }\n";
    let Some((_, mut t)) =
        gateway(db, move |_| image(&reply_url, "Again"), policies, storage).await
    else {
        return;
    };
    t.emu.customer_says(PNID, "919884000001", "E", "one").await;
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await);
    assert!(
        t.wait_count("SELECT COUNT(*) FROM media_uploads", 0, WAIT)
            .await,
        "pruned after cache_for"
    );
    t.emu.customer_says(PNID, "919884000002", "E", "two").await;
    assert!(t.emu.wait_sent(|s| s.len() == 2, WAIT).await);
    let uploads = t.emu.uploads();
    assert_eq!(uploads.len(), 2, "uploaded again");
    assert_eq!(t.emu.sent()[1].body["image"]["id"], uploads[1].id.as_str());
    t.stop().await;
}

on_both_dbs!(
    a_media_url_inside_the_network_is_refused_by_default,
    image_by_url_is_uploaded_once_and_sent_by_id,
    files_meta_would_refuse_fail_their_row_and_never_reach_meta,
    a_media_host_500_is_retried_and_delivered_once,
    upload_off_sends_the_link,
    a_cached_id_meta_forgot_is_uploaded_again,
    expired_uploads_are_pruned_and_uploaded_again,
);
