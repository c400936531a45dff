//! What one message received by the bounce listener means, with no I/O: the ledger events it
//! makes, or the reply that refuses it.
//!
//! - An RFC 3464 DSN: for each token recipient, the recipient group about it (its
//!   `Final-Recipient` or `Original-Recipient`; the only group when there is one; else the
//!   first `failed` one). `Action: failed` makes a `bounced` event (status, diagnostic and
//!   remote MTA from the report). `delayed`, `delivered`, `relayed`, `expanded` make none: the
//!   ledger already has the delivery, and a deferral after it would change nothing.
//! - An RFC 5965 ARF report: a `complained` event for each token recipient, whatever the
//!   feedback type (it is in the event's reply).
//! - Anything else (an auto-reply, a person writing back, a broken report): refused with
//!   `550 5.6.0`, so nothing is taken silently and no backscatter is made here.
//!
//! Event ids are derived from the queue id, recipient, outcome and the report's bytes: a
//! report sent again (a lost `250`) is recorded once.

use hedwig_core::verp::{Verp, VerpKey};
use hedwig_message::report::{parse, Report, ReportError};
use hedwig_queue::event::{Event, Outcome, RecipientEvent, What};
use sha2::{Digest, Sha256};

/// What to do with one received message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Record these events (possibly none), then answer `250`.
    Record { events: Vec<Event>, note: String },
    /// Refuse the message with this code and text, for this reason.
    Refuse(u16, String, Refusal),
}

/// Why a message was refused (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// None of its recipients is a valid token of ours.
    UnknownToken,
    /// Not a DSN or ARF report (an auto-reply, a person writing back).
    NotAReport,
    /// A report that cannot be read.
    BadReport,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::UnknownToken => "refused_unknown_token",
            Refusal::NotAReport => "refused_not_a_report",
            Refusal::BadReport => "refused_bad_report",
        }
    }
}

/// The verdict on `body` sent to `rcpt_to` (addresses the session already checked), at
/// Unix milliseconds `now`.
pub fn judge(
    key: &VerpKey,
    domains: &[String],
    rcpt_to: &[String],
    body: &[u8],
    now: u64,
) -> Verdict {
    let verps: Vec<Verp> = rcpt_to
        .iter()
        .filter_map(|r| key.verify_address(r, domains))
        .collect();
    if verps.is_empty() {
        return Verdict::Refuse(
            550,
            "5.1.1 no such bounce address here".into(),
            Refusal::UnknownToken,
        );
    }
    let report = match parse(body) {
        Ok(r) => r,
        Err(e @ (ReportError::NotMime | ReportError::NotAReport)) => {
            return Verdict::Refuse(
                550,
                format!(
                    "5.6.0 only delivery status notifications (RFC 3464) and feedback reports \
                     (RFC 5965) are taken here: {e}"
                ),
                Refusal::NotAReport,
            )
        }
        Err(e) => return Verdict::Refuse(550, format!("5.6.0 {e}"), Refusal::BadReport),
    };
    let digest = Sha256::digest(body);
    let mut events = Vec::new();
    let mut notes = Vec::new();
    for verp in &verps {
        let (outcome, code, dsn, reply, mx) = match &report {
            Report::Feedback(f) => {
                let mut reply = format!(
                    "complaint (RFC 5965 ARF): Feedback-Type: {}",
                    f.feedback_type
                );
                if let Some(agent) = &f.user_agent {
                    reply.push_str(&format!("; User-Agent: {agent}"));
                }
                (Outcome::Complained, None, None, reply, None)
            }
            Report::Delivery(groups) => {
                let about = |g: &&hedwig_message::report::RecipientStatus| {
                    [&g.final_recipient, &g.original_recipient]
                        .into_iter()
                        .flatten()
                        .any(|a| same_address(a, &verp.recipient))
                };
                let group = groups
                    .iter()
                    .find(about)
                    .or(if groups.len() == 1 {
                        groups.first()
                    } else {
                        None
                    })
                    .or_else(|| groups.iter().find(|g| g.is_failure()));
                let Some(group) = group.filter(|g| g.is_failure()) else {
                    notes.push(format!("{}: no failure reported", verp.recipient));
                    continue;
                };
                let reply = format!(
                    "late bounce (RFC 3464 DSN): {}",
                    group
                        .diagnostic
                        .clone()
                        .unwrap_or_else(|| format!("Action: failed, Status: {}", group.status))
                );
                (
                    Outcome::Bounced,
                    group.reply_code(),
                    Some(group.status.clone()),
                    reply,
                    group.remote_mta.clone(),
                )
            }
        };
        let mut id = Sha256::new();
        for part in [
            verp.queue_id.as_bytes(),
            verp.recipient.as_bytes(),
            outcome.as_str().as_bytes(),
            &digest[..],
        ] {
            id.update((part.len() as u64).to_be_bytes());
            id.update(part);
        }
        notes.push(format!("{}: {outcome}", verp.recipient));
        events.push(Event {
            id: format!("report-{}", &hex::encode(id.finalize())[..40]),
            at: now,
            queue_id: verp.queue_id.clone(),
            what: What::Recipient(RecipientEvent {
                recipient: verp.recipient.clone(),
                outcome,
                mx,
                ip: None,
                tls: None,
                code,
                dsn,
                reply,
                attempt: None,
                by: None,
                list_id: None,
                source_ip: None,
                pool: None,
                sender_domain: None,
            }),
        });
    }
    Verdict::Record {
        events,
        note: notes.join(", "),
    }
}

