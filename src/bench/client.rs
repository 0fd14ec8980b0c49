//! The bench's HTTP side: pools of keep-alive HTTP/1.1 connections to the targets (the gateway's
//! replicas), at most `max` busy at once over all of them, each request on its own connection
//! (no pipelining), as Meta posts.
//! hyper's connection API directly: no per-request URI parsing or proxy logic in the way.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// Where webhooks go, parsed once.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: HeaderValue,
    /// The request target (path and query), parsed once and cloned per request.
    pub path: hyper::Uri,
}

impl Target {
    /// Parses and resolves `http://host:port/path`.
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("target {url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            anyhow::bail!(
                "target {url} is not plain http://: the bench posts straight to the gateway's \
                 webhook listener (listen.webhook), not through a TLS proxy"
            );
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("target {url} names no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot resolve {}: {e}", authority.host()))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} resolves to no address", authority.host()))?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).parse()?,
        })
    }
}

/// Why a POST got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
}

/// Keep-alive connections to each target; `post` waits for a free slot when `max` are busy.
pub struct Pool {
    targets: Vec<Target>,
    /// Idle connections, by target.
    idle: Vec<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
    slots: Semaphore,
    opened: AtomicU64,
}

impl Pool {
    /// A pool over `targets` (at least one).
    pub fn new(targets: Vec<Target>, max: usize) -> Self {
        assert!(!targets.is_empty(), "a pool needs a target");
        Self {
            idle: targets.iter().map(|_| Mutex::new(Vec::new())).collect(),
            targets,
            slots: Semaphore::new(max),
            opened: AtomicU64::new(0),
        }
    }

    /// How many targets the pool posts to.
    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// How many TCP connections were opened over the run.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    async fn connect(&self, target: &Target) -> Result<SendRequest<Full<Bytes>>, PostError> {
        let stream = tokio::net::TcpStream::connect(target.addr)
            .await
            .map_err(PostError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when its sender is dropped or the server closes.
        tokio::spawn(conn);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    fn take_idle(&self, target: usize) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle[target].lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn request(target: &Target, body: Bytes, signature: &str) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = target.path.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, target.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(signature) {
            headers.insert("x-hub-signature-256", v);
        }
        req
    }

    /// POSTs `body` with its signature to target number `target` (an index below `targets()`)
    /// and returns the status once the answer's body is read.
    pub async fn post(
        &self,
        target: usize,
        body: Bytes,
        signature: &str,
    ) -> Result<u16, PostError> {
        let _slot = self.slots.acquire().await.expect("the pool never closes");
        let to = &self.targets[target];
        let mut req = Self::request(to, body, signature);
        // An idle connection the server closed fails before the request is written: the
        // request comes back and goes out again on a fresh connection.
        let mut conn = match self.take_idle(target) {
            Some(c) => c,
            None => self.connect(to).await?,
        };
        let mut fresh = false;
        let response = loop {
            let sent = match conn.ready().await {
                Ok(()) => conn.try_send_request(req).await,
                Err(e) if fresh => return Err(e.into()),
                Err(_) => {
                    conn = self.connect(to).await?;
                    fresh = true;
                    continue;
                }
            };
            match sent {
                Ok(r) => break r,
                Err(mut e) => match e.take_message() {
                    Some(r) if !fresh => req = r,
                    _ => return Err(e.into_error().into()),
                },
            }
            conn = self.connect(to).await?;
            fresh = true;
        };
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        self.idle[target]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        Ok(status)
    }
}
