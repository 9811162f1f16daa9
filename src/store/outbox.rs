//! The notification outbox as the store keeps it: queued rows per event and target, the messages
//! they were grouped into, and each message's delivery state.
//!
//! Grouping happens once, when the events are first taken out of the outbox, and is written down
//! (`notification_messages`, `notification_outbox.message_id`). Every later attempt reads the
//! very same events back ([`StoredMessage`]), so a retry after an hour or a restart carries the
//! same id and the same findings, and a receiver can drop a duplicate by that id. Which events
//! form which message is the notifier's decision (a [`Plan`]); the store only records it.

use std::time::Duration;

use jiff::Timestamp;

use super::truncate_micros;
use crate::lifecycle::Event;

/// How long a message handed out for an attempt is not handed out again: longer than one
/// attempt can take (the request timeout), short enough that a message claimed by an agent that
/// then crashed is retried soon after the restart.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// One queued outbox row not yet grouped into a message.
#[derive(Debug, Clone)]
pub struct QueuedRow {
    pub target: String,
    /// When the agent queued it (its own clock); `None` for rows queued before schema 5, which
    /// the batch window does not hold.
    pub queued_at: Option<Timestamp>,
    pub event: Event,
}

/// What the notifier decided for one batch of queued outbox rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (target, message id, event ids of the message)
    pub messages: Vec<(String, String, Vec<String>)>,
    /// (target, event id): recorded, never sent (below the threshold, `severity_changed`, or
    /// `workload_removed` while that is switched off).
    pub filtered: Vec<(String, String)>,
    /// Targets whose batch window is still open: (target, event ids left queued, until when).
    /// The store writes nothing for them; a later assignment plans them.
    pub held: Vec<(String, Vec<String>, Timestamp)>,
}

/// How many messages and filtered rows one assignment wrote, and what it left queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assigned {
    pub messages: usize,
    pub filtered: usize,
    /// Distinct changes (events) left queued because a target's batch window is open.
    pub held: usize,
    /// When the earliest open window closes.
    pub held_until: Option<Timestamp>,
}

/// A message claimed for an attempt: its stored id and the events it was grouped from.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub message_id: String,
    pub created_at: Timestamp,
    /// Attempts made so far (0 before the first).
    pub attempts: u32,
    pub events: Vec<Event>,
}

/// The new state of a message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageUpdate {
    Delivered { at: Timestamp },
    Retry { at: Timestamp, error: String },
    Dead { at: Timestamp, reason: String },
}

impl MessageUpdate {
    /// The columns an update writes: state, next attempt, error (kept when `None`), delivery time.
    pub(crate) fn columns(&self) -> (&'static str, Timestamp, Option<&str>, Option<Timestamp>) {
        match self {
            MessageUpdate::Delivered { at } => ("delivered", *at, None, Some(*at)),
            MessageUpdate::Retry { at, error } => ("pending", *at, Some(error.as_str()), None),
            MessageUpdate::Dead { at, reason } => ("dead", *at, Some(reason.as_str()), None),
        }
    }

    /// The same update at the databases' microsecond precision.
    pub(crate) fn truncated(&self) -> MessageUpdate {
        match self {
            MessageUpdate::Delivered { at } => MessageUpdate::Delivered {
                at: truncate_micros(*at),
            },
            MessageUpdate::Retry { at, error } => MessageUpdate::Retry {
                at: truncate_micros(*at),
                error: error.clone(),
            },
            MessageUpdate::Dead { at, reason } => MessageUpdate::Dead {
                at: truncate_micros(*at),
                reason: reason.clone(),
            },
        }
    }
}

/// The ungrouped queue of one cluster in aggregate: enough for the batch window to tell whether
/// any target's window has closed without reading the queued events themselves (a held scan
/// wave is looked at every few seconds and may hold thousands of changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuedWindows {
    /// Each target with ungrouped rows, and its oldest `queued_at`; `None` when a row of it has
    /// none (queued before the window existed).
    pub targets: Vec<(String, Option<Timestamp>)>,
    /// Distinct changes (events) queued, for any target.
    pub events: usize,
}

/// Undelivered messages of one target, for `kijo_notify_outbox_pending` and the oldest age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxStats {
    pub target: String,
    pub pending: u64,
    pub oldest_created_at: Option<Timestamp>,
}
