//! Row types and the queries over them, written once for both dialects through `on_pool!`.

use super::{Store, StoreError, on_pool};
use crate::cloudapi::envelope::{MessageType, StatusKind};
use crate::cloudapi::outbound::RecipientKind;
use sqlx::Row;

/// Lifecycle of an inbound message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboxState {
    /// Committed, waiting for its conversation worker.
    Received,
    /// The turn ran; its replies (if any) are in the outbox.
    Done,
    /// For a phone_number_id this gateway does not declare: kept, never handed to an agent.
    Unrouted,
    /// Not for an agent (number disabled, not a customer turn, no customer id).
    Skipped,
    /// The agent failed; `detail` says why.
    Failed,
}

impl InboxState {
    /// The stable string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Done => "done",
            Self::Unrouted => "unrouted",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

/// What a compliance keyword does to the customer's opt-out state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptAction {
    /// The customer opts out.
    Stop,
    /// The customer opts back in.
    Resume,
}

impl OptAction {
    /// The stable string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Resume => "resume",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(Self::Stop),
            "resume" => Some(Self::Resume),
            _ => None,
        }
    }
}

/// A message that is a compliance keyword, recognised when it arrived; the commit records the
/// opt-out (or opt-in) it makes in the same transaction as the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyword {
    pub action: OptAction,
    /// The keyword as configured (e.g. `STOP` for a message `stop!`).
    pub keyword: String,
}

/// An inbound message about to be committed.
#[derive(Clone, Debug)]
pub struct NewInbound {
    pub wamid: String,
    pub phone_number_id: String,
    pub customer: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub customer_name: Option<String>,
    pub msg_type: MessageType,
    pub text: Option<String>,
    /// The message object exactly as Meta sent it (JSON).
    pub payload: String,
    /// Meta's timestamp, Unix seconds.
    pub meta_ts: i64,
    pub state: InboxState,
    pub detail: Option<String>,
    /// The compliance keyword this message is. Committed, it is kept only when it changed the
    /// customer's opt-out state (a repeated STOP, or START from a customer who never opted out,
    /// keeps none): its turn then sends the confirmation instead of calling the agent.
    pub keyword: Option<Keyword>,
    /// The W3C `traceparent` of the webhook that brought the message, when it is traced: its
    /// turn joins that trace. Carried in memory from the commit to the pipeline, not stored
    /// (a message read back from storage starts a trace of its own).
    pub traceparent: Option<String>,
}

impl NewInbound {
    /// Removes NUL characters from every text field, so the row reads back the same from
    /// either database and lookups by its ids never carry a character PostgreSQL refuses
    /// (`crate::text`). The payload is JSON, where a NUL is escaped and kept.
    pub fn strip_nul(&mut self) {
        use crate::text::strip_nul;
        for field in [
            &mut self.wamid,
            &mut self.phone_number_id,
            &mut self.customer,
        ] {
            strip_nul(field);
        }
        if let MessageType::Other(name) = &mut self.msg_type {
            strip_nul(name);
        }
        for field in [
            &mut self.wa_id,
            &mut self.user_id,
            &mut self.customer_name,
            &mut self.text,
        ]
        .into_iter()
        .flatten()
        {
            strip_nul(field);
        }
    }
}

/// A committed inbound message.
#[derive(Clone, Debug)]
pub struct InboxRow {
    pub id: i64,
    pub received_at: i64,
    pub msg: NewInbound,
}

/// A delivery status from Meta.
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    /// The number the status webhook came for (its `metadata.phone_number_id`).
    pub phone_number_id: String,
    /// The customer the message went to: `recipient_id` (a wa_id) and `recipient_user_id`.
    pub recipient_id: Option<String>,
    pub recipient_user_id: Option<String>,
    pub wamid: String,
    pub status: StatusKind,
    pub meta_ts: i64,
    pub callback: Option<String>,
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
}

/// A correctly signed body that is not a Cloud API envelope.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub reason: String,
    pub body: String,
}

