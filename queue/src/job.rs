//! The body of a beanstalkd job.
//!
//! One line of JSON ([`Envelope`]: queue id, sending host, envelope, history), a `\n`, then the
//! message bytes exactly as received (CRLF, 8-bit, NUL and all). Compact JSON never contains a
//! raw newline, so the first `\n` ends the header; the message needs no escaping and costs no
//! base64 overhead, and `peek` output stays readable for an operator.
//!
//! The same format serves the outbound tube (a message to deliver), the failed tube (the
//! recipients that failed for good, with [`Failure`] set) and bounces (`kind: bounce`).

use hedwig_core::address::Recipient;
use serde::{Deserialize, Serialize};

/// Format version written by this build. Readers accept any version they know.
pub const VERSION: u32 = 1;

/// Why a job body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job body has no header line")]
    NoHeader,
    #[error("job header is not valid JSON: {0}")]
    Header(#[source] serde_json::Error),
    #[error("job format version {0} is newer than this build understands")]
    Version(u32),
}

/// What kind of message a job carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A message a host submitted.
    #[default]
    Message,
    /// A delivery status notification made by a worker. A bounce never bounces.
    Bounce,
}

/// One delivery attempt for some recipients, appended by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unix seconds.
    pub at: u64,
    pub recipients: Vec<String>,
    /// `delivered`, `deferred` or `bounced`.
    pub status: String,
    /// The SMTP reply code, when a server answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The enhanced status code (RFC 3463), e.g. `4.7.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    /// The remote server's full answer, or a local explanation (DNS, timeout, TLS).
    pub response: String,
    /// `mx.example.com[192.0.2.1]:25`, when a server was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

/// A permanent failure, set on jobs in the failed tube.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Unix seconds.
    pub at: u64,
    /// Short machine-readable reason: `rejected`, `expired`, `no-mx`, `null-mx`, `smtputf8`, ...
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    pub response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

/// The envelope and bookkeeping of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    /// Assigned by the post office; follows the message through every tier's logs.
    pub queue_id: String,
    /// The message id made by the sending mailman, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The sending host's fqdn (lowercase).
    pub host: String,
    /// The address the post office saw the post come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Unix seconds when the post office queued the message.
    pub received_at: u64,
    /// Envelope sender; empty is the null sender.
    pub mail_from: String,
    /// The recipients still to deliver (or, in the failed tube, the ones that failed): strings
    /// in the JSON, parsed once when the job is decoded. One that does not parse still decodes
    /// (with its error; the worker fails it as `bad-address`).
    pub rcpt_to: Vec<Recipient>,
    #[serde(default)]
    pub kind: Kind,
    /// Delivery attempts so far, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// Set in the failed tube.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The domains this message may be DKIM-signed for, most specific first: the From:
    /// domain, then those of its parents that the sending host's policy also names. Empty: no
    /// signature (the host's policy lists no domain, or the message has no From: address).
    /// Written by the post office, which alone knows the host; the worker never chooses a
    /// key from the From: field by itself. Absent in jobs queued by a post office from before
    /// this field: the worker then signs only when the From: domain is the envelope sender's
    /// domain, which that post office checked against the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim_domains: Option<Vec<String>>,
    /// The app inside the sending host that sent it (a container or a mailman login), when
    /// mailman knew; absent in jobs from post offices before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<hedwig_core::wire::App>,
    /// The lane the post office chose ([`crate::lane`]): the worker applies its retry
    /// schedule and lifetime. Absent (a post office before lanes): the worker's default lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// The header fix-ups the sending mailman made (issue 19: `date`, `message-id`, `from`,
    /// `to`, `bcc`), as the post office checked them; empty (and absent from the JSON) when
    /// none, or in jobs from post offices before it. Carried for the ledger's `queued` event,
    /// which a worker writes again from the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixups: Vec<String>,
    /// A TLS-RPT (RFC 8460) report a worker queued for a `mailto:` rua: RFC 8460 §3 wants it
    /// delivered despite TLS failures, so the worker applies no MTA-STS policy (and counts no
    /// result) and uses opportunistic TLS for it. Absent (`false`) everywhere else; a worker
    /// from before it delivers such a job as any other.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_report: bool,
}

impl Envelope {
    /// A fresh envelope for a message the post office just accepted.
    pub fn new(
        queue_id: String,
        host: String,
        mail_from: String,
        rcpt_to: Vec<Recipient>,
    ) -> Envelope {
        Envelope {
            v: VERSION,
            queue_id,
            message_id: None,
            host,
            client_ip: None,
            received_at: hedwig_core::unix_now(),
            mail_from,
            rcpt_to,
            kind: Kind::Message,
            history: Vec::new(),
            failure: None,
            dkim_domains: None,
            app: None,
            lane: None,
            fixups: Vec::new(),
            tls_report: false,
        }
    }
}

