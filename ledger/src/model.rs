//! What the store answers: messages, recipients, timelines, pages of search results, hourly
//! counts; and what it is asked: a search [`Filter`] with its [`Cursor`].
//!
//! These types serialize to the API's JSON (docs/ledger.md): fields are only ever added.
//! Times are Unix milliseconds throughout.
//!
//! Not here: the SQL (`store`, `query`), the rules that derive a message's status from its
//! events (`apply`).

use std::fmt;
use std::str::FromStr;

use hedwig_queue::event::Event;
use serde::Serialize;

/// The largest page a search returns.
pub const MAX_LIMIT: u32 = 500;
/// The page size when the caller names none.
pub const DEFAULT_LIMIT: u32 = 50;

/// A message as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub queue_id: String,
    /// The sending host; `None` until the message's `queued` event arrived (events may come
    /// out of order).
    pub host: Option<String>,
    /// Envelope sender, lowercased; empty is the null sender.
    pub sender: Option<String>,
    /// The `Message-ID:` header field without angle brackets.
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// Bytes.
    pub size: Option<u64>,
    /// The sending mailman's message id.
    pub edge_id: Option<String>,
    /// The container (or other client) that handed the message to mailman.
    pub edge_client: Option<String>,
    /// The address the post office saw the post come from.
    pub post_client: Option<String>,
    /// The app inside the sending host that sent it (a container's name or a mailman login),
    /// when mailman knew it.
    pub app: Option<String>,
    /// The lane it was queued in (absent for messages from post offices before lanes).
    pub lane: Option<String>,
    /// The header fix-ups the sending mailman made (issue 19: `date`, `message-id`, `from`,
    /// `to`, `bcc`), in order; empty when none, or for messages from before they were
    /// recorded.
    pub fixups: Vec<String>,
    /// `message` or `bounce`.
    pub kind: String,
    /// For a bounce: the queue id of the message it reports on.
    pub bounce_of: Option<String>,
    /// When it was queued (until the `queued` event arrives: its first event's time).
    pub queued_at: u64,
    /// When the workers give up on it, when known.
    pub expires_at: Option<u64>,
    /// Number of recipients known.
    pub recipients: u64,
    /// Summary over the recipients, see [`MessageStatus`].
    pub status: MessageStatus,
    /// Time of its newest event.
    pub last_event_at: u64,
    /// When every recipient reached a final outcome; `None` while any has not.
    pub final_at: Option<u64>,
}

/// One recipient of a message and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The address, lowercased.
    pub recipient: String,
    /// `queued` (nothing happened yet) or the outcome that decides its state (see
    /// docs/ledger.md: a final outcome is not undone by a later temporary one).
    pub status: String,
    /// The highest attempt number reported.
    pub attempts: u32,
    /// The last deciding event's SMTP code, enhanced code, reply and MX.
    pub code: Option<u16>,
    pub dsn: Option<String>,
    pub reply: Option<String>,
    pub mx: Option<String>,
    /// The deciding event's time.
    pub updated_at: u64,
    /// Whether `status` is final (sent, bounced, expired, failed, purged, complained).
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// A message's whole record: the message, its recipients and its events in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub message: Message,
    pub recipients: Vec<Recipient>,
    pub events: Vec<Event>,
}

/// One page of search results, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    pub messages: Vec<Message>,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<Cursor>,
}

/// The count of one outcome for one host in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourlyCount {
    /// Start of the hour.
    pub hour: u64,
    /// `queued` or an outcome name.
    pub outcome: String,
    pub count: u64,
}

/// The summary status of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// No recipient has an outcome yet.
    Queued,
    /// Some recipient is held (and none is pending elsewhere).
    Held,
    /// Some recipient is still pending after an attempt or an operator action.
    Deferred,
    /// Every recipient was sent (a complained one was sent). Final.
    Sent,
    /// Every recipient is final and none was sent (bounced, expired, failed, purged). Final.
    Bounced,
    /// Every recipient is final, some sent and some not. Final.
    Partial,
}

impl MessageStatus {
    /// Every status.
    pub const ALL: [MessageStatus; 6] = [
        MessageStatus::Queued,
        MessageStatus::Held,
        MessageStatus::Deferred,
        MessageStatus::Sent,
        MessageStatus::Bounced,
        MessageStatus::Partial,
    ];

    /// The lowercase name used in the store, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Held => "held",
            MessageStatus::Deferred => "deferred",
            MessageStatus::Sent => "sent",
            MessageStatus::Bounced => "bounced",
            MessageStatus::Partial => "partial",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<MessageStatus> {
        MessageStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a search page ends: the last message's `(queued_at, queue_id)`. Written as
/// `<queued_at>-<queue_id>`; opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub queued_at: u64,
    pub queue_id: String,
}

/// A cursor string that is not one this store wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a ledger cursor: {0:?}")]
pub struct CursorError(pub String);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.queued_at, self.queue_id)
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Cursor, CursorError> {
        let bad = || CursorError(s.to_owned());
        let (at, id) = s.split_once('-').ok_or_else(bad)?;
        if id.is_empty() || at.is_empty() || !at.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(Cursor {
            queued_at: at.parse().map_err(|_| bad())?,
            queue_id: id.to_owned(),
        })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A search: every field that is set must match. Addresses compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub host: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    /// With or without angle brackets.
    pub message_id: Option<String>,
    pub queue_id: Option<String>,
    /// The sending mailman's message id (`edge_id`).
    pub edge_id: Option<String>,
    pub status: Option<MessageStatus>,
    /// Queued at or after (ms).
    pub from: Option<u64>,
    /// Queued before (ms).
    pub to: Option<u64>,
    /// Continue after this cursor (from the previous page's `next`).
    pub cursor: Option<Cursor>,
    /// Page size; `None` is [`DEFAULT_LIMIT`], anything above [`MAX_LIMIT`] is cut to it.
    pub limit: Option<u32>,
}

impl Filter {
    /// The page size to use.
    pub fn page_size(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// An address as the store keeps it: trimmed, lowercased.
pub(crate) fn address_key(address: &str) -> String {
    address.trim().to_lowercase()
}

/// A Message-ID as the store keeps it: without surrounding space and angle brackets.
pub(crate) fn message_id_key(id: &str) -> String {
    let id = id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    id.strip_suffix('>').unwrap_or(id).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            queued_at: 1_700_000_000_123,
            queue_id: "01J-x.y".into(),
        };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for bad in ["", "-", "12-", "-Q", "x-Q", "12", "1 2-Q", "+1-Q"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
        assert!("99999999999999999999999-Q".parse::<Cursor>().is_err());
    }

    #[test]
    fn limits_are_capped() {
        let f = |limit| Filter {
            limit,
            ..Filter::default()
        };
        assert_eq!(f(None).page_size(), DEFAULT_LIMIT);
        assert_eq!(f(Some(0)).page_size(), 1);
        assert_eq!(f(Some(100_000)).page_size(), MAX_LIMIT);
    }

    #[test]
    fn keys() {
        assert_eq!(address_key(" Bob@Example.ORG "), "bob@example.org");
        assert_eq!(message_id_key(" <a@b> "), "a@b");
        assert_eq!(message_id_key("a@b"), "a@b");
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(s));
        }
    }
}
