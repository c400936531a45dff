//! Asking the post office about one of this host's messages (issue 14, "Status on the
//! sending host"): `POST /status` with `{"id": "<id>"}`, signed with the host key as posts
//! are (README.md, "Signed requests"). Used by `GET /status/<id>` on the local HTTP
//! listener ([`crate::http`]) and by `mailman status <id>`; [`render`] prints a timeline for
//! a shell.
//!
//! `<id>` is mailman's message id (in its `250` reply and log) or the `Message-ID:`. The post
//! office answers only for this host's messages: another host's is 403.
//!
//! Not here: the lookup itself (the post office's `status` module, on its ledger).

use std::time::Duration;

use serde_json::Value;

use crate::config::redact_url;
use crate::post::Poster;

/// Longest id (RFC 5322 §2.1.1: a header line is at most 998 characters); the post office
/// checks the same.
pub const MAX_ID: usize = 998;
/// Largest timeline read from the post office (a message with 1,000 recipients and their
/// attempts fits many times over).
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What the post office said.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200: the timeline (`{"message": ..., "recipients": [...], "events": [...]}`).
    Timeline(Value),
    /// The post office answered the question with a refusal: 400 (bad id), 403 (another
    /// host's message), 404 (no such message), 429 (this host asks too often), 501 (no
    /// ledger there), 503 (ledger down).
    Refused { status: u16, error: String },
    /// No answer to the question: unreachable, our key refused (401), an old post office,
    /// a status request that cannot be made (unsigned mode), an answer that makes no sense.
    Failed(String),
}

impl Answer {
    /// The HTTP status mailman's own endpoint answers with: the post office's for a
    /// refusal, 502 when it gave no answer.
    pub fn http_status(&self) -> u16 {
        match self {
            Answer::Timeline(_) => 200,
            Answer::Refused { status, .. } => *status,
            Answer::Failed(_) => 502,
        }
    }
}

/// Checks an id before asking: not empty, not overlong, no control characters.
pub fn check_id(id: &str) -> Result<&str, String> {
    let id = id.trim();
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.len() > MAX_ID {
        return Err(format!("the id is {} bytes; at most {MAX_ID}", id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err("the id has control characters".into());
    }
    Ok(id)
}

/// Classifies the post office's answer to a status request.
pub fn classify(status: u16, body: &[u8]) -> Answer {
    let error = || {
        serde_json::from_slice::<hedwig_core::wire::Rejected>(body)
            .ok()
            .map(|r| r.error)
    };
    match status {
        200 => match serde_json::from_slice::<Value>(body) {
            Ok(v) if v.get("message").is_some_and(Value::is_object) => Answer::Timeline(v),
            _ => Answer::Failed("the post office's answer is not a timeline".into()),
        },
        401 => Answer::Failed(
            "the post office refused our key (401): check fqdn and key in the mailman config"
                .into(),
        ),
        // A post office older than status requests has no such route: a 404 or 405 without
        // our JSON error.
        400 | 403 | 404 | 429 | 501 | 503 => match error() {
            Some(error) => Answer::Refused { status, error },
            None => Answer::Failed(format!(
                "the post office answered {status} without an explanation: it may be older \
                 than status requests (upgrade it)"
            )),
        },
        _ => Answer::Failed(format!(
            "unexpected answer from the post office ({status}): {}",
            error().unwrap_or_else(
                || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
            )
        )),
    }
}

impl Poster {
    /// Asks the post offices, in turn, for this host's message `id`. The next post office is
    /// asked when one cannot be reached or answers 503 (another may reach the ledger);
    /// `timeout` bounds each request.
    pub async fn status(&self, id: &str, timeout: Duration) -> Answer {
        let id = match check_id(id) {
            Ok(id) => id,
            Err(why) => {
                return Answer::Refused {
                    status: 400,
                    error: why,
                }
            }
        };
        if !self.signs() {
            return Answer::Failed(
                "status requests are signed with the host key, and sign_posts is false: \
                 set sign_posts: true (the post office must take signed requests)"
                    .into(),
            );
        }
        let body = serde_json::json!({ "id": id }).to_string().into_bytes();
        let mut why = Vec::new();
        for url in self.urls() {
            let Ok(endpoint) = url.join("status") else {
                continue;
            };
            match self.signed_post(&endpoint, "/status", &body, timeout).await {
                Ok((status, answer)) => {
                    let answer = classify(status, &answer);
                    match &answer {
                        Answer::Refused { status: 503, error } => {
                            why.push(format!("{}: 503 {error}", redact_url(&endpoint)));
                            continue;
                        }
                        _ => return answer,
                    }
                }
                Err(e) => why.push(e),
            }
        }
        if why.is_empty() {
            return Answer::Failed("no post office URL".into());
        }
        Answer::Failed(format!("no post office answered: {}", why.join("; ")))
    }
}

/// Characters a terminal would act on, shown escaped (what senders and remote servers chose
/// is printed).
fn clean(text: &str) -> String {
    text.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
}

fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Null) | None => "-".into(),
        Some(other) => clean(&other.to_string()),
    }
}