/// Everything one webhook asks to store; committed whole or not at all.
#[derive(Clone, Debug, Default)]
pub struct WebhookWrite {
    pub messages: Vec<NewInbound>,
    pub statuses: Vec<StatusUpdate>,
    pub dead_letter: Option<DeadLetter>,
    /// Messages a person sent from the WhatsApp Business app (coexistence).
    pub echoes: Vec<NewEcho>,
    /// The webhook is a dead letter parsed again: its row is marked in the same commit.
    pub replay: Option<super::ReplayMark>,
}

/// A message a person sent to a customer from the WhatsApp Business app, echoed by Meta: kept
/// as the business's own turn of the conversation (an outbox row of kind `business_app`, already
/// `sent`), unless it is the echo of one of the gateway's own sends (same wamid).
#[derive(Clone, Debug)]
pub struct NewEcho {
    pub phone_number_id: String,
    pub customer: String,
    pub recipient: String,
    pub recipient_kind: RecipientKind,
    pub wamid: String,
    /// The message object as Meta echoed it.
    pub payload: String,
    /// Its text as the conversation's history keeps it.
    pub history: String,
}

/// Lifecycle of a reply. The rank orders states so late or repeated status webhooks never move
/// a row backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
    Expired,
    /// Not sent: the customer opted out before it left.
    Cancelled,
}

impl OutboxState {
    /// The stable string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored state or a Meta status (`sent`, `delivered`, `read`, `failed`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Position in the lifecycle; a row only moves to a higher rank.
    pub fn rank(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Sending => 1,
            Self::Sent => 2,
            Self::Delivered => 3,
            Self::Read => 4,
            Self::Failed | Self::Expired | Self::Cancelled => 5,
        }
    }

    /// Whether Meta has (or had) the message: nothing more to send.
    pub fn is_settled(self) -> bool {
        self.rank() >= 2
    }
}

/// The outbox rows found by their wamid: the Business app's echoes, the only sends whose status
/// webhooks carry no callback data. Spelled as the partial index `outbox_echo_wamid` (migration
/// 36) is, so that a query naming it can use that index.
macro_rules! echo_row {
    () => {
        "kind = 'business_app'"
    };
}
pub(crate) use echo_row;

/// `echo_row!()` as a value.
pub(crate) const ECHO_ROW: &str = echo_row!();

/// What an outbox row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    /// The agent's answer.
    Reply,
    /// The confirmation of an opt-out: the only message an opted-out customer may receive.
    OptOutConfirmation,
    /// The confirmation of an opt-in.
    ResumeConfirmation,
    /// The fallback reply when the agent failed.
    Fallback,
    /// The reply to a message type the gateway cannot hand to an agent.
    Unsupported,
    /// A person's message from the WhatsApp Business app (an echo): history, never sent.
    BusinessApp,
}

impl OutboxKind {
    /// The stable string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::OptOutConfirmation => "opt_out_confirmation",
            Self::ResumeConfirmation => "resume_confirmation",
            Self::Fallback => "fallback",
            Self::Unsupported => "unsupported",
            Self::BusinessApp => "business_app",
        }
    }

    /// Parses a stored kind.
    pub fn parse(s: &str) -> Self {
        match s {
            "opt_out_confirmation" => Self::OptOutConfirmation,
            "resume_confirmation" => Self::ResumeConfirmation,
            "fallback" => Self::Fallback,
            "unsupported" => Self::Unsupported,
            "business_app" => Self::BusinessApp,
            _ => Self::Reply,
        }
    }
}

/// A reply about to be queued.
#[derive(Clone, Debug)]
pub struct NewOutbox {
    /// `wa_id` or BSUID the reply goes to.
    pub recipient: String,
    /// `to` (a wa_id) or `recipient` (a BSUID).
    pub recipient_kind: RecipientKind,
    pub part: i64,
    /// The message object to send, without `to`/`recipient` and `biz_opaque_callback_data`.
    pub payload: String,
    /// What the conversation's history keeps of it: the Markdown an agent wrote (on a text's
    /// first part), a summary of other messages, or nothing (later parts of a text).
    pub history: String,
    pub kind: OutboxKind,
}

