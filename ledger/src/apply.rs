//! The rules that turn events into the derived rows (messages, recipients, hourly counts),
//! with no I/O: the store loads the rows a batch touches, [`Apply`] folds the batch's new
//! events into them, and the store writes back what changed.
//!
//! Events may arrive in any order and a batch may repeat (the store only hands new events
//! here, so nothing is counted twice). The rules:
//!
//! - A message row is made by its first event of any kind; its `queued` event fills in the
//!   envelope (host, sender, ...) whenever it comes.
//! - A recipient's status is decided by the deciding event: a final outcome (sent, bounced,
//!   expired, failed, purged, complained) beats any non-final one, whatever their times (a
//!   `deferred` reported after a `sent`, e.g. by a worker that crashed before deleting its
//!   job, does not undo the delivery); between two final outcomes, or two non-final ones, the
//!   later time wins, so a late bounce or a complaint from the bounce listener (issue 14),
//!   timed when it arrived, turns a `sent` recipient into `bounced` / `complained`; an
//!   operator's `requeued` later than a final outcome reopens it.
//! - A `complained` recipient was delivered: a message counts it as sent in its status.
//! - Hourly counts are per sending host: an event of a message whose `queued` event has not
//!   arrived yet is counted when it arrives.
//!
//! Not here: SQL (`store`).

use std::collections::{BTreeMap, HashMap, HashSet};

use hedwig_queue::event::{Event, Outcome, Queued, RecipientEvent, What};

use crate::model::{address_key, message_id_key, Message, MessageStatus, Recipient};

/// Milliseconds in an hour.
pub(crate) const HOUR_MS: u64 = 3_600_000;

/// The outcome name hourly counts use for `queued` events.
pub(crate) const QUEUED: &str = "queued";

/// The start of the hour `at` falls in.
pub(crate) fn hour_of(at: u64) -> u64 {
    at - at % HOUR_MS
}

/// The derived rows of one batch, loaded, changed and ready to write back.
#[derive(Debug, Default)]
pub(crate) struct Apply {
    /// Every message the batch touches (all are written back).
    pub messages: HashMap<String, Message>,
    /// Every recipient of those messages, by queue id then address.
    pub recipients: HashMap<String, BTreeMap<String, Recipient>>,
    /// The recipients to write back: (queue id, address).
    pub dirty: HashSet<(String, String)>,
    /// Count increments by (host, hour, outcome).
    pub hourly: HashMap<(String, u64, String), u64>,
    /// Events not counted yet because their message's host is unknown, by queue id:
    /// (hour, outcome).
    pending: HashMap<String, Vec<(u64, String)>>,
}

impl Apply {
    /// Starts from the stored rows.
    pub fn new(messages: Vec<Message>, recipients: Vec<(String, Recipient)>) -> Apply {
        let mut apply = Apply {
            messages: messages
                .into_iter()
                .map(|m| (m.queue_id.clone(), m))
                .collect(),
            ..Apply::default()
        };
        for (queue_id, r) in recipients {
            apply
                .recipients
                .entry(queue_id)
                .or_default()
                .insert(r.recipient.clone(), r);
        }
        apply
    }

    /// Earlier events of a message whose host was unknown when they were written: counted
    /// when its `queued` event sets the host.
    pub fn uncounted(&mut self, queue_id: &str, at: u64, outcome: &str) {
        self.pending
            .entry(queue_id.to_owned())
            .or_default()
            .push((hour_of(at), outcome.to_owned()));
    }

    /// Folds `events` (new ones only) in, oldest first.
    pub fn events(&mut self, events: &[&Event]) {
        let mut sorted: Vec<&Event> = events.to_vec();
        sorted.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        for event in sorted {
            self.event(event);
        }
        let touched: Vec<String> = self.messages.keys().cloned().collect();
        for queue_id in touched {
            self.summarize(&queue_id);
        }
    }

    fn event(&mut self, event: &Event) {
        let message = self.message(&event.queue_id, event.at);
        message.last_event_at = message.last_event_at.max(event.at);
        match &event.what {
            What::Queued(queued) => self.queued(&event.queue_id, event.at, queued),
            What::Recipient(r) => self.recipient(&event.queue_id, event.at, r),
            What::BounceQueued { .. } => {}
        }
    }

