//! What to do with a job after a delivery attempt: pure decisions, no I/O.
//!
//! Input: the job and one [`Outcome`] per recipient. Output: a [`Plan`] the queue loop
//! carries out before it deletes the job: a re-put of the temporarily failed recipients with a
//! delay, failed-tube records for the permanent failures (grouped by identical failure), and
//! the recipients to name in a bounce. Recipients that were delivered appear nowhere, so they
//! are never sent the message again.
//!
//! Backoff (like Postfix's queue manager): the delay before the next attempt is the message's
//! age, clamped to `[retry.first, retry.max_delay]`, so delays double from `first` until they
//! reach the cap; the last delay is shortened so that an attempt happens at the end of the
//! lifetime. A temporary failure at or after `retry.max_lifetime` becomes a permanent one with
//! reason `expired`.

use std::time::Duration;

use hedwig_core::address::Recipient;
use hedwig_queue::job::{Attempt, Failure, Job, Kind};

use crate::config::Retry;
use crate::error::Error;
use crate::smtp::reply::Reply;

/// The fate of one recipient in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Delivered,
    Deferred,
    Bounced,
}

impl Status {
    /// As in Postfix logs and [`Attempt::status`].
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        }
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub status: Status,
    /// `delivered`, or [`Error::reason`].
    pub reason: String,
    pub code: Option<u16>,
    /// RFC 3463 status code.
    pub dsn: String,
    /// The remote server's full reply, or a local explanation.
    pub response: String,
    /// `mx.example.com[192.0.2.1]:25`, when a server was reached.
    pub relay: Option<String>,
    /// Whether the session ran under TLS, when a server took part in the transaction.
    pub tls: Option<bool>,
    /// For a deferral: the destination asked for (or is held to) at least this wait.
    pub retry_after: Option<Duration>,
    /// The local address the transaction's connection came from, when an IP pool bound it.
    pub source: Option<std::net::IpAddr>,
    /// The IP pool the attempt went through, if any.
    pub pool: Option<String>,
}

impl Outcome {
    /// Accepted by the server with `reply`.
    pub fn delivered(reply: &Reply, relay: Option<String>) -> Outcome {
        Outcome {
            status: Status::Delivered,
            reason: "delivered".into(),
            code: Some(reply.code),
            dsn: reply.dsn.clone().unwrap_or_else(|| "2.0.0".into()),
            response: reply.to_string(),
            relay,
            tls: None,
            retry_after: None,
            source: None,
            pool: None,
        }
    }

    /// Failed with `error`: bounced if it is permanent, deferred otherwise.
    pub fn failed(error: &Error, relay: Option<String>) -> Outcome {
        Outcome {
            status: if error.is_permanent() {
                Status::Bounced
            } else {
                Status::Deferred
            },
            reason: error.reason().into(),
            code: error.code(),
            dsn: error.dsn(),
            response: match error {
                Error::Rejected { reply, .. } => reply.to_string(),
                other => other.to_string(),
            },
            relay,
            tls: None,
            retry_after: match error {
                Error::Throttled { retry_after, .. } => Some(*retry_after),
                _ => None,
            },
            source: None,
            pool: None,
        }
    }

    fn failure(&self, at: u64) -> Failure {
        Failure {
            at,
            reason: self.reason.clone(),
            code: self.code,
            dsn: Some(self.dsn.clone()),
            response: self.response.clone(),
            relay: self.relay.clone(),
        }
    }
}

/// What the queue loop must record before deleting the job.
#[derive(Debug, Default)]
pub struct Plan {
    /// The job again, with only the deferred recipients, to put back after the delay.
    pub retry: Option<(Job, Duration)>,
    /// Failed-tube records: the job with the failed recipients and `failure` set.
    pub failed: Vec<Job>,
    /// The recipients to report in a bounce (empty: no bounce).
    pub bounce: Vec<(String, Failure)>,
    /// Where the bounce goes (the effective envelope sender).
    pub bounce_to: String,
    pub delivered: Vec<String>,
    /// Every recipient's outcome of this attempt (after expiry), for the log.
    pub finals: Vec<(Recipient, Outcome)>,
}

