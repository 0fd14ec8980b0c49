//! PostgreSQL connections for the statements every message pays (a replica's conversation reads,
//! the send check, the group commit), kept without sqlx's pool: the pool pings a connection
//! (one round trip) each time it hands it out and again each time it takes it back, which would
//! triple the round trips of a one-statement read. A connection here is handed out as it is and
//! put back only after a statement that completed: one whose caller gave up half-way (its future
//! dropped mid-statement) or that failed is closed, as its protocol state is unknown.

use super::StoreError;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::sync::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Up to `size` connections to one database, opened when first needed.
#[derive(Debug)]
pub struct PgConns {
    opts: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    slots: Semaphore,
}

impl PgConns {
    pub fn new(opts: PgConnectOptions, size: usize) -> Self {
        Self {
            opts,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size.max(1)),
        }
    }

    /// A connection of its own for the caller, waiting while all are in use.
    pub async fn get(&self) -> Result<PgConn<'_>, StoreError> {
        let permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| StoreError::Batch("storage connections closed".into()))?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => PgConnection::connect_with(&self.opts).await?,
        };
        Ok(PgConn {
            conn: Some(conn),
            home: self,
            _permit: permit,
            clean: false,
        })
    }

    /// Runs `f` on a connection of its own: the connection goes back for the next caller only
    /// if `f` completed without an error.
    pub async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.get().await?;
        let result = f(c.conn()).await;
        c.clean = result.is_ok();
        result
    }

    /// Closes the idle connections (those in use close when given back after this).
    pub async fn close(&self) {
        self.slots.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for c in idle {
            let _ = c.close().await;
        }
    }
}

/// A connection handed out by [`PgConns::get`]; back in the set when dropped after a statement
/// that completed.
pub struct PgConn<'a> {
    conn: Option<PgConnection>,
    home: &'a PgConns,
    _permit: SemaphorePermit<'a>,
    /// Whether the last use completed: only then is the connection reused.
    clean: bool,
}

impl PgConn<'_> {
    /// The connection, for one use; [`completed`](Self::completed) says it went well.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.clean = false;
        self.conn.as_mut().expect("present until dropped")
    }

    /// The last use completed: the connection may serve the next caller.
    pub fn completed(&mut self) {
        self.clean = true;
    }
}

impl Drop for PgConn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && self.clean
            && !self.home.slots.is_closed()
        {
            self.home
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}