    /// The message row, made from its first event when there is none.
    fn message(&mut self, queue_id: &str, at: u64) -> &mut Message {
        self.messages
            .entry(queue_id.to_owned())
            .or_insert_with(|| Message {
                queue_id: queue_id.to_owned(),
                host: None,
                sender: None,
                message_id: None,
                subject: None,
                size: None,
                edge_id: None,
                edge_client: None,
                post_client: None,
                app: None,
                lane: None,
                fixups: Vec::new(),
                kind: "message".into(),
                bounce_of: None,
                queued_at: at,
                expires_at: None,
                recipients: 0,
                status: MessageStatus::Queued,
                last_event_at: at,
                final_at: None,
            })
    }

    fn queued(&mut self, queue_id: &str, at: u64, q: &Queued) {
        let message = self.message(queue_id, at);
        if message.host.is_some() {
            return; // the first `queued` event stands
        }
        message.host = Some(q.host.clone());
        message.sender = Some(address_key(&q.sender));
        message.message_id = q.message_id.as_deref().map(message_id_key);
        message.subject = q.subject.clone();
        message.size = Some(q.size);
        message.edge_id = q.edge_id.clone();
        message.edge_client = q.edge_client.clone();
        message.post_client = q.post_client.clone();
        message.app = q.app.clone();
        message.lane = q.lane.clone();
        message.fixups = q.fixups.clone();
        message.kind = q.message_kind.clone();
        message.bounce_of = q.bounce_of.clone();
        message.queued_at = at;
        message.expires_at = q.expires_at.map(|s| s.saturating_mul(1000));
        let host = q.host.clone();
        *self
            .hourly
            .entry((host.clone(), hour_of(at), QUEUED.into()))
            .or_default() += 1;
        for (hour, outcome) in self.pending.remove(queue_id).unwrap_or_default() {
            *self
                .hourly
                .entry((host.clone(), hour, outcome))
                .or_default() += 1;
        }
        let initial = if q.held { "held" } else { QUEUED };
        let recipients = self.recipients.entry(queue_id.to_owned()).or_default();
        for address in &q.recipients {
            let key = address_key(address);
            recipients
                .entry(key.clone())
                .or_insert_with(|| new_recipient(&key, initial, at));
        }
        // Every recipient row carries the message's queued_at (the search order).
        for key in recipients.keys() {
            self.dirty.insert((queue_id.to_owned(), key.clone()));
        }
    }

    fn recipient(&mut self, queue_id: &str, at: u64, r: &RecipientEvent) {
        let host = self.message(queue_id, at).host.clone();
        let outcome = r.outcome;
        match host {
            Some(host) => {
                *self
                    .hourly
                    .entry((host, hour_of(at), outcome.as_str().into()))
                    .or_default() += 1
            }
            None => self.uncounted(queue_id, at, outcome.as_str()),
        }
        let key = address_key(&r.recipient);
        let row = self
            .recipients
            .entry(queue_id.to_owned())
            .or_default()
            .entry(key.clone())
            .or_insert_with(|| new_recipient(&key, QUEUED, at));
        if let Some(attempt) = r.attempt {
            row.attempts = row.attempts.max(attempt);
        }
        if decides(row, outcome, at) {
            row.status = outcome.as_str().into();
            row.is_final = outcome.is_final();
            row.code = r.code;
            row.dsn = r.dsn.clone();
            row.reply = Some(r.reply.clone()).filter(|s| !s.is_empty());
            row.mx = r.mx.clone();
            row.updated_at = at;
        }
        self.dirty.insert((queue_id.to_owned(), key));
    }

    /// Recomputes a message's recipient count, status and final time.
    fn summarize(&mut self, queue_id: &str) {
        let empty = BTreeMap::new();
        let recipients = self.recipients.get(queue_id).unwrap_or(&empty);
        let Some(message) = self.messages.get_mut(queue_id) else {
            return;
        };
        let (status, final_at) = summary(message.host.is_some(), recipients.values());
        message.recipients = recipients.len() as u64;
        message.status = status;
        message.final_at = final_at;
        if let Some(max) = recipients.values().map(|r| r.updated_at).max() {
            message.last_event_at = message.last_event_at.max(max);
        }
    }
}

fn new_recipient(address: &str, status: &str, at: u64) -> Recipient {
    Recipient {
        recipient: address.to_owned(),
        status: status.to_owned(),
        attempts: 0,
        code: None,
        dsn: None,
        reply: None,
        mx: None,
        updated_at: at,
        is_final: false,
    }
}

