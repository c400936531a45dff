//! Reading reports that come back to a VERP return path (issue 14): RFC 3464 delivery status
//! notifications (late bounces) and RFC 5965 ARF feedback reports (complaints).
//!
//! A report is a MIME message (RFC 6522 `multipart/report`) with one machine-readable part:
//! `message/delivery-status` (or `message/global-delivery-status`, RFC 6533) or
//! `message/feedback-report`. That part's body is groups of header-style fields separated by
//! empty lines; for a DSN the first group is about the message and each further one about one
//! recipient (RFC 3464 §2.1). Only the fields hedwig acts on are kept.
//!
//! Bounds: the input is already capped by the listener's message size; here at most
//! [`MAX_GROUPS`] recipient groups are read and every kept value is cut to [`MAX_VALUE`]
//! characters, with control characters replaced.
//!
//! Not here: which message and recipient the report is about (the VERP token says that,
//! `hedwig_core::verp`), and what the ledger does with it.

use mail_parser::{MessageParser, MimeHeaders};

/// Recipient groups read from one DSN.
pub const MAX_GROUPS: usize = 1000;
/// Characters kept of one field value.
pub const MAX_VALUE: usize = 500;

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// RFC 3464: one entry per recipient group, in order.
    Delivery(Vec<RecipientStatus>),
    /// RFC 5965.
    Feedback(Feedback),
}

/// One recipient group of a DSN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientStatus {
    /// `Final-Recipient`, without its address type (`rfc822;`).
    pub final_recipient: Option<String>,
    /// `Original-Recipient`, without its address type.
    pub original_recipient: Option<String>,
    /// `Action`, lowercase: `failed`, `delayed`, `delivered`, `relayed`, `expanded`.
    pub action: String,
    /// `Status`: the enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// `Diagnostic-Code`, without its type (`smtp;`).
    pub diagnostic: Option<String>,
    /// `Remote-MTA`, without its type (`dns;`).
    pub remote_mta: Option<String>,
}

impl RecipientStatus {
    /// RFC 3464 §2.3.3: `failed` is a permanent failure, whatever the status class says.
    pub fn is_failure(&self) -> bool {
        self.action == "failed"
    }

    /// The SMTP reply code at the start of an `smtp;` diagnostic, if any.
    pub fn reply_code(&self) -> Option<u16> {
        let d = self.diagnostic.as_deref()?;
        let code: u16 = d.get(..3)?.parse().ok()?;
        (200..600).contains(&code).then_some(code)
    }
}

/// An RFC 5965 feedback report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Feedback {
    /// `Feedback-Type`, lowercase: `abuse`, `fraud`, `virus`, `other`, `not-spam` (RFC 6430).
    pub feedback_type: String,
    /// `User-Agent`: who made the report.
    pub user_agent: Option<String>,
    /// `Original-Rcpt-To` fields.
    pub original_rcpt_to: Vec<String>,
}

/// Why a message is not a report hedwig reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("not a MIME message")]
    NotMime,
    #[error("no message/delivery-status or message/feedback-report part")]
    NotAReport,
    #[error("malformed report: {0}")]
    Malformed(&'static str),
}

/// Reads the report in `message` (a whole RFC 5322 message).
pub fn parse(message: &[u8]) -> Result<Report, ReportError> {
    let parsed = MessageParser::new()
        .parse(message)
        .ok_or(ReportError::NotMime)?;
    for part in &parsed.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        if !ct.ctype().eq_ignore_ascii_case("message") {
            continue;
        }
        let subtype = ct.subtype().unwrap_or("").to_ascii_lowercase();
        match subtype.as_str() {
            "delivery-status" | "global-delivery-status" => {
                return delivery(part.contents()).map(Report::Delivery)
            }
            "feedback-report" => return feedback(part.contents()).map(Report::Feedback),
            _ => {}
        }
    }
    Err(ReportError::NotAReport)
}

fn delivery(body: &[u8]) -> Result<Vec<RecipientStatus>, ReportError> {
    let groups = groups(body);
    let mut out = Vec::new();
    // The first group is per-message (RFC 3464 §2.2); the rest per-recipient (§2.3).
    for group in groups.iter().skip(1).take(MAX_GROUPS) {
        let get = |name: &str| {
            group
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let (Some(action), Some(status)) = (get("action"), get("status")) else {
            continue;
        };
        let status = status.split_whitespace().next().unwrap_or("").to_string();
        if !is_status_code(&status) {
            return Err(ReportError::Malformed(
                "Status is not an enhanced status code",
            ));
        }
        out.push(RecipientStatus {
            final_recipient: get("final-recipient").map(typed_value),
            original_recipient: get("original-recipient").map(typed_value),
            action: action.trim().to_ascii_lowercase(),
            status,
            diagnostic: get("diagnostic-code").map(typed_value),
            remote_mta: get("remote-mta").map(typed_value),
        });
    }
    if out.is_empty() {
        return Err(ReportError::Malformed(
            "no recipient with Action and Status",
        ));
    }
    Ok(out)
}

fn feedback(body: &[u8]) -> Result<Feedback, ReportError> {
    let fields: Vec<(String, String)> = groups(body).into_iter().flatten().collect();
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let Some(feedback_type) = get("feedback-type") else {
        return Err(ReportError::Malformed("no Feedback-Type"));
    };
    let feedback_type = feedback_type.trim().to_ascii_lowercase();
    if feedback_type.is_empty()
        || !feedback_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ReportError::Malformed("Feedback-Type is not a token"));
    }
    Ok(Feedback {
        feedback_type,
        user_agent: get("user-agent"),
        original_rcpt_to: fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("original-rcpt-to"))
            .take(MAX_GROUPS)
            .map(|(_, v)| v.clone())
            .collect(),
    })
}

/// `5.1.1`: class 2, 4 or 5, then two numbers of up to three digits (RFC 3463 §2).
fn is_status_code(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(parts.next(), Some("2" | "4" | "5"))
        && ok(parts.next())
        && ok(parts.next())
        && parts.next().is_none()
}

/// `rfc822; bob@example.org` -> `bob@example.org`.
fn typed_value(v: &str) -> String {
    match v.split_once(';') {
        Some((_, rest)) => rest.trim().to_string(),
        None => v.trim().to_string(),
    }
}

/// The field groups of a report body: unfolded `(name, value)` pairs, groups split at empty
/// lines. Lines that are not fields are skipped; values are cleaned and cut.
fn groups(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(body);
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(group) = groups.last_mut() else {
            break;
        };
        if line.trim().is_empty() {
            if !group.is_empty() {
                if groups.len() > MAX_GROUPS + 1 {
                    break;
                }
                groups.push(Vec::new());
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // RFC 5322 §2.2.3 folding: continues the previous field.
            if let Some((_, value)) = group.last_mut() {
                if value.chars().count() < MAX_VALUE {
                    value.push(' ');
                    value.push_str(&clean(line.trim()));
                    *value = value.chars().take(MAX_VALUE).collect();
                }
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            continue;
        }
        group.push((name.to_string(), clean(value.trim())));
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// Printable, at most [`MAX_VALUE`] characters.
fn clean(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_VALUE)
        .collect()
}

#[cfg(test)]
mod tests;
