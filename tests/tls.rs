//! TLS on the webhook listener over real sockets: a certificate swapped on disk is served from the
//! next handshake on, ALPN offers h2, and a TLS 1.1 ClientHello is refused. The admin listener's
//! own TLS (`listen.admin_tls`) is reloaded the same way and marks the sign-in cookie Secure.

use crate::common;

use common::{Db, Options, TestGateway, VERIFY_TOKEN};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test CA and a leaf it signed for 127.0.0.1 with common name `cn`.
struct Pki {
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_pem: String,
    key_pem: String,
}

fn pki(cn: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{cn} CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf_params.distinguished_name.push(DnType::CommonName, cn);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    Pki {
        ca_der: ca.der().clone(),
        leaf_der: leaf.der().clone(),
        leaf_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// Writes a pair the way a Secret mount changes: each file replaced by a rename.
fn install(dir: &Path, pki: &Pki) {
    for (name, text) in [("tls.key", &pki.key_pem), ("tls.crt", &pki.leaf_pem)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

async fn start_tls(first: &Pki) -> (TestGateway, std::path::PathBuf) {
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let tls_dir = storage.dir.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    install(&tls_dir, first);
    let yaml = common::config_yaml(&storage.url, &Options::default(), "echo").replace(
        "  admin: 127.0.0.1:0\n",
        &format!(
            "  admin: 127.0.0.1:0\n  tls: {{ cert: {}, key: {} }}\n",
            tls_dir.join("tls.crt").display(),
            tls_dir.join("tls.key").display()
        ),
    );
    (common::start_from_yaml(storage, &yaml).await, tls_dir)
}

/// Handshakes with a client trusting `roots`, offering h2 and http/1.1; returns the leaf the
/// server presented and the protocol it chose.
async fn handshake(
    addr: std::net::SocketAddr,
    roots: &[&CertificateDer<'static>],
) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].clone();
    (leaf, conn.alpn_protocol().map(<[u8]>::to_vec))
}

fn common_name(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_is_served_on_the_next_handshake() {
    let (one, two) = (pki("wa-gateway leaf one"), pki("wa-gateway leaf two"));
    let (mut tg, tls_dir) = start_tls(&one).await;
    let addr = tg.gw().webhook_addr;
    let roots = [&one.ca_der, &two.ca_der];

    let (leaf, alpn) = handshake(addr, &roots).await;
    assert_eq!(leaf, one.leaf_der);
    assert_eq!(common_name(&leaf), "wa-gateway leaf one");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let expiry = |tg: &TestGateway| tg.gw().state.metrics.tls_cert_expiry.get();
    let first_expiry = expiry(&tg);
    assert!(first_expiry > 0);
    assert!(
        tg.gw()
            .state
            .metrics
            .render()
            .contains("wa_gateway_tls_cert_expiry_timestamp_seconds")
    );

    // HTTP works over it: Meta's verification handshake, on a client trusting the first CA.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&one.ca_der).unwrap())
        .build()
        .unwrap();
    let url = format!(
        "{}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4242",
        tg.webhook_url()
    );
    assert!(url.starts_with("https://"));
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "4242");

    install(&tls_dir, &two);
    // Each try is a fresh handshake: the swap must show without any restart.
    let served = served_after_swap(addr, &roots, &two.leaf_der).await;
    assert_eq!(
        served,
        two.leaf_der,
        "still served {}",
        common_name(&served)
    );
    assert_eq!(common_name(&served), "wa-gateway leaf two");
    // Nothing restarted: the listener is the same and the config did not change.
    assert_eq!(tg.gw().webhook_addr, addr);
    assert!(expiry(&tg) > 0);
    tg.stop().await;
}

/// A TLS 1.1 ClientHello, by hand (no rustls client speaks 1.1): record version 3.2, client
/// version 3.2, two CBC suites that 1.1 clients offer, no extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend([0x01, 0x00]); // null compression only
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x02, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_1_1_client_hello_is_refused() {
    let one = pki("wa-gateway leaf one");
    let (mut tg, _dir) = start_tls(&one).await;
    let mut tcp = TcpStream::connect(tg.gw().webhook_addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server answers or closes");
    match read {
        // An alert record (21): protocol_version or handshake_failure.
        Ok(n) if n > 0 => assert_eq!(buf[0], 21, "not an alert: {:?}", &buf[..n]),
        // Closed or reset without a ServerHello: refused as well.
        Ok(_) | Err(_) => {}
    }
    // The listener still serves modern clients.
    let (leaf, _) = handshake(tg.gw().webhook_addr, &[&one.ca_der]).await;
    assert_eq!(leaf, one.leaf_der);
    tg.stop().await;
}

/// Waits until a fresh handshake with `addr` presents `want`; returns what it presented last.
async fn served_after_swap(
    addr: std::net::SocketAddr,
    roots: &[&CertificateDer<'static>],
    want: &CertificateDer<'static>,
) -> CertificateDer<'static> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (leaf, _) = handshake(addr, roots).await;
        if &leaf == want || tokio::time::Instant::now() >= deadline {
            return leaf;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_its_own_certificate_and_a_secure_cookie() {
    let (one, two) = (pki("admin leaf one"), pki("admin leaf two"));
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let tls_dir = storage.dir.path().join("admin-tls");
    std::fs::create_dir(&tls_dir).unwrap();
    install(&tls_dir, &one);
    let yaml = common::config_yaml(&storage.url, &Options::default(), "echo").replace(
        "  admin: 127.0.0.1:0\n",
        &format!(
            "  admin: 127.0.0.1:0\n  admin_token: {{ value: admin-secret }}\n  admin_tls: {{ cert: {}, key: {} }}\n",
            tls_dir.join("tls.crt").display(),
            tls_dir.join("tls.key").display()
        ),
    );
    let mut tg = common::start_from_yaml(storage, &yaml).await;
    let addr = tg.gw().admin_addr;
    let roots = [&one.ca_der, &two.ca_der];
    let (leaf, _) = handshake(addr, &roots).await;
    assert_eq!(common_name(&leaf), "admin leaf one");
    assert!(!tg.gw().tls, "the webhook listener stays plain");

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&one.ca_der).unwrap())
        .build()
        .unwrap();
    let res = client
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .post(format!("https://{addr}/api/session"))
        .json(&serde_json::json!({ "token": "admin-secret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        tg.http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err(),
        "no plain HTTP on a TLS admin listener"
    );

    install(&tls_dir, &two);
    let served = served_after_swap(addr, &roots, &two.leaf_der).await;
    assert_eq!(common_name(&served), "admin leaf two");
    assert_eq!(tg.gw().current_admin_addr(), addr);
    tg.stop().await;
}