/// Decides what becomes of `job` after `outcomes` (one per recipient tried).
///
/// Recipients of the job without an outcome are deferred (they were not tried). `return_path`
/// is the envelope sender used for delivery, where bounces go.
pub fn plan(
    job: &Job,
    outcomes: &[(Recipient, Outcome)],
    now: u64,
    retry: &Retry,
    bounces: bool,
    return_path: &str,
) -> Plan {
    let env = &job.envelope;
    let age = Duration::from_secs(now.saturating_sub(env.received_at));
    let expired = age >= retry.max_lifetime;

    let mut finals: Vec<(Recipient, Outcome)> = Vec::new();
    for rcpt in &env.rcpt_to {
        let outcome = outcomes
            .iter()
            .find(|(r, _)| r == rcpt)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| Outcome {
                status: Status::Deferred,
                reason: "not-tried".into(),
                code: None,
                dsn: "4.3.0".into(),
                response: "not tried in this attempt".into(),
                relay: None,
                tls: None,
                retry_after: None,
                source: None,
                pool: None,
            });
        let outcome = if outcome.status == Status::Deferred && expired {
            Outcome {
                status: Status::Bounced,
                reason: "expired".into(),
                response: Error::Expired(outcome.response.clone()).to_string(),
                ..outcome
            }
        } else {
            outcome
        };
        finals.push((rcpt.clone(), outcome));
    }

    let mut history = env.history.clone();
    history.extend(group(&finals).into_iter().map(|(o, rcpts)| Attempt {
        at: now,
        recipients: rcpts.into_iter().map(String::from).collect(),
        status: o.status.as_str().into(),
        code: o.code,
        dsn: Some(o.dsn.clone()),
        response: o.response.clone(),
        relay: o.relay.clone(),
    }));

    let with = |rcpts: Vec<Recipient>, failure: Option<Failure>| {
        let mut envelope = env.clone();
        envelope.rcpt_to = rcpts;
        envelope.history = history.clone();
        envelope.failure = failure;
        Job {
            envelope,
            message: job.message.clone(),
        }
    };

    let mut plan = Plan {
        bounce_to: return_path.to_string(),
        ..Plan::default()
    };
    let deferred: Vec<&(Recipient, Outcome)> = finals
        .iter()
        .filter(|(_, o)| o.status == Status::Deferred)
        .collect();
    if !deferred.is_empty() {
        // A destination that asked us to slow down sets a floor on the delay (still
        // within the lifetime, so expiry is not pushed back).
        let floor = deferred.iter().filter_map(|(_, o)| o.retry_after).max();
        let left = retry
            .max_lifetime
            .saturating_sub(age)
            .max(Duration::from_secs(1));
        let delay = floor.map_or(next_delay(age, retry), |f| {
            next_delay(age, retry).max(f).min(left)
        });
        let rcpts = deferred.iter().map(|(r, _)| r.clone()).collect();
        plan.retry = Some((with(rcpts, None), delay));
    }
    let bounced: Vec<(Recipient, Outcome)> = finals
        .iter()
        .filter(|(_, o)| o.status == Status::Bounced)
        .cloned()
        .collect();
    for (outcome, rcpts) in group(&bounced) {
        plan.failed.push(with(rcpts, Some(outcome.failure(now))));
    }
    // Never to the null sender, never for a bounce, never to an address that is not one.
    let may_bounce = bounces
        && env.kind == Kind::Message
        && matches!(
            hedwig_core::address::parse_reverse_path(return_path),
            Ok(Some(_))
        );
    if may_bounce {
        plan.bounce = bounced
            .iter()
            .map(|(r, o)| (r.to_string(), o.failure(now)))
            .collect();
    }
    plan.delivered = finals
        .iter()
        .filter(|(_, o)| o.status == Status::Delivered)
        .map(|(r, _)| r.to_string())
        .collect();
    plan.finals = finals;
    plan
}

/// The delay before the next attempt of a message `age` old.
pub fn next_delay(age: Duration, retry: &Retry) -> Duration {
    let delay = age.clamp(retry.first, retry.max_delay.max(retry.first));
    let left = retry.max_lifetime.saturating_sub(age);
    delay.min(left).max(Duration::from_secs(1))
}

