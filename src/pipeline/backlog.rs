//! The work found open at start on one process (SQLite): replies not yet settled, then messages
//! waiting for their turn, read from storage a page at a time in id order and handed out only
//! as earlier ones finish, so a backlog of any size starts in bounded memory. While it lasts,
//! the rows the writer commits meanwhile are read from storage in their turn too (it pages up
//! to the newest row), which keeps every conversation in arrival order.

use super::Work;
use crate::serve::state::AppState;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Rows read per page.
const PAGE: i64 = 512;

/// Which open rows are being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Replies left open (they leave before anything newer of their conversation).
    Outbox,
    /// Messages waiting for their turn, up to the newest.
    Inbox,
    /// Nothing left: new rows come from the writer.
    Done,
}

/// The backlog's reading position and the page in hand.
pub(super) struct Backlog {
    phase: Phase,
    /// The last id read in the current phase.
    after: i64,
    page: VecDeque<Work>,
    /// The highest inbound id handed out: the writer's push of that row, if it comes after the
    /// backlog ended, is a duplicate.
    fed_upto: i64,
    /// Backlog items in the pipeline at once.
    tickets: Arc<Semaphore>,
}

impl Backlog {
    /// A backlog letting `in_flight` items into the pipeline at once.
    pub(super) fn new(in_flight: usize) -> Self {
        Self {
            phase: Phase::Outbox,
            after: 0,
            page: VecDeque::new(),
            fed_upto: 0,
            tickets: Arc::new(Semaphore::new(in_flight.max(1))),
        }
    }

    /// Whether there may be more to read.
    pub(super) fn is_open(&self) -> bool {
        self.phase != Phase::Done
    }

    /// A slot for the next backlog item; waits while `in_flight` items are being worked on.
    pub(super) async fn ticket(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        self.tickets
            .clone()
            .acquire_owned()
            .await
            .expect("backlog semaphore open")
    }

    /// Whether a committed inbound row `id` pushed by the writer is the backlog's to hand out
    /// (it reads up to the newest row while it lasts) or was handed out by it already.
    pub(super) fn covers(&self, id: i64) -> bool {
        self.is_open() || id <= self.fed_upto
    }

    /// The next item, reading a page when the one in hand is used up; `None` once nothing is
    /// left (or the gateway is stopping).
    pub(super) async fn next(&mut self, state: &AppState) -> Option<Work> {
        loop {
            if let Some(work) = self.page.pop_front() {
                if let Work::Inbound(row) = &work {
                    self.fed_upto = self.fed_upto.max(row.id);
                }
                return Some(work);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Outbox => {
                    let after = self.after;
                    let rows = state
                        .persist("backlog read", || state.store.open_outbox_page(after, PAGE))
                        .await?;
                    match rows.last() {
                        Some(last) => self.after = last.id,
                        None => (self.phase, self.after) = (Phase::Inbox, 0),
                    }
                    self.page.extend(rows.into_iter().map(Work::Resume));
                }
                Phase::Inbox => {
                    let after = self.after;
                    let rows = state
                        .persist("backlog read", || state.store.open_inbox_page(after, PAGE))
                        .await?;
                    match rows.last() {
                        Some(last) => self.after = last.id,
                        None => {
                            self.phase = Phase::Done;
                            tracing::info!("backlog found at start handed out");
                        }
                    }
                    self.page.extend(rows.into_iter().map(Work::Inbound));
                }
            }
        }
    }
}
