//! RFC 3464 delivery status notifications (bounces) for recipients that failed for good.
//!
//! [`build`] makes a `multipart/report; report-type=delivery-status` message (RFC 6522) with
//! three parts: a human-readable explanation (which recipients failed, the remote server's full
//! answer, the relay), the machine-readable `message/delivery-status` (per-recipient
//! `Final-Recipient`, `Action: failed`, `Status`, `Remote-MTA`, `Diagnostic-Code`), and the
//! original message's header section (`text/rfc822-headers`, RFC 6522 §4). When a recipient
//! address is not ASCII the status part is `message/global-delivery-status` with the RFC 6533
//! `utf-8` address type; when the original headers are not ASCII they travel as
//! `message/global-headers` (RFC 6533 §3.4).
//!
//! A bounce is bounded whatever the original and the remote answers hold ([`Limits`]): at
//! most `returned_bytes` of the original (its header section only, cut on a line, as
//! Postfix's `bounce_size_limit`), at most `diagnostic_bytes` of each recipient's diagnostic,
//! and at most `recipients` recipients detailed, then one line saying how many more failed.
//! So a post with a thousand recipients rejected with long replies cannot be turned into a
//! large bounce aimed at a forged sender.
//!
//! [`bounce_job`] wraps it in a queue job from the null sender to the original sender.
//! A bounce never goes to the null sender and never answers a bounce ([`Error::NoBounce`]).
//! Delay notices (`Action: delayed`) are not made here.

use std::fmt::Write as _;

use hedwig_core::address::Recipient;
use hedwig_queue::job::{Envelope, Failure, Job, Kind};

use crate::{rfc5322_date, Error};

/// Default of [`Limits::returned_bytes`] (Postfix's `bounce_size_limit`).
pub const DEFAULT_RETURNED_BYTES: usize = 50_000;
/// Default of [`Limits::diagnostic_bytes`].
pub const DEFAULT_DIAGNOSTIC_BYTES: usize = 512;
/// Default of [`Limits::recipients`].
pub const DEFAULT_RECIPIENTS: usize = 100;
/// Longer response lines are split.
const MAX_LINE: usize = 900;

/// How much a bounce may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many bytes of the original message are returned: its header section,
    /// cut at a line boundary (never the body).
    pub returned_bytes: usize,
    /// At most this many bytes of each recipient's diagnostic (the remote answer or the local
    /// reason), in the text and in `Diagnostic-Code`; a longer one ends with `[...]`.
    pub diagnostic_bytes: usize,
    /// At most this many failed recipients are detailed; the text says how many more failed.
    pub recipients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            returned_bytes: DEFAULT_RETURNED_BYTES,
            diagnostic_bytes: DEFAULT_DIAGNOSTIC_BYTES,
            recipients: DEFAULT_RECIPIENTS,
        }
    }
}

/// What a bounce is made from.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    /// This relay's host name: `Reporting-MTA: dns; <hostname>` and the From: domain.
    pub hostname: &'a str,
    /// The From: address; `MAILER-DAEMON@<hostname>` when `None`.
    pub from: Option<&'a str>,
    /// The original message's envelope: the bounce goes to its `mail_from`.
    pub original: &'a Envelope,
    /// The original message (only its header section is quoted).
    pub message: &'a [u8],
    /// The recipients that failed, with why.
    pub failed: &'a [(String, Failure)],
    /// Unix seconds: the bounce's Date:.
    pub now: u64,
    /// How much of the original, the diagnostics and the recipients the bounce carries.
    pub limits: Limits,
}

