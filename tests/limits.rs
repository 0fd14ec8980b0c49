//! The listeners under abuse, over real sockets: silent and half-sent connections are closed
//! after `header_timeout`, idle ones after `idle_timeout` (HTTP/1.1 and HTTP/2), a trickled body
//! after `body_timeout` in total, bodies of up to 3 MiB pass, and webhooks beyond
//! `max_inflight_bodies` wait, then get 503.

use crate::common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Slack for a deadline to be acted on, on a machine busy compiling.
const SLACK: Duration = Duration::from_secs(4);

/// A gateway with `listen` lines (each indented by 2) added to the test config.
async fn gateway(db: Db, listen: &str) -> Option<TestGateway> {
    let storage = storage(db).await?;
    let yaml = config_yaml(&storage.url, &Options::default(), "echo").replacen(
        "  admin: 127.0.0.1:0\n",
        &format!("  admin: 127.0.0.1:0\n{listen}"),
        1,
    );
    Some(start_from_yaml(storage, &yaml).await)
}

fn open_gauge(t: &TestGateway, endpoint: &str) -> i64 {
    let m = &t.gw().state.metrics.http;
    m.connections_open.with_label_values(&[endpoint]).get()
}

fn timeouts(t: &TestGateway, endpoint: &str, reason: &str) -> u64 {
    let m = &t.gw().state.metrics.http;
    m.connection_timeouts
        .with_label_values(&[endpoint, reason])
        .get()
}

fn webhooks(t: &TestGateway, result: &str) -> u64 {
    t.gw()
        .state
        .metrics
        .webhooks
        .with_label_values(&[result])
        .get()
}

/// Waits for the peer to close `s` (EOF or reset), for at most `limit`; how long it took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn raise_fd_limit(want: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|cur| cur < want) {
        limit.current = Some(limit.maximum.map_or(want, |max| max.min(want)));
        setrlimit(Resource::Nofile, limit).expect("raise the open-file limit");
    }
}

/// Resident memory of this process (gateway and test client), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The handshake GET, as raw HTTP/1.1 on a kept-alive connection.
const HANDSHAKE: &str = "GET /webhook?hub.mode=subscribe&hub.verify_token=test-verify-token&hub.challenge=42 HTTP/1.1\r\nHost: gw\r\n\r\n";