/// Recipients with identical outcomes, in first-seen order.
fn group(outcomes: &[(Recipient, Outcome)]) -> Vec<(Outcome, Vec<Recipient>)> {
    let mut groups: Vec<(Outcome, Vec<Recipient>)> = Vec::new();
    for (rcpt, outcome) in outcomes {
        match groups.iter_mut().find(|(o, _)| o == outcome) {
            Some((_, rcpts)) => rcpts.push(rcpt.clone()),
            None => groups.push((outcome.clone(), vec![rcpt.clone()])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Phase;
    use hedwig_queue::job::Envelope;

    const T0: u64 = 1_700_000_000;

    fn job(rcpts: &[&str]) -> Job {
        let mut envelope = Envelope::new(
            "Q1".into(),
            "web1.example".into(),
            "sender@example.com".into(),
            rcpts.iter().map(|&r| r.into()).collect(),
        );
        envelope.received_at = T0;
        Job {
            envelope,
            message: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        }
    }

    fn retry() -> Retry {
        Retry {
            first: Duration::from_secs(300),
            max_delay: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(86400),
        }
    }

    fn reply(text: &str) -> Outcome {
        let reply = Reply::from_text(text);
        if reply.is_positive() {
            Outcome::delivered(&reply, Some("mx[127.0.0.2]:25".into()))
        } else {
            Outcome::failed(
                &Error::Rejected {
                    phase: Phase::Rcpt,
                    reply,
                },
                Some("mx[127.0.0.2]:25".into()),
            )
        }
    }

    #[test]
    fn all_delivered_leaves_nothing_to_do() {
        let j = job(&["a@x.example", "b@x.example"]);
        let out = [
            (Recipient::from("a@x.example"), reply("250 2.0.0 ok")),
            (Recipient::from("b@x.example"), reply("250 2.0.0 ok")),
        ];
        let p = plan(&j, &out, T0 + 5, &retry(), true, "sender@example.com");
        assert!(p.retry.is_none());
        assert!(p.failed.is_empty());
        assert!(p.bounce.is_empty());
        assert_eq!(p.delivered, ["a@x.example", "b@x.example"]);
    }

    #[test]
    fn partial_acceptance_splits_three_ways() {
        let j = job(&[
            "ok@x.example",
            "grey@x.example",
            "bad@x.example",
            "bad2@x.example",
        ]);
        let out = [
            (Recipient::from("ok@x.example"), reply("250 2.1.5 ok")),
            (
                Recipient::from("grey@x.example"),
                reply("451 4.7.1 greylisted"),
            ),
            (
                Recipient::from("bad@x.example"),
                reply("550 5.1.1 no such user"),
            ),
            (
                Recipient::from("bad2@x.example"),
                reply("550 5.1.1 no such user"),
            ),
        ];
        let p = plan(&j, &out, T0 + 10, &retry(), true, "sender@example.com");
        let (again, delay) = p.retry.unwrap();
        assert_eq!(again.envelope.rcpt_to, ["grey@x.example"]);
        assert_eq!(again.envelope.queue_id, "Q1");
        assert_eq!(delay, Duration::from_secs(300));
        assert_eq!(again.message, j.message);
        // One attempt per distinct outcome: delivered, deferred, bounced (the two 550s share).
        assert_eq!(again.envelope.history.len(), 3);
        assert_eq!(
            again.envelope.history[2].recipients,
            ["bad@x.example", "bad2@x.example"]
        );
        assert_eq!(p.failed.len(), 1);
        let failed = &p.failed[0].envelope;
        assert_eq!(failed.rcpt_to, ["bad@x.example", "bad2@x.example"]);
        let f = failed.failure.as_ref().unwrap();
        assert_eq!(
            (f.reason.as_str(), f.code, f.dsn.as_deref()),
            ("rejected", Some(550), Some("5.1.1"))
        );
        assert_eq!(f.response, "550 5.1.1 no such user");
        assert_eq!(f.relay.as_deref(), Some("mx[127.0.0.2]:25"));
        assert_eq!(p.bounce.len(), 2);
        assert_eq!(p.bounce_to, "sender@example.com");
        assert_eq!(p.delivered, ["ok@x.example"]);
    }

    #[test]
    fn different_failures_make_separate_records() {
        let j = job(&["a@x.example", "b@y.example"]);
        let out = [
            (Recipient::from("a@x.example"), reply("550 5.1.1 unknown")),
            (
                Recipient::from("b@y.example"),
                Outcome::failed(&Error::NullMx("y.example".into()), None),
            ),
        ];
        let p = plan(&j, &out, T0, &retry(), true, "s@example.com");
        assert_eq!(p.failed.len(), 2);
        assert_eq!(
            p.failed[1].envelope.failure.as_ref().unwrap().reason,
            "null-mx"
        );
    }

    #[test]
    fn expiry_turns_deferral_into_bounce() {
        let j = job(&["grey@x.example"]);
        let out = [(
            Recipient::from("grey@x.example"),
            reply("451 4.7.1 greylisted"),
        )];
        let p = plan(&j, &out, T0 + 86400, &retry(), true, "s@example.com");
        assert!(p.retry.is_none());
        let f = p.failed[0].envelope.failure.as_ref().unwrap();
        assert_eq!(f.reason, "expired");
        assert!(
            f.response.contains("451 4.7.1 greylisted"),
            "{}",
            f.response
        );
        assert_eq!(p.bounce.len(), 1);
        // One second earlier it is still retried, at the end of the lifetime.
        let p = plan(&j, &out, T0 + 86399, &retry(), true, "s@example.com");
        assert_eq!(p.retry.unwrap().1, Duration::from_secs(1));
    }

    #[test]
    fn no_bounce_for_null_sender_bounces_or_when_off() {
        let out = [(Recipient::from("bad@x.example"), reply("550 5.1.1 no"))];
        let j = job(&["bad@x.example"]);
        assert!(plan(&j, &out, T0, &retry(), true, "").bounce.is_empty());
        assert!(plan(&j, &out, T0, &retry(), false, "s@e").bounce.is_empty());
        assert!(plan(&j, &out, T0, &retry(), true, "a@b>\r\nX")
            .bounce
            .is_empty());
        let mut b = job(&["bad@x.example"]);
        b.envelope.kind = Kind::Bounce;
        let p = plan(&b, &out, T0, &retry(), true, "s@e");
        assert!(p.bounce.is_empty());
        // The failed-tube record is kept in every case.
        assert_eq!(p.failed.len(), 1);
    }

    #[test]
    fn untried_recipients_are_deferred() {
        let j = job(&["a@x.example", "b@x.example"]);
        let out = [(Recipient::from("a@x.example"), reply("250 ok"))];
        let p = plan(&j, &out, T0, &retry(), true, "s@e");
        assert_eq!(p.retry.unwrap().0.envelope.rcpt_to, ["b@x.example"]);
    }

    #[test]
    fn slow_down_sets_a_delay_floor() {
        let j = job(&["a@x.example"]);
        let throttled = Outcome::failed(
            &Error::Throttled {
                destination: "mx.x.example".into(),
                why: "cooling down",
                retry_after: Duration::from_secs(900),
            },
            None,
        );
        assert_eq!(throttled.status, Status::Deferred);
        let out = [(Recipient::from("a@x.example"), throttled)];
        let p = plan(&j, &out, T0 + 10, &retry(), true, "s@e");
        assert_eq!(p.retry.unwrap().1, Duration::from_secs(900));
        // Never beyond the end of the lifetime.
        let p = plan(&j, &out, T0 + 86000, &retry(), true, "s@e");
        assert_eq!(p.retry.unwrap().1, Duration::from_secs(400));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let r = retry();
        let s = Duration::from_secs;
        assert_eq!(next_delay(s(0), &r), s(300));
        assert_eq!(next_delay(s(300), &r), s(300));
        assert_eq!(next_delay(s(600), &r), s(600));
        assert_eq!(next_delay(s(1200), &r), s(1200));
        assert_eq!(next_delay(s(2400), &r), s(2400));
        assert_eq!(next_delay(s(4800), &r), s(3600));
        assert_eq!(next_delay(s(86000), &r), s(400));
        assert_eq!(next_delay(s(90000), &r), s(1));
    }
}