/// Builds the DSN message (CRLF line endings).
pub fn build(params: &Params<'_>) -> Result<Vec<u8>, Error> {
    let original = params.original;
    if original.kind == Kind::Bounce {
        return Err(Error::NoBounce(format!("bounce {}", original.queue_id)));
    }
    let sender = original.mail_from.trim();
    if sender.is_empty() || sender == "<>" {
        return Err(Error::NoBounce(format!(
            "message {} from the null sender",
            original.queue_id
        )));
    }
    if params.failed.is_empty() {
        return Err(Error::NoRecipients);
    }
    let hostname = clean(params.hostname);
    let from = match params.from {
        Some(from) => clean(from),
        None => format!("MAILER-DAEMON@{hostname}"),
    };
    let sender = clean(sender.trim_start_matches('<').trim_end_matches('>'));
    let token = random_token();
    let boundary = format!("=_hedwig_dsn_{token}");
    let message_id = format!("<dsn.{}.{token}@{hostname}>", clean(&original.queue_id));

    let global_status = params.failed.iter().any(|(r, _)| !r.is_ascii());
    let quoted = header_section(params.message, params.limits.returned_bytes);
    let global_headers = !quoted.is_ascii();

    let mut text = String::new();
    human_readable(&mut text, params, &hostname);
    let text_cte = if text.is_ascii() { "7bit" } else { "8bit" };
    let mut status = String::new();
    delivery_status(&mut status, params, &hostname);
    let status_cte = if status.is_ascii() { "7bit" } else { "8bit" };

    let mut out = Vec::with_capacity(2048 + text.len() + status.len() + quoted.len());
    let mut head = String::new();
    // Infallible: writing to a String.
    let _ = write!(
        head,
        "From: Mail Delivery System <{from}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: {message_id}\r\n\
         Auto-Submitted: auto-replied\r\n",
        date = rfc5322_date(params.now),
    );
    if let Some(id) = original_message_id(params.message) {
        let _ = write!(head, "In-Reply-To: {id}\r\nReferences: {id}\r\n");
    }
    let _ = write!(
        head,
        "MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type={report};\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: {text_cte}\r\n\
         \r\n\
         {text}\r\n\
         --{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: {status_type}\r\n\
         Content-Transfer-Encoding: {status_cte}\r\n\
         \r\n\
         {status}\r\n\
         --{boundary}\r\n\
         Content-Description: Undelivered Message Headers\r\n\
         Content-Type: {headers_type}\r\n\
         Content-Transfer-Encoding: {headers_cte}\r\n\
         \r\n",
        // RFC 6533 §6.3: the report type names the status part's subtype.
        report = if global_status {
            "global-delivery-status"
        } else {
            "delivery-status"
        },
        status_type = if global_status {
            "message/global-delivery-status"
        } else {
            "message/delivery-status"
        },
        headers_type = if global_headers {
            "message/global-headers"
        } else {
            "text/rfc822-headers"
        },
        headers_cte = if global_headers { "8bit" } else { "7bit" },
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(quoted);
    if !quoted.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(out)
}

/// The bounce as a queue job: null sender, to the original sender, `kind: bounce`, with the
/// new `queue_id` and the original sending host (so logs tie it to the host it answers).
pub fn bounce_job(params: &Params<'_>, queue_id: String) -> Result<Job, Error> {
    let message = build(params)?;
    let original = params.original;
    let mut envelope = Envelope::new(
        queue_id,
        original.host.clone(),
        String::new(),
        vec![Recipient::parse(original.mail_from.trim())],
    );
    envelope.kind = Kind::Bounce;
    envelope.received_at = params.now;
    Ok(Job { envelope, message })
}

/// The RFC 3463 status for a failed recipient: the server's enhanced code when it is a
/// permanent one; for expiry the last temporary code or `4.4.7`; else one matching the
/// reason, or `5.0.0`.
pub fn status_code(failure: &Failure) -> String {
    let given = failure.dsn.as_deref().filter(|d| valid_status(d));
    if failure.reason == "expired" {
        return given.unwrap_or("4.4.7").to_string();
    }
    if let Some(d) = given.filter(|d| d.starts_with('5')) {
        return d.to_string();
    }
    match failure.reason.as_str() {
        // RFC 7505 §4.2
        "null-mx" => "5.1.10",
        "no-mx" | "nxdomain" => "5.1.2",
        // RFC 6531 §3.7.5
        "smtputf8" => "5.6.7",
        "too-big" | "size" => "5.3.4",
        _ => "5.0.0",
    }
    .to_string()
}

/// `class.subject.detail`, RFC 3463 §2: class 2/4/5, up to 3 and 3 digits.
fn valid_status(code: &str) -> bool {
    let mut parts = code.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(class, "2" | "4" | "5")
        && [subject, detail]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

fn human_readable(out: &mut String, params: &Params<'_>, hostname: &str) {
    let _ = write!(
        out,
        "This is the mail system at host {hostname}.\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients. It's attached below.\r\n\
         \r\n\
         The mail system\r\n"
    );
    let limits = &params.limits;
    for (recipient, failure) in detailed(params) {
        let _ = write!(out, "\r\n<{}>: ", clean(recipient));
        match &failure.relay {
            Some(relay) => {
                let _ = write!(out, "host {} said:\r\n", clean(relay));
            }
            None => out.push_str("\r\n"),
        }
        for line in response_lines(&failure.response, limits.diagnostic_bytes) {
            let _ = write!(out, "    {line}\r\n");
        }
        if failure.reason == "expired" {
            out.push_str("    (gave up: the message stayed in the queue too long)\r\n");
        }
    }
    let more = params.failed.len().saturating_sub(limits.recipients);
    if more > 0 {
        let _ = write!(
            out,
            "\r\n... and {more} more recipient{} (not listed: at most {} per notification).\r\n",
            if more == 1 { "" } else { "s" },
            limits.recipients
        );
    }
}

/// The failed recipients a bounce details: the first [`Limits::recipients`].
fn detailed<'p>(params: &'p Params<'_>) -> impl Iterator<Item = &'p (String, Failure)> {
    params.failed.iter().take(params.limits.recipients)
}

fn delivery_status(out: &mut String, params: &Params<'_>, hostname: &str) {
    let original = params.original;
    // RFC 3464 §2.2: per-message fields.
    let _ = write!(
        out,
        "Reporting-MTA: dns; {hostname}\r\n\
         X-Hedwig-Queue-ID: {}\r\n\
         Arrival-Date: {}\r\n",
        clean(&original.queue_id),
        rfc5322_date(original.received_at),
    );
    // RFC 3464 §2.3: per-recipient fields, each group after an empty line.
    for (recipient, failure) in detailed(params) {
        let recipient = clean(recipient.trim_start_matches('<').trim_end_matches('>'));
        // RFC 6533 §3: the utf-8 address type for an address that is not ASCII.
        let address_type = if recipient.is_ascii() {
            "rfc822"
        } else {
            "utf-8"
        };
        let _ = write!(
            out,
            "\r\nFinal-Recipient: {address_type}; {recipient}\r\n\
             Action: failed\r\n\
             Status: {}\r\n",
            status_code(failure)
        );
        if let Some(host) = failure.relay.as_deref().and_then(relay_host) {
            let _ = write!(out, "Remote-MTA: dns; {host}\r\n");
        }
        let lines = response_lines(&failure.response, params.limits.diagnostic_bytes);
        if !lines.is_empty() {
            // A server's answer is an `smtp` diagnostic; a local reason (DNS, timeout, TLS)
            // uses an X- type, as Postfix does with `X-Postfix`.
            let diagnostic_type = if failure.code.is_some() {
                "smtp"
            } else {
                "X-Hedwig"
            };
            // RFC 3464 §2.3.6 allows folding; keep every line of a multi-line reply.
            let _ = write!(
                out,
                "Diagnostic-Code: {diagnostic_type}; {}\r\n",
                lines.join("\r\n ")
            );
        }
        let _ = write!(out, "Last-Attempt-Date: {}\r\n", rfc5322_date(failure.at));
    }
}

/// The host name of a relay written as `mx.example.com[192.0.2.1]:25` (or the address when
/// only an address is known).
fn relay_host(relay: &str) -> Option<String> {
    let relay = clean(relay);
    let name = relay.split('[').next().unwrap_or("").trim();
    if !name.is_empty() {
        return Some(name.trim_end_matches(':').to_string());
    }
    let inner = relay.split('[').nth(1)?.split(']').next()?;
    (!inner.is_empty()).then(|| inner.to_string())
}

/// The lines of a (possibly multi-line) response, without control characters, at most
/// `max` bytes in all (then `[...]`) and [`MAX_LINE`] bytes a line (RFC 5322 §2.1.1 allows
/// 998).
fn response_lines(response: &str, max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut total = 0;
    for line in response
        .split('\n')
        .map(|l| clean(l.trim_end_matches('\r')))
    {
        let mut rest = line.as_str();
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_LINE).min(max - total);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                lines.push("[...]".to_string());
                return lines;
            }
            total += cut;
            lines.push(rest[..cut].to_string());
            rest = &rest[cut..];
        }
    }
    lines
}

/// Text safe inside a header field or a report line: control characters become spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The original header section, including its line breaks, capped at `max` bytes on a line
/// boundary.
fn header_section(message: &[u8], max: usize) -> &[u8] {
    let end = find(message, b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| find(message, b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    let section = &message[..end];
    if section.len() <= max {
        return section;
    }
    let cut = &section[..max];
    match cut.iter().rposition(|&b| b == b'\n') {
        Some(i) => &cut[..=i],
        None => &[],
    }
}

/// The original Message-ID, when it is a plain `<...>` token safe to repeat.
fn original_message_id(message: &[u8]) -> Option<String> {
    let headers = header_section(message, DEFAULT_RETURNED_BYTES);
    let parsed = mail_parser::MessageParser::new().parse_headers(headers)?;
    let id = parsed.message_id()?;
    let ok = !id.is_empty()
        && id.len() <= 250
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    ok.then(|| format!("<{id}>"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn random_token() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

#[cfg(test)]
mod tests;