/// `<Bob@Example.org>` and `bob@example.org` are the same address here (the report is
/// matched, not trusted: the token names the recipient).
fn same_address(reported: &str, recipient: &str) -> bool {
    let reported = reported
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    reported.eq_ignore_ascii_case(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QID: &str = "018F2A3B4C5D0123456789AB";
    const DSN: &str = include_str!("../../../message/testdata/reports/postfix-dsn.eml");
    const ARF: &str = include_str!("../../../message/testdata/reports/arf.eml");

    fn setup() -> (VerpKey, Vec<String>, String) {
        let key = VerpKey::new("a test secret of some length");
        let domains = vec!["bounces.example.com".to_string()];
        let to = key
            .return_path(QID, "bob@example.org", "bounces.example.com")
            .unwrap();
        (key, domains, to)
    }

    fn recipient(e: &Event) -> &RecipientEvent {
        match &e.what {
            What::Recipient(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dsn_bounces_the_token_recipient() {
        let (key, domains, to) = setup();
        let Verdict::Record { events, .. } =
            judge(&key, &domains, std::slice::from_ref(&to), DSN.as_bytes(), 7)
        else {
            panic!()
        };
        assert_eq!(events.len(), 1);
        let r = recipient(&events[0]);
        assert_eq!(events[0].queue_id, QID);
        assert_eq!(events[0].at, 7);
        assert_eq!(r.recipient, "bob@example.org");
        assert_eq!(r.outcome, Outcome::Bounced);
        assert_eq!(r.dsn.as_deref(), Some("5.1.1"));
        assert_eq!(r.code, Some(550));
        assert_eq!(r.mx.as_deref(), Some("store.example.org"));
        assert!(r.reply.contains("User unknown"), "{}", r.reply);
        // The same report again: the same event id.
        let Verdict::Record { events: again, .. } = judge(&key, &domains, &[to], DSN.as_bytes(), 9)
        else {
            panic!()
        };
        assert_eq!(again[0].id, events[0].id);
    }

    #[test]
    fn a_delay_notice_records_nothing() {
        let (key, domains, to) = setup();
        let delayed = DSN
            .replace("Action: failed", "Action: delayed")
            .replace("Status: 5.1.1", "Status: 4.4.1");
        let v = judge(&key, &domains, &[to], delayed.as_bytes(), 7);
        assert!(
            matches!(v, Verdict::Record { ref events, .. } if events.is_empty()),
            "{v:?}"
        );
    }

    #[test]
    fn an_arf_report_is_a_complaint() {
        let (key, domains, to) = setup();
        let Verdict::Record { events, .. } = judge(&key, &domains, &[to], ARF.as_bytes(), 7) else {
            panic!()
        };
        let r = recipient(&events[0]);
        assert_eq!(r.outcome, Outcome::Complained);
        assert!(r.reply.contains("Feedback-Type: abuse"), "{}", r.reply);
        assert_eq!(events[0].queue_id, QID);
    }

    #[test]
    fn other_mail_is_refused() {
        let (key, domains, to) = setup();
        let v = judge(
            &key,
            &domains,
            std::slice::from_ref(&to),
            b"Subject: out of office\r\n\r\nBack Monday\r\n",
            7,
        );
        assert!(
            matches!(v, Verdict::Refuse(550, ref t, _) if t.starts_with("5.6.0")),
            "{v:?}"
        );
        let v = judge(
            &key,
            &domains,
            &["bounces+aaaa@bounces.example.com".into()],
            DSN.as_bytes(),
            7,
        );
        assert!(
            matches!(v, Verdict::Refuse(550, ref t, Refusal::UnknownToken) if t.starts_with("5.1.1")),
            "{v:?}"
        );
    }
}