/// Reads one HTTP/1.1 response (with a Content-Length body): its status.
async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).await.expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"));
    let mut length = 0;
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("header line");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).await.expect("body");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_close_after_header_timeout_while_webhooks_pass() {
    raise_fd_limit(8192);
    let Some(mut t) = gateway(Db::Sqlite, "  header_timeout: 2s\n").await else {
        return;
    };
    let header = Duration::from_secs(2);
    let (webhook, admin) = (t.gw().webhook_addr, t.gw().admin_addr);
    let rss_before = rss_kib();
    let mut socks = Vec::new();
    for i in 0..1000 {
        // Taken before the connect: the server may accept before this task sees it connected.
        let connecting = Instant::now();
        let mut s = TcpStream::connect(webhook).await.expect("connect");
        if i % 2 == 1 {
            s.write_all(b"POST /webhook HTTP/1.1\r\nHost: gw\r\nContent-Ty")
                .await
                .unwrap();
        }
        socks.push((connecting, s));
    }
    socks.push((Instant::now(), TcpStream::connect(admin).await.unwrap()));
    assert!(
        wait_until(header, || async { open_gauge(&t, "webhook") >= 1000 }).await,
        "the 1,000 connections are accepted, not refused (open: {})",
        open_gauge(&t, "webhook")
    );
    let rss_held = rss_kib();
    eprintln!(
        "RSS with 1,000 silent or half-sent connections: {rss_held} KiB ({} KiB more than before)",
        rss_held.saturating_sub(rss_before)
    );
    let env = text_envelope(&[(WABA, PNID, vec![("919800000001", "wamid.MEANWHILE", "hi")])]);
    let sent = Instant::now();
    assert_eq!(t.post_signed(&serde_json::to_vec(&env).unwrap()).await, 200);
    assert!(
        sent.elapsed() < header,
        "answered while the others are held"
    );

    let waits = socks.into_iter().map(|(connecting, mut s)| async move {
        closed_within(&mut s, header + SLACK)
            .await
            .map(|_| connecting.elapsed())
    });
    let lived = futures::future::join_all(waits).await;
    let open = lived.iter().filter(|l| l.is_none()).count();
    assert_eq!(open, 0, "{open} connections still open after {header:?}");
    let early: Vec<_> = lived
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_some_and(|l| l < header))
        .collect();
    assert!(early.is_empty(), "closed before header_timeout: {early:?}");
    assert!(timeouts(&t, "webhook", "header") >= 1000);
    assert_eq!(timeouts(&t, "admin", "header"), 1);
    // Only the test client's pooled connection (idle, not timed out) remains.
    assert!(wait_until(SLACK, || async { open_gauge(&t, "webhook") <= 1 }).await);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_that_stops_inside_its_next_headers_is_closed_after_header_timeout() {
    let Some(mut t) = gateway(Db::Sqlite, "  header_timeout: 1s\n  idle_timeout: 60s\n").await
    else {
        return;
    };
    let mut s = BufReader::new(TcpStream::connect(t.gw().webhook_addr).await.unwrap());
    s.get_mut().write_all(HANDSHAKE.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await, 200);
    s.get_mut().write_all(b"GET /webhook HT").await.unwrap();
    let took = closed_within(s.get_mut(), Duration::from_secs(1) + SLACK).await;
    let took = took.expect("closed well before idle_timeout");
    assert!(took >= Duration::from_millis(950), "closed after {took:?}");
    assert_eq!(timeouts(&t, "webhook", "header"), 1);
    assert_eq!(timeouts(&t, "webhook", "idle"), 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_is_reused_after_30s_idle_and_closed_after_idle_timeout() {
    let idle = Duration::from_secs(35);
    let Some(mut t) = gateway(Db::Sqlite, "  header_timeout: 1s\n  idle_timeout: 35s\n").await
    else {
        return;
    };
    let mut s = BufReader::new(TcpStream::connect(t.gw().webhook_addr).await.unwrap());
    s.get_mut().write_all(HANDSHAKE.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await, 200);
    // The idle time is what is under test, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(30)).await;
    s.get_mut().write_all(HANDSHAKE.as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut s).await,
        200,
        "the same connection serves"
    );
    let took = closed_within(s.get_mut(), idle + SLACK).await;
    let took = took.expect("closed after idle_timeout");
    assert!(
        took >= idle - Duration::from_millis(50),
        "closed after {took:?}"
    );
    assert_eq!(timeouts(&t, "webhook", "idle"), 1);
    t.stop().await;
}

/// An HTTP/2 frame: type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// What an HTTP/2 connection with no stream saw until the server closed it.
#[derive(Default, Debug)]
struct H2Idle {
    max_streams: Option<u32>,
    pings: usize,
    goaway: bool,
    closed_after: Option<Duration>,
}

/// Opens an h2c connection (prior knowledge), answers settings and pings, and watches it for
/// at most `limit`.
async fn idle_h2(addr: std::net::SocketAddr, limit: Duration) -> H2Idle {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    let start = Instant::now();
    let mut seen = H2Idle::default();
    while let Ok(next) = tokio::time::timeout_at(start + limit, read_frame(&mut s)).await {
        let Some((kind, flags, payload)) = next else {
            seen.closed_after = Some(start.elapsed());
            break;
        };
        match (kind, flags & ACK) {
            (SETTINGS, 0) => {
                for p in payload.chunks_exact(6) {
                    if u16::from_be_bytes([p[0], p[1]]) == MAX_CONCURRENT_STREAMS {
                        seen.max_streams = Some(u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
                    }
                }
                let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
            }
            (PING, 0) => {
                seen.pings += 1;
                let _ = s.write_all(&frame(PING, ACK, 0, &payload)).await;
            }
            (GOAWAY, _) => seen.goaway = true,
            _ => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_without_streams_is_pinged_then_closed_after_idle_timeout() {
    let idle = Duration::from_secs(3);
    let Some(mut t) = gateway(
        Db::Sqlite,
        "  header_timeout: 1s\n  idle_timeout: 3s\n  h2_max_streams: 7\n",
    )
    .await
    else {
        return;
    };
    let seen = idle_h2(t.gw().webhook_addr, idle + SLACK).await;
    assert_eq!(seen.max_streams, Some(7), "{seen:?}");
    assert!(
        seen.pings >= 1,
        "a keep-alive ping every idle_timeout/2: {seen:?}"
    );
    assert!(seen.goaway, "told to go away: {seen:?}");
    let closed = seen.closed_after.expect("closed");
    // Past header_timeout (1s): the preface made it an idle connection, not a slow one.
    assert!(closed >= idle - Duration::from_millis(50), "{seen:?}");
    assert_eq!(timeouts(&t, "webhook", "idle"), 1);
    assert_eq!(timeouts(&t, "webhook", "header"), 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_is_idle_once_its_streams_end() {
    let idle = Duration::from_secs(3);
    let Some(mut t) = gateway(Db::Sqlite, "  header_timeout: 1s\n  idle_timeout: 3s\n").await
    else {
        return;
    };
    let tcp = TcpStream::connect(t.gw().webhook_addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let body = serde_json::to_vec(&text_envelope(&[(
        WABA,
        PNID,
        vec![("919800000002", "wamid.H2", "over h2")],
    )]))
    .unwrap();
    let request = axum::http::Request::post(format!("http://{}/webhook", t.gw().webhook_addr))
        .header(
            "x-hub-signature-256",
            wa_gateway::cloudapi::signature::sign(APP_SECRET.as_bytes(), &body),
        )
        .body(())
        .unwrap();
    // Past header_timeout before the request: an HTTP/2 connection waits as an idle one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream.send_data(body.into(), true).unwrap();
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut rest = response.into_body();
    while rest.data().await.is_some() {}
    let done = Instant::now();
    tokio::time::timeout(idle + SLACK, driver)
        .await
        .expect("the server closes the idle connection")
        .unwrap()
        .ok();
    let took = done.elapsed();
    assert!(
        took >= idle - Duration::from_millis(50),
        "closed after {took:?}"
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox").await, 1);
    assert_eq!(timeouts(&t, "webhook", "idle"), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_body_is_cut_off_at_body_timeout_in_total() {
    let limit = Duration::from_secs(2);
    let Some(mut t) = gateway(Db::Sqlite, "  body_timeout: 2s\n").await else {
        return;
    };
    let s = TcpStream::connect(t.gw().webhook_addr).await.unwrap();
    let (read, mut write) = s.into_split();
    write
        .write_all(b"POST /webhook HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // 10 bytes every 500ms: each gap well within the timeout, the whole body 50s.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"          ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut r = BufReader::new(read);
    let status = tokio::time::timeout(limit + SLACK, read_response(&mut r))
        .await
        .expect("answered within body_timeout");
    let took = started.elapsed();
    assert_eq!(status, 408);
    assert!(
        took >= limit - Duration::from_millis(50),
        "cut off after {took:?}"
    );
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(SLACK, r.read_to_end(&mut rest)).await;
    assert!(eof.is_ok(), "the connection is closed after the 408");
    trickle.abort();
    assert_eq!(webhooks(&t, "body_timeout"), 1);
    t.stop().await;
}

const MIB3: usize = 3 * 1024 * 1024;

/// A valid envelope padded with JSON whitespace to `len` bytes.
fn envelope_of_len(wamid: &str, len: usize) -> Vec<u8> {
    let env = text_envelope(&[(WABA, PNID, vec![("919800000003", wamid, "big")])]);
    let mut body = serde_json::to_vec(&env).unwrap();
    body.resize(len, b' ');
    body
}

async fn three_mib_is_accepted_and_one_byte_more_is_413(db: Db) {
    let Some(mut t) = gateway(db, "").await else {
        return;
    };
    assert_eq!(
        t.post_signed(&envelope_of_len("wamid.3MIB", MIB3)).await,
        200
    );
    assert_eq!(
        t.post_signed(&envelope_of_len("wamid.3MIB1", MIB3 + 1))
            .await,
        413
    );
    // Without a Content-Length, the limit applies as the body streams in.
    let body = envelope_of_len("wamid.CHUNKED", MIB3 + 1);
    let sig = wa_gateway::cloudapi::signature::sign(APP_SECRET.as_bytes(), &body);
    let mut s = BufReader::new(TcpStream::connect(t.gw().webhook_addr).await.unwrap());
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: gw\r\nX-Hub-Signature-256: {sig}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut wire = head.into_bytes();
    for chunk in body.chunks(64 * 1024) {
        wire.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading it all.
    let _ = s.get_mut().write_all(&wire).await;
    assert_eq!(read_response(&mut s).await, 413);
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox").await, 1);
    assert_eq!(webhooks(&t, "too_large"), 2);
    t.stop().await;
}

on_both_dbs!(three_mib_is_accepted_and_one_byte_more_is_413);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_beyond_max_inflight_bodies_wait_then_get_503() {
    let Some(mut t) = gateway(
        Db::Sqlite,
        "  header_timeout: 1s\n  body_timeout: 5s\n  max_inflight_bodies: 2\n",
    )
    .await
    else {
        return;
    };
    // Two POSTs whose bodies never come hold both slots until body_timeout.
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(t.gw().webhook_addr).await.unwrap();
        s.write_all(b"POST /webhook HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n")
            .await
            .unwrap();
        hogs.push(s);
    }
    let body = serde_json::to_vec(&text_envelope(&[(
        WABA,
        PNID,
        vec![("919800000004", "wamid.WAITED", "hello")],
    )]))
    .unwrap();
    // Until both hogs hold their slot, a POST may still get one.
    let refused_after = std::cell::Cell::new(Duration::ZERO);
    let held = wait_until(Duration::from_secs(3), || async {
        let sent = Instant::now();
        let status = t.post_signed(&body).await;
        refused_after.set(sent.elapsed());
        status == 503
    })
    .await;
    assert!(held, "a third webhook is refused while two bodies are read");
    let waited = refused_after.get();
    assert!(
        waited >= Duration::from_millis(950),
        "refused after {waited:?}, without waiting"
    );
    assert!(webhooks(&t, "busy") >= 1);
    // Once the hogs run out of body_timeout, their slots serve again.
    assert!(
        wait_until(Duration::from_secs(5) + SLACK, || async {
            webhooks(&t, "body_timeout") == 2
        })
        .await,
        "both hogs cut off at body_timeout"
    );
    assert_eq!(t.post_signed(&body).await, 200);
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox").await, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_connection_limits() {
    let Some(mut t) = gateway(Db::Sqlite, "  header_timeout: 1s\n  idle_timeout: 1s\n").await
    else {
        return;
    };
    let before = idle_h2(t.gw().webhook_addr, Duration::from_secs(1) + SLACK).await;
    assert_eq!(before.max_streams, Some(32), "the default: {before:?}");
    t.reload_with(|y| {
        y.replace(
            "  idle_timeout: 1s\n",
            "  idle_timeout: 2s\n  h2_max_streams: 5\n",
        )
    })
    .await;
    let after = idle_h2(t.gw().webhook_addr, Duration::from_secs(2) + SLACK).await;
    assert_eq!(after.max_streams, Some(5), "{after:?}");
    let closed = after.closed_after.expect("closed");
    assert!(
        closed >= Duration::from_millis(1950),
        "the new idle_timeout: {after:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_client_waits_for_a_free_one() {
    let header = Duration::from_secs(2);
    let Some(mut t) = gateway(Db::Sqlite, "  header_timeout: 2s\n  max_connections: 2\n").await
    else {
        return;
    };
    let addr = t.gw().webhook_addr;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    assert!(wait_until(header, || async { open_gauge(&t, "webhook") == 2 }).await);
    // The kernel completes the handshake; the gateway takes it once a slot frees.
    let mut third = BufReader::new(TcpStream::connect(addr).await.unwrap());
    third
        .get_mut()
        .write_all(HANDSHAKE.as_bytes())
        .await
        .unwrap();
    let status = tokio::time::timeout(header + SLACK, read_response(&mut third))
        .await
        .expect("served once the silent ones are closed");
    assert_eq!(status, 200);
    let waited = started.elapsed();
    assert!(
        waited >= header - Duration::from_millis(50),
        "served after {waited:?}"
    );
    // The second silent one may close a moment after the first freed the slot.
    assert!(wait_until(SLACK, || async { timeouts(&t, "webhook", "header") == 2 }).await);
    t.stop().await;
}
