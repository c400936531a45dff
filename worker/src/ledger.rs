//! The delivery ledger's events as the worker sees them: what an attempt did to each
//! recipient, the bounce it queued, the job it set aside for a held host.
//!
//! Pure functions from a job and its [`Plan`] to [`Event`]s; the queue loop
//! ([`crate::queue`]) emits them to the events tube of the server the job came from, before
//! it deletes the job (so every outcome is recorded at least once; an event recorded twice is
//! harmless, its id is unique).
//!
//! An attempt's outcome per recipient: `sent`; `deferred`; `expired` (its lifetime ran out);
//! `bounced` (a server refused it, or its domain has no mail server); `failed` (refused for
//! good here, with no server involved: a bad address, a mail loop, a refused literal). The
//! attempt number of a recipient is one more than the attempts its job's history records for
//! it.
//!
//! Not here: putting the events ([`hedwig_queue::emit`]), their format
//! ([`hedwig_queue::event`]).

use hedwig_core::summary::Summary;
use hedwig_queue::event::{Event, Outcome as EventOutcome, Queued, RecipientEvent, What};
use hedwig_queue::job::{Job, Kind};

use crate::plan::{Outcome, Plan, Status};

/// Longest reply text kept in an event, in characters (a remote reply is bounded by the
/// SMTP client already; this keeps an event well inside a batch).
pub const MAX_REPLY: usize = 2000;

/// One `Recipient` event per recipient of `plan.finals`: the outcomes of the attempt on `job`.
pub fn attempt_events(job: &Job, plan: &Plan) -> Vec<Event> {
    let env = &job.envelope;
    plan.finals
        .iter()
        .map(|(rcpt, outcome)| {
            let rcpt = rcpt.to_string();
            let before = env
                .history
                .iter()
                .filter(|a| a.recipients.contains(&rcpt))
                .count();
            let attempt = u32::try_from(before).unwrap_or(u32::MAX).saturating_add(1);
            Event::now(
                env.queue_id.clone(),
                What::Recipient(recipient_event(rcpt, outcome, attempt)),
            )
        })
        .collect()
}

fn recipient_event(recipient: String, outcome: &Outcome, attempt: u32) -> RecipientEvent {
    let (mx, ip) = outcome
        .relay
        .as_deref()
        .map(split_relay)
        .unwrap_or((None, None));
    RecipientEvent {
        recipient,
        outcome: event_outcome(outcome),
        mx,
        ip,
        tls: outcome.tls,
        code: outcome.code,
        dsn: Some(outcome.dsn.clone()).filter(|d| !d.is_empty()),
        reply: outcome.response.chars().take(MAX_REPLY).collect(),
        attempt: Some(attempt),
        by: None,
        list_id: None,
        source_ip: outcome.source.map(|ip| ip.to_string()),
        pool: outcome.pool.clone(),
        sender_domain: None,
    }
}

/// The ledger's name for an attempt's outcome.
pub fn event_outcome(outcome: &Outcome) -> EventOutcome {
    match outcome.status {
        Status::Delivered => EventOutcome::Sent,
        Status::Deferred => EventOutcome::Deferred,
        Status::Bounced if outcome.reason == "expired" => EventOutcome::Expired,
        Status::Bounced
            if outcome.code.is_some()
                || matches!(outcome.reason.as_str(), "no-domain" | "null-mx" | "no-mx") =>
        {
            EventOutcome::Bounced
        }
        Status::Bounced => EventOutcome::Failed,
    }
}

/// `mx.example.com[192.0.2.1]:25` as (`mx.example.com`, `192.0.2.1`); any other relay
/// (`maildir:/path`) as the MX name alone.
pub fn split_relay(relay: &str) -> (Option<String>, Option<String>) {
    if let Some((name, rest)) = relay.split_once('[') {
        if let Some((ip, _port)) = rest.rsplit_once(']') {
            return (Some(name.to_owned()), Some(ip.to_owned()));
        }
    }
    (Some(relay.to_owned()), None)
}

