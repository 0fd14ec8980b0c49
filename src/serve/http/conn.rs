//! One connection from accept to close: the TLS handshake, HTTP/1.1 or HTTP/2, and the watchdog
//! that closes it when a deadline of its `Activity` passes or its listener drains.

use super::activity::{Activity, Expiry, InFlight, Tracked, TrackedBody};
use super::{ConnMetrics, Limits};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// What a connection's task needs besides its socket.
pub struct Conn {
    pub accepted: Instant,
    pub peer: SocketAddr,
    pub builder: Arc<Builder<TokioExecutor>>,
    pub limits: Limits,
    pub metrics: ConnMetrics,
    /// The listener drains: finish the requests in flight, take no more.
    pub stop: CancellationToken,
    /// The drain deadline passed: close now.
    pub kill: CancellationToken,
}

impl Conn {
    /// Serves `stream` until the client closes it, a deadline passes or the listener stops.
    pub async fn run(self, stream: TcpStream, router: Router, tls: Option<TlsAcceptor>) {
        let activity = Activity::new(self.accepted);
        let Some(acceptor) = tls else {
            return self
                .serve(Tracked::new(stream, activity.clone()), activity, router)
                .await;
        };
        // The handshake counts against the time the first request's headers get.
        let deadline = self.accepted + self.limits.header_timeout;
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                self.serve(Tracked::new(s, activity.clone()), activity, router)
                    .await
            }
            Ok(Err(e)) => tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            Err(_) => {
                self.metrics.timed_out(Expiry::Handshake);
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
            }
        }
    }

    async fn serve<S>(&self, io: Tracked<S>, activity: Arc<Activity>, router: Router)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TrackedService {
            inner: TowerToHyperService::new(router),
            activity: activity.clone(),
        };
        let mut conn = pin!(
            self.builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
        );
        let (header, idle) = (self.limits.header_timeout, self.limits.idle_timeout);
        let mut draining = false;
        // Told to stop before its first request came (taken from the accept queue as its
        // listener retired, its request already sent): the close waits until that request has
        // been served, or until its header deadline.
        let mut stop_after_first = false;
        // Made once, not at every turn of the loop: each `cancelled()` future made and dropped
        // registers with, and leaves, a lock that every connection of the listener shares.
        let mut stop = pin!(self.stop.cancelled());
        let mut kill = pin!(self.kill.cancelled());
        // The timer is armed at the earliest deadline seen and moved only to an earlier one: a
        // deadline that moved later (every request on a kept-alive connection moves it) is found
        // when the timer fires, which then re-arms it. One timer change per deadline period,
        // not two per request.
        let far = || Instant::now() + Duration::from_secs(86_400);
        let mut timer = pin!(tokio::time::sleep_until(far()));
        loop {
            if let Some((at, _)) = activity.deadline(header, idle)
                && at < timer.deadline()
            {
                timer.as_mut().reset(at);
            }
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = activity.changed() => {
                    if stop_after_first && !activity.is_opening() {
                        stop_after_first = false;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = timer.as_mut() => {
                    // With no deadline (a request in flight), wake once a day to look again.
                    let (at, why) = activity.deadline(header, idle).unwrap_or((far(), Expiry::Idle));
                    if at > Instant::now() {
                        timer.as_mut().reset(at);
                        continue;
                    }
                    self.metrics.timed_out(why);
                    tracing::debug!(peer = %self.peer, reason = why.label(), "closing the connection: its deadline passed");
                    if why == Expiry::Idle && !draining {
                        // Say goodbye (HTTP/2 GOAWAY) so the client does not reuse it, briefly.
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(header, conn.as_mut()).await;
                    }
                    return;
                }
                _ = stop.as_mut(), if !draining => {
                    draining = true;
                    if activity.is_opening() {
                        stop_after_first = true;
                    } else {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = kill.as_mut() => return,
            }
        }
    }
}

/// The router, marking each request in flight on the connection until its response is sent.
#[derive(Clone)]
struct TrackedService {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl Service<Request<Incoming>> for TrackedService {
    type Response = Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight: InFlight = self.activity.begin();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody::new(body, in_flight)))
        })
    }
}
