//! Several replicas on one PostgreSQL: this replica's identity, leader election (a session
//! advisory lock on a connection of its own) and the record of leader-only cycles. On SQLite
//! the one process is always the leader. Conversation work is shared in `pipeline::cluster`.

use crate::metrics::Metrics;
use crate::store::Store;
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The advisory lock whose holder is the leader ("wagwlead").
const LEADER_LOCK: i64 = 0x7761_6777_6c65_6164;
/// How often a follower tries to become the leader, and the leader checks its connection.
const ELECTION_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a statement on the election connection may take before it counts as lost.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// A name for this process, unique in the cluster: `WA_GATEWAY_REPLICA_ID` if set, else the
/// host name (the pod name under Kubernetes), the process id and a random suffix, so a
/// restarted process never inherits the claims of the one it replaces.
pub fn replica_id() -> String {
    if let Ok(id) = std::env::var("WA_GATEWAY_REPLICA_ID")
        && !id.trim().is_empty()
    {
        return id.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wa-gateway".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Whether this replica is the leader now, and a way to wait for it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    replica: Arc<str>,
}

impl Leadership {
    /// The only process there is (SQLite): always the leader.
    pub fn always(replica: &str) -> Self {
        let (tx, rx) = watch::channel(true);
        // The receiver keeps the last value once the sender is gone.
        drop(tx);
        Self {
            rx,
            replica: Arc::from(replica),
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether this replica is the leader now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver of leadership changes (`true` while leader), for loops that run only on the
    /// leader: `wait_for(|l| *l)` before a cycle, `changed()` to notice losing it.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Waits until this replica is the leader; `false` if `stop` came first.
    pub async fn wait_until_leader(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.rx.clone();
        tokio::select! {
            r = rx.wait_for(|leader| *leader) => r.is_ok() || self.is_leader(),
            _ = stop.cancelled() => false,
        }
    }

    /// Runs one cycle of leader-only `task` if this replica is the leader, recording its start
    /// and end in `leader_runs` on PostgreSQL (so overlaps between replicas would show). A cycle
    /// whose start cannot be recorded does not run. `None`: not run.
    pub async fn run_cycle<T>(
        &self,
        store: &Store,
        task: &str,
        cycle: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        if !self.is_leader() {
            return None;
        }
        if !store.is_shared() {
            return Some(cycle.await);
        }
        let run = match store.leader_run_started(task).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(task, error = %e, "cannot record a leader cycle; skipping it");
                return None;
            }
        };
        // Leadership may have moved while the start was written.
        if !self.is_leader() {
            let _ = store.leader_run_ended(run).await;
            return None;
        }
        let out = cycle.await;
        if let Err(e) = store.leader_run_ended(run).await {
            tracing::warn!(task, error = %e, "cannot record the end of a leader cycle");
        }
        Some(out)
    }
}

/// Starts leader election on PostgreSQL: a connection of its own tries `pg_try_advisory_lock`
/// every second; whoever holds the lock leads until its connection ends (a killed process
/// loses it at once, so leadership moves within seconds). Stops, releasing the lock, on
/// `stop`. The returned task ends once the lock is released.
pub fn spawn_election(
    store: &Store,
    metrics: Metrics,
    stop: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let replica: Arc<str> = Arc::from(store.replica());
    let (tx, rx) = watch::channel(false);
    let leadership = Leadership {
        rx,
        replica: replica.clone(),
    };
    let opts = store.pg_connect_options();
    let task = tokio::spawn(async move {
        let Some(opts) = opts else { return };
        let mut conn: Option<sqlx::PgConnection> = None;
        let mut leader = false;
        let set = |leader: bool| {
            metrics.leader.set(i64::from(leader));
            tx.send_replace(leader);
        };
        loop {
            match conn.as_mut() {
                None => match tokio::time::timeout(
                    ELECTION_TIMEOUT,
                    sqlx::PgConnection::connect_with(&opts),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        conn = Some(c);
                        continue;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "leader election cannot connect"),
                    Err(_) => tracing::warn!("leader election cannot connect: timed out"),
                },
                Some(c) => {
                    // The leader only checks that its session (and so its lock) still lives.
                    let query = if leader {
                        sqlx::query_scalar::<_, bool>("SELECT true")
                    } else {
                        sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                            .bind(LEADER_LOCK)
                    };
                    let asked =
                        tokio::time::timeout(ELECTION_TIMEOUT, query.fetch_one(&mut *c)).await;
                    match asked {
                        Ok(Ok(true)) if !leader => {
                            leader = true;
                            set(true);
                            tracing::info!(replica = %replica, "this replica is now the leader");
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) | Err(_) => {
                            if leader {
                                leader = false;
                                set(false);
                                tracing::warn!(replica = %replica, "lost leadership: the election connection to PostgreSQL failed");
                            }
                            // Dropping the connection ends the session and any lock it held.
                            conn = None;
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(ELECTION_INTERVAL) => {}
                _ = stop.cancelled() => break,
            }
        }
        if leader {
            set(false);
            tracing::info!(replica = %replica, "leadership released");
        }
        if let Some(mut c) = conn {
            if leader {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(LEADER_LOCK)
                    .execute(&mut c)
                    .await;
            }
            let _ = c.close().await;
        }
    });
    (leadership, task)
}
