//! Ledger events: what happened to a message, as the tiers saw it.
//!
//! The post office and the workers put events into the events tube (`<prefix>-events`,
//! [`Tube::Events`](crate::Tube::Events)); the ledger writer reserves them, writes them into the
//! store in batches and only then deletes the jobs. One job carries a [`Batch`] of events (one
//! line of JSON), so that under load one put carries many messages' events.
//!
//! Every event has a unique [`Event::id`]: a batch written twice (a writer killed after its
//! commit and before its delete) changes nothing the second time.
//!
//! The JSON is a stable, documented format (docs/ledger.md): fields are only ever added, and
//! a reader ignores fields it does not know, so old writers read new events and the other
//! way round.

use serde::{Deserialize, Serialize};

/// Format version of [`Batch`] written by this build.
pub const VERSION: u32 = 1;

/// Why an events job cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("events job is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("events format version {0} is newer than this build understands")]
    Version(u32),
}

/// The body of one job in the events tube.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub v: u32,
    pub events: Vec<Event>,
}

impl Batch {
    pub fn new(events: Vec<Event>) -> Batch {
        Batch { v: VERSION, events }
    }

    /// The job body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("Batch serializes to JSON"))
    }

    /// Reads a job body.
    pub fn decode(body: &[u8]) -> Result<Batch, EventError> {
        let batch: Batch = serde_json::from_slice(body).map_err(EventError::Json)?;
        if batch.v > VERSION {
            return Err(EventError::Version(batch.v));
        }
        Ok(batch)
    }
}

/// One thing that happened to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (see [`new_event_id`]); the store keeps the first event with an id.
    pub id: String,
    /// Unix milliseconds when it happened.
    pub at: u64,
    /// The message's queue id (for [`What::Queued`] of a bounce: the bounce's own).
    pub queue_id: String,
    #[serde(flatten)]
    pub what: What,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// The post office queued the message (or a worker queued a bounce).
    Queued(Queued),
    /// A delivery attempt's outcome for one recipient, or an operator's action on it.
    Recipient(RecipientEvent),
    /// A worker queued a bounce (delivery status notification) for this message.
    BounceQueued {
        /// The bounce's queue id.
        bounce_queue_id: String,
        /// The recipients the bounce reports.
        recipients: Vec<String>,
    },
}

/// A message entering the queue, with what the edge knew of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The sending host's fqdn.
    pub host: String,
    /// Envelope sender; empty is the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    /// Bytes of the message.
    pub size: u64,
    /// `message` or `bounce`.
    #[serde(default = "message_kind")]
    pub message_kind: String,
    /// The sending mailman's message id (its spool id), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_id: Option<String>,
    /// The address of the container (or other client) that handed the message to mailman,
    /// from mailman's `Received:` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_client: Option<String>,
    /// The address the post office saw the post come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_client: Option<String>,
    /// The `Message-ID:` header field, without angle brackets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The `Subject:` header field, decoded, cut to 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For a bounce: the queue id of the message it reports on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_of: Option<String>,
    /// Unix seconds after which the workers give up on the message (its lifetime), when the
    /// post office knows it; the ledger calls a message stuck some time after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// `held` when the host was held at intake (the job went to the held tube).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The name of the app inside the sending host that sent it (a container or a mailman
    /// login), when mailman knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The lane the message was queued in; absent from post offices before lanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// The header fix-ups the sending mailman made (issue 19: `date`, `message-id`, `from`,
    /// `to`, `bcc`); empty (absent from the JSON) when none, and from writers before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixups: Vec<String>,
}