/// A queued reply.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub inbox_id: Option<i64>,
    pub phone_number_id: String,
    pub customer: String,
    pub recipient: String,
    pub recipient_kind: RecipientKind,
    pub part: i64,
    pub payload: String,
    pub state: OutboxState,
    pub attempts: i64,
    pub wamid: Option<String>,
    pub sending_since: Option<i64>,
    pub kind: OutboxKind,
    /// When the row was queued (ms since the epoch): a reply queued before the customer's
    /// latest opt-out is never sent.
    pub created_at: i64,
}

impl OutboxRow {
    /// The value sent as `biz_opaque_callback_data` by the database `installation`, echoed by
    /// Meta in status webhooks.
    pub fn callback_data(&self, installation: &str) -> String {
        Callback::Row {
            installation: installation.to_owned(),
            id: self.id,
            created_at: self.created_at,
        }
        .to_string()
    }
}

/// What this gateway sends as `biz_opaque_callback_data` (at most 512 characters, Meta's limit;
/// about 50 here). A status echoing it settles the row only if the row is the one that was sent:
/// same database (`installation`), same row (`id` and `created_at`, which a restored or reset
/// database does not repeat), same number and recipient (checked against the status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callback {
    /// `wagw:{installation}:{id}:{created_at}`.
    Row {
        installation: String,
        id: i64,
        created_at: i64,
    },
    /// `wagw:{id}`, sent before installations existed: it settles only rows queued before the
    /// upgrade (`installation.legacy_outbox_max`), with the same number and recipient.
    Legacy(i64),
}

impl Callback {
    /// Reads a `biz_opaque_callback_data` this gateway sent; `None` for anything else.
    pub fn parse(s: &str) -> Option<Callback> {
        let mut parts = s.strip_prefix("wagw:")?.split(':');
        let first = parts.next()?;
        match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => first.parse().ok().map(Callback::Legacy),
            (Some(id), Some(created_at), None) if !first.is_empty() => Some(Callback::Row {
                installation: first.to_owned(),
                id: id.parse().ok()?,
                created_at: created_at.parse().ok()?,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Callback::Row {
                installation,
                id,
                created_at,
            } => write!(f, "wagw:{installation}:{id}:{created_at}"),
            Callback::Legacy(id) => write!(f, "wagw:{id}"),
        }
    }
}

/// Counters for health and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub inbox_total: i64,
    pub inbox_open: i64,
    pub outbox_open: i64,
    pub dead_letters: i64,
}

pub(super) const OUTBOX_COLUMNS: &str = "id, inbox_id, phone_number_id, customer, recipient, recipient_kind, \
     part, payload, state, attempts, wamid, sending_since, kind, created_at";

pub(super) const INBOX_COLUMNS: &str = "id, wamid, phone_number_id, customer, wa_id, user_id, customer_name, \
     msg_type, text, payload, meta_ts, received_at, state, detail, opt_action, opt_keyword";

pub(super) type OutboxTuple = (
    i64,
    Option<i64>,
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    String,
    i64,
);

pub(super) fn outbox_from(t: OutboxTuple) -> OutboxRow {
    OutboxRow {
        id: t.0,
        inbox_id: t.1,
        phone_number_id: t.2,
        customer: t.3,
        recipient: t.4,
        recipient_kind: RecipientKind::parse(&t.5),
        part: t.6,
        payload: t.7,
        state: OutboxState::parse(&t.8).unwrap_or(OutboxState::Pending),
        attempts: t.9,
        wamid: t.10,
        sending_since: t.11,
        kind: OutboxKind::parse(&t.12),
        created_at: t.13,
    }
}

pub(super) type InboxTuple = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// An inbox row from the [`INBOX_COLUMNS`] of a PostgreSQL row, starting at column `at`.
pub(super) fn inbox_from_offset(
    row: &sqlx::postgres::PgRow,
    at: usize,
) -> Result<InboxRow, sqlx::Error> {
    Ok(inbox_from((
        row.try_get(at)?,
        row.try_get(at + 1)?,
        row.try_get(at + 2)?,
        row.try_get(at + 3)?,
        row.try_get(at + 4)?,
        row.try_get(at + 5)?,
        row.try_get(at + 6)?,
        row.try_get(at + 7)?,
        row.try_get(at + 8)?,
        row.try_get(at + 9)?,
        row.try_get(at + 10)?,
        row.try_get(at + 11)?,
        row.try_get(at + 12)?,
        row.try_get(at + 13)?,
        row.try_get(at + 14)?,
        row.try_get(at + 15)?,
    )))
}

