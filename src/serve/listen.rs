//! The webhook and admin endpoints as a reload sees them: each is a listening socket served by
//! one "generation" of the accept loop. A reload that changes how an endpoint serves (TLS on or
//! off, timeouts, connection and body limits) hands the same socket to a new accept loop, which starts
//! before the old one stops: connections waiting in the backlog are taken by the new one. A
//! reload that moves an endpoint binds the new address first, then lets the old socket serve
//! for `LINGER` more (clients mid-connect, load balancers still pointing there) before closing
//! it. Either way the retired generation finishes the requests it holds.

use crate::config::{Listen, TlsFiles};
use crate::serve::tls::CertResolver;
use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The running HTTP endpoints, which a reload may move or reconfigure.
#[derive(Clone)]
pub struct Endpoints {
    /// Where Meta delivers webhooks.
    pub webhook: Arc<Endpoint>,
    /// The admin API and status page.
    pub admin: Arc<Endpoint>,
}

impl Endpoints {
    /// The webhook endpoint's URL as bound now.
    pub fn webhook_url(&self) -> String {
        let scheme = if self.webhook.tls() { "https" } else { "http" };
        format!("{scheme}://{}/webhook", self.webhook.addr())
    }
}

/// How long a moved endpoint's old address keeps accepting after the new one serves.
pub const LINGER: Duration = Duration::from_secs(2);

/// Builds an endpoint's router from the listen settings (the webhook's body limits).
pub type MakeRouter = Box<dyn Fn(&Listen) -> Router + Send + Sync>;

/// The TLS files an endpoint serves with, if any (`listen.tls` for the webhook, `listen.admin_tls`
/// for the admin listener).
pub type TlsOf = fn(&Listen) -> Option<&TlsFiles>;

/// What a generation serves with, beyond the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    tls: bool,
    limits: crate::serve::http::Limits,
    max_body_bytes: usize,
    body_timeout: Duration,
    max_inflight_bodies: usize,
}

struct Generation {
    /// The address as configured (port 0 stays 0 here, so an unchanged file binds nothing).
    configured: SocketAddr,
    bound: SocketAddr,
    /// The accept loop owns the socket; this only reaches it for a hand-over, so the socket
    /// closes when its last loop ends.
    listener: Weak<TcpListener>,
    settings: Settings,
    stop: CancellationToken,
}

/// A change to one endpoint, prepared (the new socket bound) but not yet in force.
pub struct Prepared {
    configured: SocketAddr,
    bound: SocketAddr,
    listener: Arc<TcpListener>,
    settings: Settings,
    router: Router,
    tls: Option<Arc<CertResolver>>,
}

/// One of the gateway's HTTP endpoints.
pub struct Endpoint {
    what: &'static str,
    /// Which TLS files (when configured) apply to this endpoint.
    tls_of: TlsOf,
    make_router: MakeRouter,
    metrics: crate::serve::http::ConnMetrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// How long a retired generation waits for its open requests.
    drain: Duration,
    current: Mutex<Generation>,
}

/// Binds `addr` for the endpoint `what`, with an error that says what to check.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

/// A listening socket that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}; is another process using it?")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

fn settings(listen: &Listen, tls_of: TlsOf) -> Settings {
    Settings {
        tls: tls_of(listen).is_some(),
        limits: crate::serve::http::Limits {
            header_timeout: listen.header_timeout.get(),
            idle_timeout: listen.idle_timeout.get(),
            h2_max_streams: listen.h2_max_streams,
            max_connections: listen.max_connections,
        },
        max_body_bytes: listen.max_body_bytes,
        body_timeout: listen.body_timeout.get(),
        max_inflight_bodies: listen.max_inflight_bodies,
    }
}