/// The events of a bounce queued for `job`: `BounceQueued` on the original (naming the
/// recipients the bounce reports, `plan.bounce`), and the bounce's own `Queued` (kind
/// `bounce`, to the original's sender). `lifetime` is the worker's `retry.max_lifetime`.
pub fn bounce_events(
    job: &Job,
    plan: &Plan,
    bounce: &Job,
    lifetime: std::time::Duration,
) -> Vec<Event> {
    let (env, b) = (&job.envelope, &bounce.envelope);
    let summary = Summary::of(&bounce.message);
    let recipients: Vec<String> = b.rcpt_to.iter().map(|r| r.to_string()).collect();
    vec![
        Event::now(
            env.queue_id.clone(),
            What::BounceQueued {
                bounce_queue_id: b.queue_id.clone(),
                recipients: plan.bounce.iter().map(|(r, _)| r.clone()).collect(),
            },
        ),
        Event::now(
            b.queue_id.clone(),
            What::Queued(Queued {
                host: b.host.clone(),
                sender: b.mail_from.clone(),
                recipients,
                size: bounce.message.len() as u64,
                message_kind: match b.kind {
                    Kind::Bounce => "bounce".into(),
                    Kind::Message => "message".into(),
                },
                edge_id: None,
                edge_client: None,
                post_client: None,
                message_id: summary.message_id,
                subject: summary.subject,
                bounce_of: Some(env.queue_id.clone()),
                expires_at: Some(b.received_at.saturating_add(lifetime.as_secs())),
                held: false,
                app: None,
                lane: b.lane.clone(),
                fixups: Vec::new(),
            }),
        ),
    ]
}

/// `held` for every recipient of a job set aside because its host is held.
pub fn held_events(job: &Job, held_tube: &str) -> Vec<Event> {
    let env = &job.envelope;
    env.rcpt_to
        .iter()
        .map(|rcpt| {
            Event::now(
                env.queue_id.clone(),
                What::Recipient(RecipientEvent {
                    recipient: rcpt.to_string(),
                    outcome: EventOutcome::Held,
                    mx: None,
                    ip: None,
                    tls: None,
                    code: None,
                    dsn: None,
                    reply: format!("host {} is held; moved to {held_tube}", env.host),
                    attempt: None,
                    by: None,
                    list_id: None,
                    source_ip: None,
                    pool: None,
                    sender_domain: None,
                }),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Phase};
    use crate::smtp::reply::Reply;
    use hedwig_core::address::Recipient;
    use hedwig_queue::job::{Attempt, Envelope};

    fn job() -> Job {
        let mut envelope = Envelope::new(
            "Q1".into(),
            "web1.example".into(),
            "s@example.com".into(),
            vec!["a@x.test".into(), "b@x.test".into()],
        );
        envelope.history.push(Attempt {
            at: 1,
            recipients: vec!["b@x.test".into()],
            status: "deferred".into(),
            code: Some(451),
            dsn: Some("4.7.1".into()),
            response: "451 4.7.1 later".into(),
            relay: None,
        });
        Job {
            envelope,
            message: b"Subject: s\r\n\r\nbody\r\n".to_vec(),
        }
    }

    #[test]
    fn outcomes_relays_and_attempt_numbers() {
        let relay = Some("mx.x.test[192.0.2.1]:25".to_string());
        let mut sent = Outcome::delivered(&Reply::from_text("250 2.0.0 ok"), relay.clone());
        sent.tls = Some(true);
        let refused = Outcome::failed(
            &Error::Rejected {
                phase: Phase::Rcpt,
                reply: Reply::from_text("550 5.1.1 no such user"),
            },
            relay,
        );
        let plan = Plan {
            finals: vec![
                (Recipient::from("a@x.test"), sent),
                (Recipient::from("b@x.test"), refused),
            ],
            ..Plan::default()
        };
        let events = attempt_events(&job(), &plan);
        let r: Vec<&RecipientEvent> = events
            .iter()
            .map(|e| match &e.what {
                What::Recipient(r) => r,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(r[0].outcome, EventOutcome::Sent);
        assert_eq!(
            (r[0].mx.as_deref(), r[0].ip.as_deref(), r[0].tls),
            (Some("mx.x.test"), Some("192.0.2.1"), Some(true))
        );
        assert_eq!((r[0].code, r[0].dsn.as_deref()), (Some(250), Some("2.0.0")));
        assert_eq!(r[0].attempt, Some(1));
        assert_eq!(r[1].outcome, EventOutcome::Bounced);
        assert_eq!(r[1].reply, "550 5.1.1 no such user");
        assert_eq!(r[1].attempt, Some(2), "its second attempt");
        assert!(events.iter().all(|e| e.queue_id == "Q1"));
    }

    #[test]
    fn permanent_failures_without_a_server_are_failed_and_expiry_is_expired() {
        let looped = Outcome::failed(&Error::Loop { hops: 60 }, None);
        assert_eq!(event_outcome(&looped), EventOutcome::Failed);
        let no_domain = Outcome::failed(&Error::NoSuchDomain("x.test".into()), None);
        assert_eq!(event_outcome(&no_domain), EventOutcome::Bounced);
        let mut expired = looped.clone();
        expired.reason = "expired".into();
        assert_eq!(event_outcome(&expired), EventOutcome::Expired);
        assert_eq!(
            split_relay("maildir:/var/mail"),
            (Some("maildir:/var/mail".into()), None)
        );
        assert_eq!(
            split_relay("mx[2001:db8::1]:25"),
            (Some("mx".into()), Some("2001:db8::1".into()))
        );
    }
}