/// Whether an event with `outcome` at `at` decides the recipient's state over what it has.
fn decides(row: &Recipient, outcome: Outcome, at: u64) -> bool {
    if row.status == QUEUED {
        return true; // no outcome yet: any outcome is news
    }
    match (row.is_final, outcome.is_final()) {
        (false, true) => true,
        (false, false) => at >= row.updated_at,
        (true, true) => at > row.updated_at,
        // Only an operator's requeue reopens a final outcome, and only one made after it.
        (true, false) => outcome == Outcome::Requeued && at > row.updated_at,
    }
}

/// A message's status and final time from its recipients. A message whose `queued` event has
/// not arrived is never final: its recipient list may be incomplete.
pub(crate) fn summary<'a>(
    queued_seen: bool,
    recipients: impl Iterator<Item = &'a Recipient> + Clone,
) -> (MessageStatus, Option<u64>) {
    let total = recipients.clone().count();
    let finals = recipients.clone().filter(|r| r.is_final).count();
    if total == 0 {
        return (MessageStatus::Queued, None);
    }
    if finals == total && queued_seen {
        // A complaint or an unsubscribe is about a message that was delivered.
        let sent = recipients
            .clone()
            .filter(|r| matches!(r.status.as_str(), "sent" | "complained" | "unsubscribed"))
            .count();
        let status = if sent == total {
            MessageStatus::Sent
        } else if sent == 0 {
            MessageStatus::Bounced
        } else {
            MessageStatus::Partial
        };
        return (status, recipients.map(|r| r.updated_at).max());
    }
    let mut pending = recipients.filter(|r| !r.is_final);
    if finals == 0 && pending.clone().all(|r| r.status == QUEUED) {
        (MessageStatus::Queued, None)
    } else if pending.any(|r| r.status == "held") {
        (MessageStatus::Held, None)
    } else {
        (MessageStatus::Deferred, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: &str, at: u64, recipients: &[&str]) -> Event {
        Event {
            id: id.into(),
            at,
            queue_id: "Q".into(),
            what: What::Queued(Queued {
                host: "web1".into(),
                sender: "App@Example.test".into(),
                recipients: recipients.iter().map(|r| r.to_string()).collect(),
                size: 10,
                message_kind: "message".into(),
                edge_id: None,
                edge_client: None,
                post_client: None,
                message_id: Some("<m@x>".into()),
                subject: None,
                bounce_of: None,
                expires_at: Some(100),
                held: false,
                app: Some("shop-billing-1".into()),
                lane: Some("transactional".into()),
                fixups: vec!["date".into(), "from".into()],
            }),
        }
    }

    fn outcome(id: &str, at: u64, recipient: &str, outcome: Outcome) -> Event {
        Event {
            id: id.into(),
            at,
            queue_id: "Q".into(),
            what: What::Recipient(RecipientEvent {
                recipient: recipient.into(),
                outcome,
                mx: None,
                ip: None,
                tls: None,
                code: Some(250),
                dsn: None,
                reply: format!("{outcome}"),
                attempt: Some(1),
                by: None,
                list_id: None,
                source_ip: None,
                pool: None,
                sender_domain: None,
            }),
        }
    }

    fn run(events: &[Event]) -> Apply {
        let mut apply = Apply::default();
        apply.events(&events.iter().collect::<Vec<_>>());
        apply
    }

    #[test]
    fn a_final_outcome_is_not_undone_by_a_later_deferral() {
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let events = [
                queued("e1", 1_000, &["a@x"]),
                outcome("e2", 2_000, "a@x", Outcome::Sent),
                outcome("e3", 3_000, "A@X", Outcome::Deferred),
            ];
            let batch: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
            let apply = run(&batch);
            let m = &apply.messages["Q"];
            assert_eq!(m.status, MessageStatus::Sent, "{order:?}");
            assert_eq!(m.final_at, Some(2_000));
            assert_eq!(m.queued_at, 1_000);
            assert_eq!(m.sender.as_deref(), Some("app@example.test"));
            assert_eq!(m.message_id.as_deref(), Some("m@x"));
            assert_eq!(m.expires_at, Some(100_000));
            assert_eq!(m.app.as_deref(), Some("shop-billing-1"));
            assert_eq!(m.lane.as_deref(), Some("transactional"));
            assert_eq!(m.fixups, ["date", "from"]);
            assert_eq!(apply.recipients["Q"]["a@x"].status, "sent");
        }
    }

    #[test]
    fn without_its_queued_event_a_message_is_never_final() {
        let apply = run(&[outcome("e2", 2_000, "a@x", Outcome::Sent)]);
        let m = &apply.messages["Q"];
        assert_eq!(m.host, None);
        assert_eq!(m.final_at, None);
        assert_eq!(m.status, MessageStatus::Deferred);
        assert!(apply.hourly.is_empty(), "no host to count under yet");
    }

    #[test]
    fn hourly_counts_wait_for_the_host() {
        let apply = run(&[
            outcome("e2", HOUR_MS + 5, "a@x", Outcome::Deferred),
            queued("e1", HOUR_MS + 10, &["a@x", "b@x"]),
            outcome("e3", 2 * HOUR_MS + 1, "b@x", Outcome::Bounced),
        ]);
        let count = |hour, outcome: &str| {
            apply
                .hourly
                .get(&("web1".to_owned(), hour, outcome.to_owned()))
                .copied()
        };
        assert_eq!(count(HOUR_MS, "queued"), Some(1));
        assert_eq!(count(HOUR_MS, "deferred"), Some(1));
        assert_eq!(count(2 * HOUR_MS, "bounced"), Some(1));
        assert_eq!(apply.messages["Q"].status, MessageStatus::Deferred);
        assert_eq!(apply.messages["Q"].recipients, 2);
    }

    #[test]
    fn summaries() {
        let apply = run(&[
            queued("e1", 1, &["a@x", "b@x"]),
            outcome("e2", 2, "a@x", Outcome::Sent),
            outcome("e3", 3, "b@x", Outcome::Bounced),
        ]);
        assert_eq!(apply.messages["Q"].status, MessageStatus::Partial);
        assert_eq!(apply.messages["Q"].final_at, Some(3));
        let apply = run(&[queued("e1", 1, &["a@x"])]);
        assert_eq!(apply.messages["Q"].status, MessageStatus::Queued);
        // An operator's requeue after a failure reopens it; a stale one does not.
        let apply = run(&[
            queued("e1", 1, &["a@x"]),
            outcome("e2", 2, "a@x", Outcome::Failed),
            outcome("e3", 3, "a@x", Outcome::Requeued),
        ]);
        assert_eq!(apply.messages["Q"].status, MessageStatus::Deferred);
        let apply = run(&[
            queued("e1", 1, &["a@x"]),
            outcome("e2", 5, "a@x", Outcome::Failed),
            outcome("e3", 3, "a@x", Outcome::Requeued),
        ]);
        assert_eq!(apply.messages["Q"].status, MessageStatus::Bounced);
    }

    #[test]
    fn late_bounces_and_complaints_beat_an_earlier_sent() {
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
            let events = [
                queued("e1", 1_000, &["a@x", "b@x"]),
                outcome("e2", 2_000, "a@x", Outcome::Sent),
                outcome("e3", 2_000, "b@x", Outcome::Sent),
                outcome("e4", 9_000, "b@x", Outcome::Bounced),
            ];
            let batch: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
            let apply = run(&batch);
            assert_eq!(apply.recipients["Q"]["b@x"].status, "bounced", "{order:?}");
            assert_eq!(apply.messages["Q"].status, MessageStatus::Partial);
        }
        let apply = run(&[
            queued("e1", 1_000, &["a@x"]),
            outcome("e2", 2_000, "a@x", Outcome::Sent),
            outcome("e3", 5_000, "a@x", Outcome::Complained),
            // A stale deferral does not undo it.
            outcome("e4", 6_000, "a@x", Outcome::Deferred),
        ]);
        let r = &apply.recipients["Q"]["a@x"];
        assert_eq!(r.status, "complained");
        assert!(r.is_final);
        assert_eq!(apply.messages["Q"].status, MessageStatus::Sent);
        assert_eq!(apply.messages["Q"].final_at, Some(5_000));
        // A complaint timed before the delivery it is about does not hide it... and the
        // delivery does not hide a complaint made after it.
        let apply = run(&[
            queued("e1", 1_000, &["a@x"]),
            outcome("e3", 5_000, "a@x", Outcome::Complained),
            outcome("e2", 2_000, "a@x", Outcome::Sent),
        ]);
        assert_eq!(apply.recipients["Q"]["a@x"].status, "complained");
    }
}