/// Unix milliseconds as RFC 3339 (UTC, seconds).
fn time(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_u64) {
        Some(ms) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        None => "-".into(),
    }
}

/// A timeline for a shell: the message, its recipients, then its events oldest first.
pub fn render(timeline: &Value) -> String {
    let mut out = String::new();
    let m = &timeline["message"];
    out.push_str(&format!(
        "message {}  status {}\n  mailman id {}  Message-ID {}\n  from {}  subject {}\n  \
         queued {}  final {}\n",
        field(m, "queue_id"),
        field(m, "status"),
        field(m, "edge_id"),
        field(m, "message_id"),
        field(m, "sender"),
        field(m, "subject"),
        time(m, "queued_at"),
        time(m, "final_at"),
    ));
    out.push_str("recipients:\n");
    for r in timeline["recipients"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {}  attempts {}  {}\n",
            field(r, "recipient"),
            field(r, "status"),
            field(r, "attempts"),
            field(r, "reply"),
        ));
    }
    out.push_str("events:\n");
    for e in timeline["events"].as_array().into_iter().flatten() {
        let what = match e.get("kind").and_then(Value::as_str) {
            Some("recipient") => format!(
                "{} {}  mx {}  {}",
                field(e, "outcome"),
                field(e, "recipient"),
                field(e, "mx"),
                field(e, "reply"),
            ),
            Some("bounce_queued") => format!("bounce queued {}", field(e, "bounce_queue_id")),
            _ => field(e, "kind"),
        };
        out.push_str(&format!("  {}  {what}\n", time(e, "at")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let timeline = br#"{"message":{"queue_id":"Q1"},"recipients":[],"events":[]}"#;
        assert!(matches!(classify(200, timeline), Answer::Timeline(_)));
        assert!(matches!(classify(200, b"{}"), Answer::Failed(_)));
        assert_eq!(
            classify(403, br#"{"error":"not this host's"}"#),
            Answer::Refused {
                status: 403,
                error: "not this host's".into()
            }
        );
        assert_eq!(classify(404, br#"{"error":"no"}"#).http_status(), 404);
        // An old post office: no route, no JSON error.
        assert!(matches!(classify(404, b""), Answer::Failed(_)));
        assert!(matches!(classify(405, b""), Answer::Failed(_)));
        assert!(matches!(classify(401, b""), Answer::Failed(_)));
        assert_eq!(classify(401, b"").http_status(), 502);
        // the post office's rate limit reaches the asking container as it is
        let limited = classify(429, br#"{"error":"too many status requests"}"#);
        assert_eq!(limited.http_status(), 429);
    }

    #[test]
    fn ids_are_checked_and_output_is_escaped() {
        assert_eq!(check_id(" <a@b> "), Ok("<a@b>"));
        assert!(check_id("").is_err());
        assert!(check_id("a\rb").is_err());
        assert!(check_id(&"x".repeat(MAX_ID + 1)).is_err());
        let timeline = serde_json::json!({
            "message": {"queue_id": "Q1", "status": "sent", "subject": "hi\u{1b}[2J", "queued_at": 0},
            "recipients": [{"recipient": "a@b.test", "status": "sent", "attempts": 1, "reply": "250 ok"}],
            "events": [{"kind": "recipient", "at": 1000, "outcome": "sent", "recipient": "a@b.test", "mx": "mx.b.test", "reply": "250 ok"}],
        });
        let text = render(&timeline);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            text.contains("sent a@b.test  mx mx.b.test  250 ok"),
            "{text}"
        );
        assert!(text.contains("1970-01-01T00:00:01Z"), "{text}");
    }
}