fn message_kind() -> String {
    "message".into()
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientEvent {
    pub recipient: String,
    pub outcome: Outcome,
    /// The MX host name tried, when one was reached or chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<String>,
    /// Its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Whether the session ran under TLS, when a server was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// The SMTP reply code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The enhanced status code (RFC 3463), e.g. `5.1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    /// The remote server's reply, or a local explanation (DNS, timeout, operator).
    #[serde(default)]
    pub reply: String,
    /// Which attempt this was (1 = first), for outcomes of attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Who acted, for operator actions (`postoffice requeue` ...): the command and the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The local address the worker's connection came from, when it sent through an IP
    /// pool (absent from older workers and without pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The worker's IP pool the attempt went through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// For an `unsubscribed` outcome: the `List-Id:` (RFC 2919) the recipient unsubscribed
    /// from, when the message had one; the suppression entry then holds for that list only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_id: Option<String>,
    /// For an `unsubscribed` outcome: the sender domain the token names. The suppression's
    /// scope comes from the message's `queued` event; this is it when the ledger no longer
    /// has that message (retention is shorter than a link's validity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_domain: Option<String>,
}

/// The outcome of an attempt or an operator action, for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The recipient's server accepted the message. Final.
    Sent,
    /// Temporary failure; it will be tried again.
    Deferred,
    /// Refused for good by the recipient's server (or no such domain). Final.
    Bounced,
    /// Its lifetime ran out before a server took it. Final.
    Expired,
    /// Failed for good without a server's refusal (bad address, policy). Final.
    Failed,
    /// Set aside because its host is held.
    Held,
    /// Released from hold by an operator.
    Released,
    /// Put back in the queue by an operator.
    Requeued,
    /// Deleted by an operator. Final.
    Purged,
    /// Taken out of the message at intake: the address is on the suppression list. Final.
    Suppressed,
    /// The recipient reported the delivered message as unwanted (an RFC 5965 ARF feedback
    /// report to the bounce listener). Final; beats an earlier `sent`.
    Complained,
    /// The recipient used the one-click unsubscribe link the worker added (RFC 8058, the post
    /// office's `/unsubscribe/<token>`). Final; beats an earlier `sent`.
    Unsubscribed,
}

impl Outcome {
    /// Every outcome, in the order of the list above.
    pub const ALL: [Outcome; 12] = [
        Outcome::Sent,
        Outcome::Deferred,
        Outcome::Bounced,
        Outcome::Expired,
        Outcome::Failed,
        Outcome::Held,
        Outcome::Released,
        Outcome::Requeued,
        Outcome::Purged,
        Outcome::Suppressed,
        Outcome::Complained,
        Outcome::Unsubscribed,
    ];

    /// Whether nothing more will happen to the recipient after it (unless an operator acts).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Outcome::Sent
                | Outcome::Bounced
                | Outcome::Expired
                | Outcome::Failed
                | Outcome::Purged
                | Outcome::Suppressed
                | Outcome::Complained
                | Outcome::Unsubscribed
        )
    }

    /// The lowercase name used in JSON, the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
            Outcome::Expired => "expired",
            Outcome::Failed => "failed",
            Outcome::Held => "held",
            Outcome::Released => "released",
            Outcome::Requeued => "requeued",
            Outcome::Purged => "purged",
            Outcome::Suppressed => "suppressed",
            Outcome::Complained => "complained",
            Outcome::Unsubscribed => "unsubscribed",
        }
    }

    /// The outcome named `name` (as [`Outcome::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new event id: 12 hex digits of milliseconds since the epoch, then 20 random hex digits
/// (80 bits: no two events collide in practice, across every process of a fleet).
pub fn new_event_id() -> String {
    use rand::Rng;
    let millis = now_millis();
    let random: u128 = rand::thread_rng().gen::<u128>() & ((1u128 << 80) - 1);
    format!("{millis:012x}{random:020x}")
}

/// Unix milliseconds, now.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The id of a message's `queued` event: one per queue id, the same whoever writes it. The
/// post office writes it before its 200; a worker writes it again on the job's first attempt,
/// so a post office killed between its put and its events put (or an events put that never
/// reached beanstalkd) still leaves the message on record, and the store keeps one copy.
pub fn queued_event_id(queue_id: &str) -> String {
    format!("{QUEUED_ID_PREFIX}{queue_id}")
}