impl Endpoint {
    /// Starts serving `listener` (bound for `configured`) with the router `make_router` builds
    /// for `listen`, counting its connections in `metrics`. Generations run on `tracker` and all
    /// stop with `shutdown`, then wait up to `drain` for their open requests.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        what: &'static str,
        tls_of: TlsOf,
        configured: SocketAddr,
        listener: TcpListener,
        listen: &Listen,
        tls: Option<Arc<CertResolver>>,
        make_router: MakeRouter,
        metrics: crate::serve::http::ConnMetrics,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> Result<Arc<Self>, BindError> {
        let bound = listener.local_addr().map_err(|source| BindError {
            what,
            addr: configured,
            source,
        })?;
        let prepared = Prepared {
            configured,
            bound,
            listener: Arc::new(listener),
            settings: settings(listen, tls_of),
            router: make_router(listen),
            tls: tls.filter(|_| tls_of(listen).is_some()),
        };
        let stop = shutdown.child_token();
        let generation = Generation {
            configured,
            bound,
            listener: Arc::downgrade(&prepared.listener),
            settings: prepared.settings.clone(),
            stop: stop.clone(),
        };
        let endpoint = Arc::new(Self {
            what,
            tls_of,
            make_router,
            metrics,
            tracker,
            shutdown,
            drain,
            current: Mutex::new(generation),
        });
        endpoint.spawn(prepared, stop);
        Ok(endpoint)
    }

    fn spawn(&self, p: Prepared, stop: CancellationToken) {
        self.tracker.spawn(crate::serve::http::serve(
            p.listener,
            p.router,
            p.tls.map(crate::serve::tls::server_config),
            p.settings.limits,
            self.metrics.clone(),
            stop,
            self.drain,
        ));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generation> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the endpoint listens now.
    pub fn addr(&self) -> SocketAddr {
        self.lock().bound
    }

    /// Whether the running generation speaks TLS.
    pub fn tls(&self) -> bool {
        self.lock().settings.tls
    }

    /// Readies the change `listen` asks of this endpoint: `None` when there is none, else the new
    /// generation with its socket bound (a new address) or shared (the same one). Nothing serves
    /// differently until `commit`; dropping the result undoes the bind.
    pub async fn prepare(
        &self,
        listen: &Listen,
        configured: SocketAddr,
        tls: Option<Arc<CertResolver>>,
    ) -> Result<Option<Prepared>, BindError> {
        let wanted = settings(listen, self.tls_of);
        let (same_addr, same_settings, listener, bound) = {
            let g = self.lock();
            (
                g.configured == configured,
                g.settings == wanted,
                g.listener.upgrade(),
                g.bound,
            )
        };
        if same_addr && same_settings {
            return Ok(None);
        }
        let (listener, bound) = if let (true, Some(listener)) = (same_addr, listener) {
            (listener, bound)
        } else {
            let l = bind(self.what, configured).await?;
            let bound = l.local_addr().map_err(|source| BindError {
                what: self.what,
                addr: configured,
                source,
            })?;
            (Arc::new(l), bound)
        };
        Ok(Some(Prepared {
            configured,
            bound,
            listener,
            settings: wanted,
            router: (self.make_router)(listen),
            tls: tls.filter(|_| (self.tls_of)(listen).is_some()),
        }))
    }

    /// Puts a prepared generation in force: it starts accepting before the old one stops, and
    /// the old one finishes the requests it holds (after `LINGER` when the address moved).
    pub fn commit(&self, p: Prepared) {
        let stop = self.shutdown.child_token();
        let old = {
            let mut g = self.lock();
            std::mem::replace(
                &mut *g,
                Generation {
                    configured: p.configured,
                    bound: p.bound,
                    listener: Arc::downgrade(&p.listener),
                    settings: p.settings.clone(),
                    stop: stop.clone(),
                },
            )
        };
        let (what, from, to) = (self.what, old.bound, p.bound);
        self.spawn(p, stop);
        if from == to {
            old.stop.cancel();
            tracing::info!(endpoint = what, addr = %to, "listener settings changed; serving with the new ones");
        } else {
            tracing::info!(endpoint = what, %from, %to, linger = ?LINGER, "listener moved; the old address closes after the linger");
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(LINGER) => old.stop.cancel(),
                    _ = old.stop.cancelled() => {}
                }
            });
        }
    }
}
