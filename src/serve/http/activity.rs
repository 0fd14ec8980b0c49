//! What one connection is doing, as its deadlines need it: opening (no request yet), serving
//! requests, or idle between them. Filled in by wrappers around the socket (bytes read) and
//! the service (requests begun, responses finished); read by the connection's watchdog.

use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// The bytes an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection's deadline closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The TLS handshake did not finish within `header_timeout` of the accept.
    Handshake,
    /// Silent, or stopped inside a request's headers.
    Header,
    /// No request for `idle_timeout`.
    Idle,
}

impl Expiry {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Header => "header",
            Self::Idle => "idle",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// From the accept to the first request (or, on HTTP/2, to the client's preface).
    Opening,
    /// This many requests are being served.
    Busy(usize),
    /// No request since `since`; on HTTP/1, `reading` is when the next request's first bytes came.
    Idle {
        since: Instant,
        reading: Option<Instant>,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The first bytes read, until they prove (or rule out) the HTTP/2 preface.
    prefix: Vec<u8>,
    h2: bool,
}

/// The shared record of one connection.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    state: Mutex<State>,
    changed: Notify,
}

impl Activity {
    /// A connection accepted at `accepted`.
    pub fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            accepted,
            state: Mutex::new(State {
                phase: Phase::Opening,
                prefix: Vec::with_capacity(H2_PREFACE.len()),
                h2: false,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection must be closed, and why; `None` while a request is in flight.
    pub fn deadline(&self, header: Duration, idle: Duration) -> Option<(Instant, Expiry)> {
        match self.lock().phase {
            Phase::Opening => Some((self.accepted + header, Expiry::Header)),
            Phase::Busy(_) => None,
            Phase::Idle {
                reading: Some(at), ..
            } => Some((at + header, Expiry::Header)),
            Phase::Idle { since, .. } => Some((since + idle, Expiry::Idle)),
        }
    }

    /// Whether the connection's first request (or HTTP/2 preface) has yet to come.
    pub fn is_opening(&self) -> bool {
        self.lock().phase == Phase::Opening
    }

    /// Resolves after the deadline may have moved earlier (or appeared).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut s = self.lock();
        if s.prefix.len() < H2_PREFACE.len() {
            let take = bytes.len().min(H2_PREFACE.len() - s.prefix.len());
            s.prefix.extend_from_slice(&bytes[..take]);
            if s.prefix[..] == H2_PREFACE[..] && s.phase == Phase::Opening {
                // An HTTP/2 client may open early and send its first request much later:
                // from the preface on, the connection is idle, not slow.
                s.h2 = true;
                s.phase = Phase::Idle {
                    since: Instant::now(),
                    reading: None,
                };
            }
        }
        // HTTP/2 frames between requests (pings, window updates) are not a request starting.
        if let Phase::Idle {
            since,
            reading: None,
        } = s.phase
            && !s.h2
        {
            s.phase = Phase::Idle {
                since,
                reading: Some(Instant::now()),
            };
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Marks a request begun; the returned guard marks it finished when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = self.lock();
        s.phase = match s.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
        InFlight(self.clone())
    }
}

/// A request being served; dropping it (with the response body, or the response future when the
/// client went away first) ends it.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.phase = match s.phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle {
                since: Instant::now(),
                reading: None,
            },
        };
        drop(s);
        self.0.changed.notify_one();
    }
}

/// A socket that reports the bytes read from it to its connection's `Activity`.
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.activity.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped).
pub struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub fn new(inner: axum::body::Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for TrackedBody {
    type Data = <axum::body::Body as Body>::Data;
    type Error = <axum::body::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(75);

    fn due(a: &Activity) -> Option<(Instant, Expiry)> {
        a.deadline(HEADER, IDLE)
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_phase() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(due(&a), Some((t0 + HEADER, Expiry::Header)));
        a.read(b"GET / HTTP/1.1\r\n");
        // Bytes of the first request do not move its deadline.
        assert_eq!(due(&a), Some((t0 + HEADER, Expiry::Header)));
        let first = a.begin();
        let second = a.begin();
        assert_eq!(due(&a), None);
        drop(first);
        assert_eq!(due(&a), None, "one request still in flight");
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(second);
        let t1 = Instant::now();
        assert_eq!(due(&a), Some((t1 + IDLE, Expiry::Idle)));
        tokio::time::advance(Duration::from_secs(30)).await;
        a.read(b"GE");
        let t2 = Instant::now();
        assert_eq!(due(&a), Some((t2 + HEADER, Expiry::Header)));
        a.read(b"T / HTTP/1.1\r\n");
        assert_eq!(due(&a), Some((t2 + HEADER, Expiry::Header)));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_is_idle_from_its_preface_and_frames_do_not_count_as_requests() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        tokio::time::advance(Duration::from_secs(1)).await;
        // The preface may come in pieces.
        a.read(&H2_PREFACE[..10]);
        assert_eq!(due(&a), Some((t0 + HEADER, Expiry::Header)));
        a.read(&H2_PREFACE[10..]);
        let t1 = Instant::now();
        assert_eq!(due(&a), Some((t1 + IDLE, Expiry::Idle)));
        tokio::time::advance(Duration::from_secs(10)).await;
        a.read(b"\0\0\x08\x06\0\0\0\0\0ping-ack");
        assert_eq!(due(&a), Some((t1 + IDLE, Expiry::Idle)));
        drop(a.begin());
        let t2 = Instant::now();
        a.read(b"\0\0\x04\x08\0\0\0\0\0\0\0\0\x01");
        assert_eq!(due(&a), Some((t2 + IDLE, Expiry::Idle)));
    }
}
