//! Media over real sockets: the emulator serves blobs as Meta does, `GraphClient` fetches info and
//! bytes through it, the admin route hands the same bytes to agents, and customers send media.

use crate::common;

use common::{Db, Options, PNID, spawn_gateway, wait_until};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use wa_gateway::graph::{GraphClient, GraphError};

const TOKEN: &str = "token-one";
const WAIT: Duration = Duration::from_secs(10);

/// Some bytes that are not text, a little over one read chunk.
fn jpeg_like(n: usize) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0];
    b.extend((0..n).map(|i| (i * 31 % 251) as u8));
    b
}

fn graph(emu_url: &str) -> GraphClient {
    GraphClient::new(emu_url, "v23.0", Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_client_fetches_info_and_bytes_from_the_emulator() {
    let mut t = spawn_gateway(Db::Sqlite, Options::default()).await.unwrap();
    let bytes = jpeg_like(300_000);
    let id = t.emu.add_media("image/jpeg", bytes.clone());
    let g = graph(&t.emu.url());

    let info = g.media_info(&id, TOKEN).await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.mime_type, "image/jpeg");
    assert_eq!(info.file_size, bytes.len() as u64);
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
    assert!(info.url.starts_with(&t.emu.url()), "{}", info.url);

    let (mime, got) = g.download_media(&info.url, TOKEN, 1 << 20).await.unwrap();
    assert_eq!(mime, "image/jpeg");
    assert_eq!(got.as_ref(), bytes.as_slice());

    // Over the limit: refused, whatever the announced length.
    let err = g.download_media(&info.url, TOKEN, 1000).await.unwrap_err();
    assert!(
        err.to_string().contains("over the 1000-byte limit"),
        "{err}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_tokens_and_unknown_ids_are_refused_as_meta_does() {
    let mut t = spawn_gateway(Db::Sqlite, Options::default()).await.unwrap();
    let id = t.emu.add_media("audio/ogg", b"OggS voice".to_vec());
    let g = graph(&t.emu.url());

    let api = |e: GraphError| match e {
        GraphError::Api {
            status,
            code,
            message,
            ..
        } => (status, code, message),
        other => panic!("not a Graph API error: {other:?}"),
    };
    let (status, code, _) = api(g.media_info(&id, "wrong-token").await.unwrap_err());
    assert_eq!((status, code), (401, 190));

    let (status, code, message) = api(g.media_info("999", TOKEN).await.unwrap_err());
    assert_eq!((status, code), (400, 100));
    assert!(
        message.starts_with("Unsupported get request. Object with ID '999' does not exist"),
        "{message}"
    );

    let url = g.media_info(&id, TOKEN).await.unwrap().url;
    let (status, code, _) = api(g
        .download_media(&url, "wrong-token", 1 << 20)
        .await
        .unwrap_err());
    assert_eq!((status, code), (401, 190));
    let bare = t.http.get(&url).send().await.unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    let body: Value = bare.json().await.unwrap();
    assert_eq!(body["error"]["code"], 190);
    assert_eq!(body["error"]["type"], "OAuthException");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_route_serves_the_same_bytes() {
    let mut t = spawn_gateway(Db::Sqlite, Options::default()).await.unwrap();
    let bytes = jpeg_like(50_000);
    let id = t.emu.add_media("application/pdf", bytes.clone());
    let admin = format!("http://{}", t.gw().admin_addr);

    let r = t
        .http
        .get(format!("{admin}/media/{PNID}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let r = t
        .http
        .get(format!("{admin}/media/1999/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("phone number id 1999 is not served"),
        "{message}"
    );

    let r = t
        .http
        .get(format!("{admin}/media/{PNID}/424242"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains(TOKEN), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], 100);
    assert_eq!(body["error"]["meta_status"], 400);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_sends_media_through_the_control_api() {
    let mut t = spawn_gateway(Db::Sqlite, Options::default()).await.unwrap();
    let control = |path: &str| format!("{}/_emulator/{path}", t.emu.url());
    let bytes = jpeg_like(10_000);

    let r = t
        .http
        .post(control("media"))
        .header("content-type", "image/png")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let message = json!({ "type": "image", "image": { "id": id, "caption": "my receipt" } });
    let r = t
        .http
        .post(control("customers/messages"))
        .json(
            &json!({ "phone_number_id": PNID, "from": "919812345678", "name": "Asha",
            "message": message }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let wamid = r.json::<Value>().await.unwrap()["wamid"]
        .as_str()
        .unwrap()
        .to_owned();

    // The old text shape still works, and a message without a type is refused.
    let r = t
        .http
        .post(control("customers/messages"))
        .json(&json!({ "phone_number_id": PNID, "from": "919812345678", "text": "and hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = t
        .http
        .post(control("customers/messages"))
        .json(&json!({ "phone_number_id": PNID, "from": "919812345678", "message": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // The gateway stored the image as Meta would send it: mime type and hash filled in.
    let url = t.storage.url.clone();
    let stored = wait_until(WAIT, || {
        let (url, wamid) = (url.clone(), wamid.clone());
        async move {
            common::count(
                &url,
                &format!(
                    "SELECT COUNT(*) FROM inbox WHERE wamid = '{wamid}' AND msg_type = 'image'"
                ),
            )
            .await
                == 1
        }
    })
    .await;
    assert!(stored, "the image message never reached the inbox");
    let payload: String = {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT payload FROM inbox WHERE wamid = ?")
            .bind(&wamid)
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["image"]["mime_type"], "image/png");
    assert_eq!(
        payload["image"]["sha256"],
        hex::encode(Sha256::digest(&bytes))
    );
    assert_eq!(payload["image"]["caption"], "my receipt");
    assert_eq!(payload["from"], "919812345678");

    // An agent follows the download_url the structured content gives it.
    let msg = wa_gateway::cloudapi::envelope::parse(
        &serde_json::to_vec(&json!({ "object": "whatsapp_business_account", "entry": [{
            "id": "1", "changes": [{ "field": "messages", "value": {
                "metadata": { "display_phone_number": "1", "phone_number_id": PNID },
                "messages": [payload] } }] }] }))
        .unwrap(),
    )
    .unwrap();
    let wa_gateway::cloudapi::envelope::ChangeValue::Messages(v) = &msg.entry[0].changes[0].value
    else {
        panic!("not a messages change");
    };
    let content = wa_gateway::cloudapi::content::structured_for(&PNID.into(), &v.messages[0]);
    let path = content["download_url"].as_str().unwrap();
    let r = t
        .http
        .get(format!("http://{}{path}", t.gw().admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    t.stop().await;
}