/// What every [`queued_event_id`] starts with (no random id does: those are hex digits).
pub const QUEUED_ID_PREFIX: &str = "queued-";

/// The `queued` event of a submitted message, from its job as the post office put it (`at`:
/// Unix milliseconds when it was queued; `held`: it went to the held tube).
pub fn queued_event(envelope: &crate::job::Envelope, message: &[u8], held: bool, at: u64) -> Event {
    let summary = hedwig_core::summary::Summary::of(message);
    Event {
        id: queued_event_id(&envelope.queue_id),
        at,
        queue_id: envelope.queue_id.clone(),
        what: What::Queued(Queued {
            host: envelope.host.clone(),
            sender: envelope.mail_from.clone(),
            recipients: envelope.rcpt_to.iter().map(|r| r.to_string()).collect(),
            size: message.len() as u64,
            message_kind: "message".into(),
            edge_id: envelope.message_id.clone(),
            edge_client: summary.edge_client.map(|ip| ip.to_string()),
            post_client: envelope.client_ip.clone(),
            message_id: summary.message_id,
            subject: summary.subject,
            bounce_of: None,
            expires_at: None,
            held,
            app: envelope.app.as_ref().map(|a| a.name.clone()),
            lane: envelope.lane.clone(),
            fixups: envelope.fixups.clone(),
        }),
    }
}

