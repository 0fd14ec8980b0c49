//! Serving an axum router on a TCP listener the way a daemon must: optional TLS, HTTP/1.1 and
//! HTTP/2, a cap on open connections, deadlines for silent, slow and idle ones (`conn`), and a
//! graceful drain on shutdown.

mod activity;
mod conn;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use prometheus::{IntCounter, IntGauge};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The bounds every connection of a listener lives within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From the accept to the first request's headers (TLS handshake and protocol detection
    /// included), and from a later request's first byte to its last header byte.
    pub header_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// Most concurrent streams on one HTTP/2 connection.
    pub h2_max_streams: u32,
    /// Most connections open at once; further ones wait in the accept queue.
    pub max_connections: usize,
}

/// The connection metrics of one listener.
#[derive(Clone)]
pub struct ConnMetrics {
    open: IntGauge,
    handshake: IntCounter,
    header: IntCounter,
    idle: IntCounter,
}

impl ConnMetrics {
    /// The series of the listener `endpoint` (webhook, admin).
    pub fn new(m: &crate::metrics::Metrics, endpoint: &str) -> Self {
        let timeouts = &m.http.connection_timeouts;
        let timeout = |why: activity::Expiry| timeouts.with_label_values(&[endpoint, why.label()]);
        Self {
            open: m.http.connections_open.with_label_values(&[endpoint]),
            handshake: timeout(activity::Expiry::Handshake),
            header: timeout(activity::Expiry::Header),
            idle: timeout(activity::Expiry::Idle),
        }
    }

    fn timed_out(&self, why: activity::Expiry) {
        match why {
            activity::Expiry::Handshake => self.handshake.inc(),
            activity::Expiry::Header => self.header.inc(),
            activity::Expiry::Idle => self.idle.inc(),
        }
    }
}

/// A connection's place among `max_connections`, counted in the open gauge while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header timeout also times the wait between kept-alive requests; the
    // connection's watchdog keeps the two apart instead.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    // Pings find peers that vanished while a request was in flight; an idle connection is
    // closed by the watchdog whatever the pings say.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(limits.header_timeout);
    builder
}

/// A connection waiting in `listener`'s accept queue, taken without waiting (the socket is
/// non-blocking); `None` when the queue is empty. Asked of the socket itself: the runtime's
/// readiness for it may not have seen the last arrivals yet.
fn accept_queued(listener: &TcpListener) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    let (socket, peer) = socket2::SockRef::from(listener).accept().ok()?;
    let peer = peer.as_socket()?;
    socket.set_nonblocking(true).ok()?;
    let stream = tokio::net::TcpStream::from_std(socket.into()).ok()?;
    Some((stream, peer))
}

/// Serves `router` on `listener` until `shutdown` (the gateway's, or a reload retiring this accept
/// loop), then lets open requests finish (up to `drain`) and closes what remains. With `tls`,
/// each connection first completes a TLS handshake. The socket closes when the last loop
/// sharing it lets go.
pub async fn serve(
    listener: Arc<TcpListener>,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    metrics: ConnMetrics,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let builder = Arc::new(builder(&limits));
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let connections = TaskTracker::new();
    // Connections drain only once the socket is closed: one told to close earlier could be
    // replaced by a client's new connection into the accept queue, which the close then resets.
    let drain_now = CancellationToken::new();
    let kill = CancellationToken::new();
    let start = |stream: tokio::net::TcpStream, peer, permit| {
        let _ = stream.set_nodelay(true);
        metrics.open.inc();
        let slot = Slot {
            _permit: permit,
            open: metrics.open.clone(),
        };
        let conn = conn::Conn {
            accepted: tokio::time::Instant::now(),
            peer,
            builder: builder.clone(),
            limits,
            metrics: metrics.clone(),
            stop: drain_now.clone(),
            kill: kill.clone(),
        };
        let (router, acceptor) = (router.clone(), acceptor.clone());
        connections.spawn(async move {
            conn.run(stream, router, acceptor).await;
            drop(slot);
        });
    };
    loop {
        // At the cap, connections wait in the kernel's accept queue rather than in memory here.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        start(stream, peer, permit);
    }
    // Connections the kernel already completed into the accept queue would be reset by the
    // close (a client's request on one fails half-way): the last loop on the socket takes and
    // serves them first, without waiting for more. A loop that shares the socket with the
    // generation replacing it takes none: they are that generation's, to be served with its
    // settings (a reload's new body limit, say), not with those of the loop retiring.
    if let Some(listener) = Arc::into_inner(listener) {
        while let Ok(permit) = slots.clone().try_acquire_owned()
            && let Some((stream, peer)) = accept_queued(&listener)
        {
            start(stream, peer, permit);
        }
    }
    drain_now.cancel();
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "connections still open after the drain deadline; closing them"
        );
        kill.cancel();
        connections.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request sent on a connection that waits in the accept queue when its listener retires.
    async fn answered_after_retiring() -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The kernel completes the handshake into the accept queue; nothing has accepted yet.
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let router = Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
        let metrics = ConnMetrics::new(&crate::metrics::Metrics::new(), "webhook");
        // Retired before it ever runs: the loop may stop before accepting anything.
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let listener = Arc::new(listener);
        let server = tokio::spawn(serve(
            listener,
            router,
            None,
            limits(),
            metrics,
            shutdown,
            Duration::from_secs(5),
        ));
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        server.await.unwrap();
        answer
    }

    /// A router answering `GET /who` with `name`.
    fn named(name: &'static str) -> Router {
        Router::new().route("/who", axum::routing::get(move || async move { name }))
    }

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            h2_max_streams: 10,
            max_connections: 10,
        }
    }

    #[tokio::test]
    async fn a_connection_queued_when_a_loop_retires_beside_its_successor_is_the_successors() {
        let metrics = ConnMetrics::new(&crate::metrics::Metrics::new(), "webhook");
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let (old_stop, new_stop) = (CancellationToken::new(), CancellationToken::new());
        let loop_of = |router, stop: &CancellationToken| {
            serve(
                listener.clone(),
                router,
                None,
                limits(),
                metrics.clone(),
                stop.clone(),
                Duration::from_secs(5),
            )
        };
        let old = tokio::spawn(loop_of(named("old"), &old_stop));
        let new = tokio::spawn(loop_of(named("new"), &new_stop));
        drop(listener);
        // Both loops wait on the socket. A connection completes into the accept queue (a
        // blocking connect: the runtime has not polled for it), and the old loop is retired
        // before either could accept it, as a reload that changed the settings does.
        tokio::task::yield_now().await;
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(
            &mut client,
            b"GET /who HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        old_stop.cancel();
        old.await.unwrap();
        let mut client = tokio::net::TcpStream::from_std({
            client.set_nonblocking(true).unwrap();
            client
        })
        .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(
            text.ends_with("new"),
            "served by the retired loop: {text:?}"
        );
        new_stop.cancel();
        new.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_queued_when_the_listener_retires_is_served_not_reset() {
        // The loop's own choice between accepting and stopping is random: many tries.
        for _ in 0..20 {
            let answer = answered_after_retiring().await;
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        }
    }
}