/// A queued message: envelope plus the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub envelope: Envelope,
    pub message: Vec<u8>,
}

impl Job {
    /// The job body to put into beanstalkd.
    pub fn encode(&self) -> Vec<u8> {
        encode_parts(&self.envelope, &self.message)
    }

    /// Reads a job body.
    pub fn decode(body: &[u8]) -> Result<Job, JobError> {
        let (envelope, message) = decode_parts(body)?;
        Ok(Job {
            envelope,
            message: message.to_vec(),
        })
    }
}

/// Encodes without owning the message (the post office's hot path).
pub fn encode_parts(envelope: &Envelope, message: &[u8]) -> Vec<u8> {
    let mut body = serde_json::to_vec(envelope)
        .unwrap_or_else(|_| unreachable!("Envelope serializes to JSON"));
    body.reserve(message.len() + 1);
    body.push(b'\n');
    body.extend_from_slice(message);
    body
}

/// Decodes without copying the message.
pub fn decode_parts(body: &[u8]) -> Result<(Envelope, &[u8]), JobError> {
    let split = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(JobError::NoHeader)?;
    let envelope: Envelope = serde_json::from_slice(&body[..split]).map_err(JobError::Header)?;
    if envelope.v > VERSION {
        return Err(JobError::Version(envelope.v));
    }
    Ok((envelope, &body[split + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keeps_bytes_exact() {
        let message = b"Subject: \xff\xfe\r\n\r\nline\nbare lf\r\n\x00end\r\n.\r\n".to_vec();
        let mut envelope = Envelope::new(
            "Q1".into(),
            "web1.example.com".into(),
            "a@example.com".into(),
            vec!["b@example.org".into(), "\u{e9}@example.org".into()],
        );
        envelope.message_id = Some("m\n1".into());
        let job = Job { envelope, message };
        let body = job.encode();
        assert_eq!(
            body.iter().position(|&b| b == b'\n'),
            body.len().checked_sub(job.message.len() + 1)
        );
        assert_eq!(Job::decode(&body).unwrap(), job);
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(
            Job::decode(b"no newline"),
            Err(JobError::NoHeader)
        ));
        assert!(matches!(Job::decode(b"{]\nmsg"), Err(JobError::Header(_))));
        let future =
            br#"{"v":99,"queue_id":"q","host":"h","received_at":0,"mail_from":"","rcpt_to":[]}
msg"#;
        assert!(matches!(Job::decode(future), Err(JobError::Version(99))));
    }

    /// Bodies as earlier releases put them: jobs waiting in beanstalkd across an upgrade.
    #[test]
    fn bodies_from_earlier_releases_decode() {
        // The release before issue 11: no `dkim_domains`.
        let before_issue_11 = b"{\"v\":1,\"queue_id\":\"Q1\",\"message_id\":\"web1-0001\",\"host\":\"web1.example.test\",\"client_ip\":\"192.0.2.7\",\"received_at\":1764000000,\"mail_from\":\"app@sender.test\",\"rcpt_to\":[\"a@example.test\"],\"kind\":\"message\"}\nSubject: x\r\n\r\nbody\r\n";
        let job = Job::decode(before_issue_11).unwrap();
        assert_eq!(job.envelope.queue_id, "Q1");
        assert_eq!(job.envelope.message_id.as_deref(), Some("web1-0001"));
        assert_eq!(job.envelope.client_ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(job.envelope.rcpt_to, ["a@example.test"]);
        assert_eq!(job.envelope.dkim_domains, None);
        assert!(job.envelope.history.is_empty() && job.envelope.failure.is_none());
        assert_eq!(job.message, b"Subject: x\r\n\r\nbody\r\n");
        // Re-encoding writes the same bytes: nothing new is added to an old job.
        assert_eq!(job.encode(), before_issue_11);

        assert_eq!(
            job.envelope.rcpt_to[0].mailbox().unwrap().domain,
            "example.test"
        );

        // The issue 11 release: a failed record with `dkim_domains` and history.
        let failed = b"{\"v\":1,\"queue_id\":\"Q2\",\"host\":\"h\",\"received_at\":1,\"mail_from\":\"\",\"rcpt_to\":[\"b@x.test\"],\"kind\":\"bounce\",\"history\":[{\"at\":2,\"recipients\":[\"b@x.test\"],\"status\":\"bounced\",\"code\":550,\"dsn\":\"5.1.1\",\"response\":\"550 5.1.1 no\"}],\"failure\":{\"at\":2,\"reason\":\"rejected\",\"code\":550,\"dsn\":\"5.1.1\",\"response\":\"550 5.1.1 no\",\"relay\":\"mx[192.0.2.1]:25\"},\"dkim_domains\":[]}\n";
        let job = Job::decode(failed).unwrap();
        assert_eq!(job.envelope.kind, Kind::Bounce);
        assert_eq!(job.envelope.history[0].code, Some(550));
        assert_eq!(job.envelope.failure.as_ref().unwrap().reason, "rejected");
        assert_eq!(job.envelope.dkim_domains, Some(vec![]));
        assert!(job.message.is_empty());
        assert_eq!(job.encode(), failed);
        // The oldest bodies had no `kind`: a message.
        let no_kind = b"{\"v\":1,\"queue_id\":\"Q3\",\"host\":\"h\",\"received_at\":1,\"mail_from\":\"a@b\",\"rcpt_to\":[]}\nm";
        assert_eq!(Job::decode(no_kind).unwrap().envelope.kind, Kind::Message);
    }

    /// A recipient that is not an address (a hand-made job, a bug in an old release) does
    /// not make the job undecodable: it keeps its text and its error, and re-encodes as it was.
    #[test]
    fn unparsable_recipient_still_decodes() {
        let body = b"{\"v\":1,\"queue_id\":\"Q4\",\"host\":\"h\",\"received_at\":1,\"mail_from\":\"a@b.test\",\"rcpt_to\":[\"ok@x.test\",\"not an address\"],\"kind\":\"message\"}\nm";
        let job = Job::decode(body).unwrap();
        assert_eq!(job.envelope.rcpt_to, ["ok@x.test", "not an address"]);
        assert!(job.envelope.rcpt_to[0].mailbox().is_ok());
        assert!(job.envelope.rcpt_to[1].mailbox().is_err());
        assert_eq!(job.encode(), body);
    }

    /// A job from a post office with lanes and app identities, read by this worker, and a
    /// body from a yet newer one (a field nobody here knows): both decode, and a worker from
    /// before lanes reads them the same way (Envelope has no `deny_unknown_fields`).
    #[test]
    fn lane_app_and_unknown_fields_decode() {
        let body = b"{\"v\":1,\"queue_id\":\"Q5\",\"host\":\"h\",\"received_at\":1,\"mail_from\":\"a@b.test\",\"rcpt_to\":[\"c@d.test\"],\"app\":{\"name\":\"shop-billing-1\",\"source\":\"container\",\"lane\":\"transactional\"},\"lane\":\"transactional\",\"from_the_future\":{\"x\":1}}\nm";
        let job = Job::decode(body).unwrap();
        assert_eq!(job.envelope.lane.as_deref(), Some("transactional"));
        assert_eq!(job.envelope.app.as_ref().unwrap().name, "shop-billing-1");
        let mut envelope = Envelope::new("q".into(), "h".into(), "".into(), vec![]);
        envelope.lane = Some("bulk".into());
        let job = Job {
            envelope,
            message: b"m".to_vec(),
        };
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
    }

    #[test]
    fn dkim_domains_absent_empty_or_listed() {
        let old = br#"{"v":1,"queue_id":"q","host":"h","received_at":0,"mail_from":"","rcpt_to":[]}
msg"#;
        assert_eq!(Job::decode(old).unwrap().envelope.dkim_domains, None);
        let mut envelope = Envelope::new("q".into(), "h".into(), "".into(), vec![]);
        for domains in [None, Some(vec![]), Some(vec!["a.example".to_string()])] {
            envelope.dkim_domains = domains;
            let job = Job {
                envelope: envelope.clone(),
                message: b"m".to_vec(),
            };
            assert_eq!(Job::decode(&job.encode()).unwrap(), job);
        }
    }

    /// Issue 19: the fix-ups travel in the job; a job without them (an older post office)
    /// has none, and a job without fix-ups is written as before (no `fixups` key).
    #[test]
    fn fixups_absent_or_listed() {
        let old = br#"{"v":1,"queue_id":"q","host":"h","received_at":0,"mail_from":"","rcpt_to":[]}
msg"#;
        assert!(Job::decode(old).unwrap().envelope.fixups.is_empty());
        let mut envelope = Envelope::new("q".into(), "h".into(), "".into(), vec![]);
        let plain = Job {
            envelope: envelope.clone(),
            message: b"m".to_vec(),
        };
        assert!(!String::from_utf8_lossy(&plain.encode()).contains("fixups"));
        envelope.fixups = vec!["date".into(), "from".into()];
        let job = Job {
            envelope,
            message: b"m".to_vec(),
        };
        assert!(String::from_utf8_lossy(&job.encode()).contains(r#""fixups":["date","from"]"#));
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
    }
}