impl Event {
    /// An event that happens now, with a fresh id.
    pub fn now(queue_id: impl Into<String>, what: What) -> Event {
        Event {
            id: new_event_id(),
            at: now_millis(),
            queue_id: queue_id.into(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(recipient: &str) -> What {
        What::Recipient(RecipientEvent {
            recipient: recipient.into(),
            outcome: Outcome::Sent,
            mx: Some("mx.example.test".into()),
            ip: Some("192.0.2.1".into()),
            tls: Some(true),
            code: Some(250),
            dsn: Some("2.0.0".into()),
            reply: "250 2.0.0 ok".into(),
            attempt: Some(1),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        })
    }

    #[test]
    fn batches_round_trip() {
        let batch = Batch::new(vec![
            Event::now(
                "Q1",
                What::Queued(Queued {
                    host: "web1.example.test".into(),
                    sender: "app@example.test".into(),
                    recipients: vec!["a@example.org".into()],
                    size: 123,
                    message_kind: "message".into(),
                    edge_id: Some("e1".into()),
                    edge_client: Some("172.17.0.5".into()),
                    post_client: None,
                    message_id: Some("x@y".into()),
                    subject: Some("Hi".into()),
                    bounce_of: None,
                    expires_at: Some(10),
                    held: false,
                    app: Some("shop-billing-1".into()),
                    lane: Some("transactional".into()),
                    fixups: vec!["date".into(), "message-id".into()],
                }),
            ),
            Event::now("Q1", sent("a@example.org")),
            Event::now(
                "Q1",
                What::BounceQueued {
                    bounce_queue_id: "Q2".into(),
                    recipients: vec!["b@example.org".into()],
                },
            ),
        ]);
        let body = batch.encode();
        assert_eq!(Batch::decode(&body).unwrap(), batch);
    }

    /// The documented shape (docs/ledger.md): readers of the tube and of the API rely on it.
    #[test]
    fn json_shape_is_stable() {
        let event = Event {
            id: "i".into(),
            at: 5,
            queue_id: "Q".into(),
            what: sent("a@b.test"),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"id":"i","at":5,"queue_id":"Q","kind":"recipient","recipient":"a@b.test","outcome":"sent","mx":"mx.example.test","ip":"192.0.2.1","tls":true,"code":250,"dsn":"2.0.0","reply":"250 2.0.0 ok","attempt":1}"#
        );
        // Unknown fields (a newer writer) are ignored; absent optional ones are None.
        let newer = br#"{"v":1,"events":[{"id":"i","at":5,"queue_id":"Q","kind":"recipient","recipient":"a@b.test","outcome":"deferred","future":1}]}"#;
        let batch = Batch::decode(newer).unwrap();
        match &batch.events[0].what {
            What::Recipient(r) => {
                assert_eq!(r.outcome, Outcome::Deferred);
                assert_eq!(r.reply, "");
                assert_eq!(r.mx, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(Batch::decode(b"{"), Err(EventError::Json(_))));
        assert!(matches!(
            Batch::decode(br#"{"v":9,"events":[]}"#),
            Err(EventError::Version(9))
        ));
        assert!(matches!(
            Batch::decode(br#"{"v":1,"events":[{"id":"i","at":1,"queue_id":"Q","kind":"nope"}]}"#),
            Err(EventError::Json(_))
        ));
    }

    #[test]
    fn outcomes_name_and_finality() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{o}\""));
        }
        let finals: Vec<_> = Outcome::ALL.into_iter().filter(|o| o.is_final()).collect();
        assert_eq!(
            finals,
            [
                Outcome::Sent,
                Outcome::Bounced,
                Outcome::Expired,
                Outcome::Failed,
                Outcome::Purged,
                Outcome::Suppressed,
                Outcome::Complained,
                Outcome::Unsubscribed
            ]
        );
        // Old readers' names are unchanged; the new one reads back.
        let e: RecipientEvent =
            serde_json::from_str(r#"{"recipient":"a@b","outcome":"complained"}"#).unwrap();
        assert_eq!(e.outcome, Outcome::Complained);
        assert_eq!(Outcome::parse("nope"), None);
    }

    #[test]
    fn pool_and_source_address_are_optional() {
        // An attempt of a worker before IP pools reads without them.
        let old: RecipientEvent =
            serde_json::from_str(r#"{"recipient":"a@b","outcome":"sent","ip":"192.0.2.1"}"#)
                .unwrap();
        assert_eq!((old.source_ip, old.pool), (None, None));
        let text = r#"{"recipient":"a@b","outcome":"sent","reply":"","source_ip":"192.0.2.20","pool":"bulk"}"#;
        let new: RecipientEvent = serde_json::from_str(text).unwrap();
        assert_eq!(
            (new.source_ip.as_deref(), new.pool.as_deref()),
            (Some("192.0.2.20"), Some("bulk"))
        );
        assert_eq!(serde_json::to_string(&new).unwrap(), text);
        let none = RecipientEvent {
            pool: None,
            source_ip: None,
            ..new
        };
        assert!(!serde_json::to_string(&none).unwrap().contains("pool"));
    }

    #[test]
    fn event_ids_are_unique_and_sort_by_time() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a[..12] <= b[..12]);
    }

    /// Issue 19: a `queued` event carries the job's fix-ups; one from an older writer (no
    /// `fixups`) reads with none, and one without fix-ups is written without the key.
    #[test]
    fn queued_events_carry_fixups() {
        let mut envelope =
            crate::job::Envelope::new("Q".into(), "h".into(), "a@b.test".into(), vec![]);
        let plain = queued_event(&envelope, b"Subject: x\r\n\r\n", false, 1);
        assert!(!String::from_utf8(Batch::new(vec![plain]).encode())
            .unwrap()
            .contains("fixups"));
        envelope.fixups = vec!["from".into(), "to".into()];
        let event = queued_event(&envelope, b"Subject: x\r\n\r\n", false, 1);
        let body = Batch::new(vec![event]).encode();
        match &Batch::decode(&body).unwrap().events[0].what {
            What::Queued(q) => assert_eq!(q.fixups, ["from", "to"]),
            other => panic!("{other:?}"),
        }
        let old = br#"{"v":1,"events":[{"id":"i","at":5,"queue_id":"Q","kind":"queued","host":"h","sender":"","recipients":[],"size":1}]}"#;
        match &Batch::decode(old).unwrap().events[0].what {
            What::Queued(q) => assert!(q.fixups.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