pub(super) fn inbox_from(t: InboxTuple) -> InboxRow {
    let state = match t.12.as_str() {
        "done" => InboxState::Done,
        "unrouted" => InboxState::Unrouted,
        "skipped" => InboxState::Skipped,
        "failed" => InboxState::Failed,
        _ => InboxState::Received,
    };
    InboxRow {
        id: t.0,
        received_at: t.11,
        msg: NewInbound {
            wamid: t.1,
            phone_number_id: t.2,
            customer: t.3,
            wa_id: t.4,
            user_id: t.5,
            customer_name: t.6,
            msg_type: MessageType::parse(&t.7),
            text: t.8,
            payload: t.9,
            meta_ts: t.10,
            state,
            detail: t.13,
            keyword: t
                .14
                .as_deref()
                .and_then(OptAction::parse)
                .map(|action| Keyword {
                    action,
                    keyword: t.15.unwrap_or_default(),
                }),
            traceparent: None,
        },
    }
}

impl Store {
    /// Up to `limit` inbound messages still waiting for their turn with an id above `after`,
    /// oldest first: the backlog found at start, read a page at a time.
    pub async fn open_inbox_page(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let sql = format!(
            "SELECT {INBOX_COLUMNS} FROM inbox WHERE state = 'received' AND id > $1 \
             ORDER BY id LIMIT $2"
        );
        on_pool!(self, |pool| {
            let rows: Vec<InboxTuple> = sqlx::query_as(&sql)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(inbox_from).collect())
        })
    }

    /// Up to `limit` replies not yet settled (`pending` or `sending`) with an id above `after`,
    /// oldest first (resumed at start, a page at a time).
    pub async fn open_outbox_page(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE is_open \
             AND id > $1 ORDER BY id LIMIT $2"
        );
        on_pool!(self, |pool| {
            let rows: Vec<OutboxTuple> = sqlx::query_as(&sql)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(outbox_from).collect())
        })
    }

    /// One outbox row.
    pub async fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1");
        on_pool!(self, |pool| {
            let row: Option<OutboxTuple> =
                sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
            Ok(row.map(outbox_from))
        })
    }

    /// Counts for health and metrics.
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM inbox), \
                 (SELECT COUNT(*) FROM inbox WHERE state = 'received'), \
                 (SELECT COUNT(*) FROM outbox WHERE is_open), \
                 (SELECT COUNT(*) FROM dead_letters)",
            )
            .fetch_one(pool)
            .await?;
            Ok(StoreCounts {
                inbox_total: row.try_get(0)?,
                inbox_open: row.try_get(1)?,
                outbox_open: row.try_get(2)?,
                dead_letters: row.try_get(3)?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_row_condition_names_the_business_apps_kind() {
        let kind = OutboxKind::BusinessApp.as_str();
        assert_eq!(ECHO_ROW, format!("kind = '{kind}'"));
    }

    #[test]
    fn callback_data_reads_back_and_old_rows_still_parse() {
        let row = Callback::Row {
            installation: "3f9a0c1d2e4b5a69".into(),
            id: 42,
            created_at: 1_764_081_600_123,
        };
        let text = row.to_string();
        assert_eq!(text, "wagw:3f9a0c1d2e4b5a69:42:1764081600123");
        assert!(text.len() <= 512, "Meta's limit");
        assert_eq!(Callback::parse(&text), Some(row));
        assert_eq!(Callback::parse("wagw:7"), Some(Callback::Legacy(7)));
        for other in [
            "",
            "wagw:",
            "wagw:x",
            "wagw::1:2",
            "wagw:a:1",
            "wagw:a:1:2:3",
            "turn-42",
        ] {
            assert_eq!(Callback::parse(other), None, "{other:?}");
        }
    }
}
