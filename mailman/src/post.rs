//! Posting a message to the postoffice (the wire protocol in README.md, "Wire protocol",
//! [`hedwig_core::wire`]), with failover over the configured URLs, and the one place that
//! decides what an answer means.
//!
//! Messages go in the raw form to `POST /raw` ([`hedwig_core::wire::RAW_ENDPOINT`]: a JSON
//! header line, then the message bytes as they are), which costs neither side an escaping
//! pass. A post office older than that form has no such path and answers 404 without
//! reading the body (405 or 415 from a proxy in front of it mean the same); the same message
//! is then posted at once in the JSON form to `/`, and for [`RAW_REFUSED_FOR`] every post
//! goes as JSON (logged once per switch), so a fleet keeps working while mailmen are upgraded
//! before their post office. The raw body never goes to `/`: an old post office would read
//! it there as a form, and the message's own text could supply its fields.
//!
//! This module does not retry or touch the spool; [`crate::handoff`] and
//! [`crate::retry`] act on the [`Verdict`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hedwig_core::wire::{Accepted, App, Email, RawHeader, Rejected, RAW_CONTENT_TYPE};

use crate::config::redact_url;

/// The JSON body of a post: the fields of [`hedwig_core::wire::Submission`]. A signed post
/// carries no key: the signature in the headers proves it.
#[derive(serde::Serialize)]
struct Body<'a> {
    fqdn: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    email: Email,
    id: &'a str,
    /// Who inside the host sent it (issue 17); older post offices ignore the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a App>,
    /// The header fix-ups made to the message (issue 19); older post offices ignore the
    /// field, and it is left out when there are none.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    fixups: &'a [String],
}

/// What the postoffice said about one post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Queued (or a repeat of a message id already queued).
    Accepted { queue_id: String, duplicate: bool },
    /// Refused for good (400, 403, 413): retrying cannot help.
    Rejected { status: u16, reason: String },
    /// Not queued, try again later.
    Retry(RetryReason),
}

/// Why a post must be retried. The label names the `forward_failures` metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryReason {
    /// No connection could be made: nothing was sent.
    Unreachable(String),
    /// The request went out but no answer came in time: the postoffice may have queued it.
    Timeout,
    /// The connection broke after the request went out: the postoffice may have queued it.
    Interrupted(String),
    /// 401: the key (or fqdn) is wrong. A configuration error, logged loudly.
    WrongKey,
    /// 429: this host is over its rate limit.
    RateLimited,
    /// 503 or any other 5xx: the postoffice could not queue it.
    Unavailable(u16, String),
    /// An answer that makes no sense (a 200 without a queue id, an unexpected status).
    Unexpected(u16, String),
}

impl RetryReason {
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            RetryReason::Unreachable(_) => "unreachable",
            RetryReason::Timeout => "timeout",
            RetryReason::Interrupted(_) => "interrupted",
            RetryReason::WrongKey => "wrong_key",
            RetryReason::RateLimited => "rate_limited",
            RetryReason::Unavailable(..) => "unavailable",
            RetryReason::Unexpected(..) => "unexpected",
        }
    }

    /// All labels, for metrics.
    pub const LABELS: [&'static str; 7] = [
        "unreachable",
        "timeout",
        "interrupted",
        "wrong_key",
        "rate_limited",
        "unavailable",
        "unexpected",
    ];
}

impl std::fmt::Display for RetryReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryReason::Unreachable(e) => write!(f, "postoffice unreachable: {e}"),
            RetryReason::Timeout => write!(f, "postoffice did not answer in time"),
            RetryReason::Interrupted(e) => write!(f, "connection to the postoffice broke: {e}"),
            RetryReason::WrongKey => write!(
                f,
                "postoffice refused our key (401): check fqdn and key in the mailman config"
            ),
            RetryReason::RateLimited => write!(f, "postoffice rate limit (429)"),
            RetryReason::Unavailable(s, e) => write!(f, "postoffice unavailable ({s}): {e}"),
            RetryReason::Unexpected(s, e) => write!(f, "unexpected postoffice answer ({s}): {e}"),
        }
    }
}

/// Classifies one HTTP answer. Every status is decided here.
pub fn classify(status: u16, body: &[u8]) -> Verdict {
    let text = || match serde_json::from_slice::<Rejected>(body) {
        Ok(r) => r.error,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    };
    match status {
        200 => match serde_json::from_slice::<Accepted>(body) {
            Ok(a) if !a.id.is_empty() => Verdict::Accepted {
                queue_id: a.id,
                duplicate: a.duplicate,
            },
            _ => Verdict::Retry(RetryReason::Unexpected(status, text())),
        },
        400 | 403 | 413 => Verdict::Rejected {
            status,
            reason: text(),
        },
        401 => Verdict::Retry(RetryReason::WrongKey),
        429 => Verdict::Retry(RetryReason::RateLimited),
        500..=599 => Verdict::Retry(RetryReason::Unavailable(status, text())),
        _ => Verdict::Retry(RetryReason::Unexpected(status, text())),
    }
}

/// What a post office older than signed requests answers a signed post (no `key` in the
/// body): `400 {"error": "field \"key\" is missing"}`.
const OLD_POSTOFFICE_400: &str = "field \"key\" is missing";

/// A signed post refused by a post office older than signed requests is kept and retried, not
/// refused for good (and bounced): the message is fine, the post office must be upgraded (or
/// `sign_posts: false` set). mailman never falls back to sending its key by itself: a forged
/// 400 would otherwise make it hand the key to whoever sits on the path.
fn older_than_signing(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Rejected {
            status: 400,
            reason,
        } if reason.contains(OLD_POSTOFFICE_400) => Verdict::Retry(RetryReason::Unexpected(
            400,
            format!(
                "the post office does not take signed requests ({reason}): upgrade it, or \
                     set sign_posts: false until then; the message stays spooled"
            ),
        )),
        other => other,
    }
}

/// How long mailman posts JSON after a post office refused the raw form, before trying it
/// again (the post office may have been upgraded meanwhile).
pub const RAW_REFUSED_FOR: Duration = Duration::from_secs(600);

/// Whether `verdict` says that `/raw` is not there (a post office older than the raw form:
/// 404; a proxy that passes only the old path or content type: 405, 415), never anything
/// about the message: none of these depends on the body.
fn refuses_raw(verdict: &Verdict) -> bool {
    matches!(
        verdict,
        Verdict::Retry(RetryReason::Unexpected(404 | 405 | 415, _))
    )
}

/// The form of a post's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Raw,
    Json,
}

impl Form {
    /// The path a post of this form goes to, as its signature names it.
    fn endpoint(self) -> &'static str {
        match self {
            Form::Raw => hedwig_core::wire::RAW_ENDPOINT,
            Form::Json => "/",
        }
    }
}

/// Posts messages to the postoffice URLs, in order.
///
/// Posts are signed (see [`hedwig_core::signing`]): the post office authenticates them from the
/// headers before reading the body, and a captured post cannot be replayed. With `signed`
/// false (`sign_posts: false`, for post offices older than signing) the key travels in the
/// body as in the original protocol.
#[derive(Clone)]
pub struct Poster {
    client: reqwest::Client,
    urls: Vec<reqwest::Url>,
    /// Each of `urls` joined with `raw` (the raw form's endpoint); `None` when it cannot be.
    raw_urls: Vec<Option<reqwest::Url>>,
    fqdn: String,
    key: String,
    signed: bool,
    /// Until when (unix seconds) posts go as JSON because a post office refused the raw
    /// form; 0: raw. Shared by the clones.
    raw_refused_until: Arc<AtomicU64>,
}

impl Poster {
    /// A poster with a connection pool; `connect_timeout` bounds each connection attempt.
    pub fn new(
        urls: Vec<reqwest::Url>,
        fqdn: String,
        key: String,
        signed: bool,
        roots: &[reqwest::Certificate],
        connect_timeout: Duration,
    ) -> Result<Poster, reqwest::Error> {
        let mut client = reqwest::Client::builder();
        for root in roots {
            client = client.add_root_certificate(root.clone());
        }
        let client = client
            .connect_timeout(connect_timeout)
            // Below the post office's default idle_timeout (60 s), so that we close an idle
            // connection before it does (no post sent on a connection being closed).
            .pool_idle_timeout(Duration::from_secs(45))
            .user_agent(concat!("hedwig-mailman/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let raw_urls = urls
            .iter()
            .map(|url| url.join(Form::Raw.endpoint().trim_start_matches('/')).ok())
            .collect();
        Ok(Poster {
            client,
            urls,
            raw_urls,
            fqdn,
            key,
            signed,
            raw_refused_until: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The form the next post takes.
    fn form(&self) -> Form {
        if hedwig_core::unix_now() < self.raw_refused_until.load(Ordering::Relaxed) {
            Form::Json
        } else {
            Form::Raw
        }
    }

    /// The URL of `form` at the `i`th post office.
    fn target(&self, form: Form, i: usize) -> Option<&reqwest::Url> {
        match form {
            Form::Json => self.urls.get(i),
            Form::Raw => self.raw_urls.get(i).and_then(Option::as_ref),
        }
    }

    /// The body of `message` in `form`, and its content type.
    fn body(
        &self,
        form: Form,
        header: &crate::spool::SpoolHeader,
        message: &[u8],
    ) -> Result<(bytes::Bytes, &'static str), String> {
        let key = (!self.signed).then(|| self.key.clone());
        match form {
            Form::Raw => {
                let raw = RawHeader {
                    fqdn: Some(self.fqdn.clone()),
                    key,
                    mailfrom: header.mail_from.clone(),
                    rcpttos: header.rcpt_to.clone(),
                    id: Some(header.id.clone()),
                    app: header.app.clone(),
                    fixups: header.fixups.clone(),
                };
                Ok((raw.encode(&[message]).into(), RAW_CONTENT_TYPE))
            }
            // The JSON form of the protocol: one escaping pass over the message instead of
            // JSON plus percent-encoding.
            Form::Json => {
                let body = Body {
                    fqdn: &self.fqdn,
                    key: key.as_deref(),
                    // the smaller of JSON and base64 (issue 11 F8)
                    email: crate::encoding::compact_email(
                        header.mail_from.clone(),
                        header.rcpt_to.clone(),
                        message.to_vec(),
                    ),
                    id: &header.id,
                    app: header.app.as_ref(),
                    fixups: &header.fixups,
                };
                serde_json::to_vec(&body)
                    .map(|b| (b.into(), "application/json"))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The signing headers for `body` to `endpoint` (`/` or `/check`), none when unsigned.
    fn signature(&self, endpoint: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        if !self.signed {
            return Vec::new();
        }
        hedwig_core::signing::sign(
            &self.key,
            &self.fqdn,
            hedwig_core::unix_now(),
            "POST",
            endpoint,
            body,
        )
        .to_vec()
    }

    /// Posts one message. Tries each URL in turn while the answer says "retry"; the first
    /// final answer (accepted or rejected) wins. `timeout` bounds each attempt.
    ///
    /// After a timeout or a broken connection the postoffice may have queued the message, so
    /// the next URL is not tried in this round: the next round starts with the same postoffice
    /// again, whose duplicate-id window recognises the message (another postoffice's would not).
    ///
    /// `header` gives the envelope and what travels with it (the message id, the app, the
    /// fix-ups); `message` is the spooled message.
    pub async fn post(
        &self,
        header: &crate::spool::SpoolHeader,
        message: Vec<u8>,
        timeout: Duration,
    ) -> Verdict {
        let mut form = self.form();
        let mut body = match self.body(form, header, &message) {
            Ok(b) => b,
            Err(e) => return Verdict::Retry(RetryReason::Unexpected(0, e)),
        };
        // The body holds the message (the raw form as its tail): one copy in memory for the
        // length of the post, not two. The JSON form, if it is needed, is made from the tail.
        let len = message.len();
        drop(message);
        let mut last = Verdict::Retry(RetryReason::Unreachable("no postoffice URL".into()));
        for (i, url) in self.urls.iter().enumerate() {
            let mut verdict = match self.target(form, i) {
                Some(target) => self.post_once(form, target, body.clone(), timeout).await,
                // No raw URL can be made of this one: as if it had no /raw.
                None => Verdict::Retry(RetryReason::Unexpected(404, "no /raw URL".into())),
            };
            if form == Form::Raw && refuses_raw(&verdict) {
                // A post office older than the raw form: the same message again as JSON,
                // and JSON for a while (to every URL: they are upgraded together or not).
                let now = hedwig_core::unix_now();
                // Logged by the post that switches (concurrent ones find it switched).
                if self
                    .raw_refused_until
                    .swap(now + RAW_REFUSED_FOR.as_secs(), Ordering::Relaxed)
                    <= now
                {
                    tracing::warn!(
                        url = %redact_url(url),
                        "the post office does not take the raw form (it is older than \
                         mailman): posting JSON for {} minutes; upgrade the post office",
                        RAW_REFUSED_FOR.as_secs() / 60
                    );
                }
                let message = &body.0[body.0.len().saturating_sub(len)..];
                form = Form::Json;
                body = match self.body(form, header, message) {
                    Ok(b) => b,
                    Err(e) => return Verdict::Retry(RetryReason::Unexpected(0, e)),
                };
                verdict = self.post_once(form, url, body.clone(), timeout).await;
            }
            match &verdict {
                Verdict::Retry(RetryReason::Timeout | RetryReason::Interrupted(_)) => {
                    return verdict
                }
                Verdict::Retry(reason) => {
                    tracing::debug!(url = %redact_url(url), %reason, "postoffice attempt failed");
                    // Keep the most telling reason: a wrong key must not hide behind a later
                    // "unreachable".
                    if !matches!(last, Verdict::Retry(RetryReason::WrongKey)) {
                        last = verdict;
                    }
                }
                _ => return verdict,
            }
        }
        last
    }

    async fn post_once(
        &self,
        form: Form,
        url: &reqwest::Url,
        (body, content_type): (bytes::Bytes, &'static str),
        timeout: Duration,
    ) -> Verdict {
        let endpoint = form.endpoint();
        // Signed at each attempt: the date is the attempt's, inside the replay window.
        let mut request = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(timeout);
        for (name, value) in self.signature(endpoint, &body) {
            request = request.header(name, value);
        }
        let request = request.body(body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Verdict::Retry(RetryReason::Unreachable(reqwest_error(e)))
            }
            Err(e) if e.is_timeout() => return Verdict::Retry(RetryReason::Timeout),
            Err(e) => return Verdict::Retry(RetryReason::Interrupted(reqwest_error(e))),
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(body) => {
                let verdict = classify(status, &body);
                if self.signed {
                    older_than_signing(verdict)
                } else {
                    verdict
                }
            }
            Err(e) if e.is_timeout() => Verdict::Retry(RetryReason::Timeout),
            Err(e) => Verdict::Retry(RetryReason::Interrupted(reqwest_error(e))),
        }
    }

    /// Whether requests are signed (`sign_posts`).
    pub fn signs(&self) -> bool {
        self.signed
    }

    /// The post office URLs, in the order they are tried.
    pub fn urls(&self) -> &[reqwest::Url] {
        &self.urls
    }

    /// A signed JSON `POST` of `body` to `url`, whose endpoint path (what is signed) is
    /// `endpoint`; the status and at most [`crate::status::MAX_ANSWER`] bytes of the answer.
    pub async fn signed_post(
        &self,
        url: &reqwest::Url,
        endpoint: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut request = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout);
        for (name, value) in self.signature(endpoint, body) {
            request = request.header(name, value);
        }
        let mut response = request
            .body(body.to_vec())
            .send()
            .await
            .map_err(reqwest_error)?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(reqwest_error)? {
            if answer.len() + chunk.len() > crate::status::MAX_ANSWER {
                return Err(format!(
                    "{}: the answer is larger than {} bytes",
                    redact_url(url),
                    crate::status::MAX_ANSWER
                ));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((status, answer))
    }

    /// Checks the key against the first postoffice that answers `POST /check`:
    /// `Ok(true)` valid, `Ok(false)` refused (401), `Err` cannot tell (and why).
    pub async fn check_key(&self, timeout: Duration) -> Result<bool, String> {
        let mut why = Vec::new();
        for url in &self.urls {
            let Ok(check) = url.join("check") else {
                continue;
            };
            let mut request = self.client.post(check.clone()).timeout(timeout);
            if self.signed {
                for (name, value) in self.signature("/check", b"") {
                    request = request.header(name, value);
                }
            } else {
                let form = [("fqdn", self.fqdn.as_str()), ("key", self.key.as_str())];
                request = request.form(&form);
            }
            match request.send().await {
                Ok(r) if r.status().as_u16() == 200 => return Ok(true),
                Ok(r) if r.status().as_u16() == 401 => return Ok(false),
                // A post office older than signed requests looks for the key in the body.
                Ok(r) if self.signed && r.status().as_u16() == 400 => why.push(format!(
                    "{}: HTTP 400: the post office does not take signed requests \
                     (upgrade it, or set sign_posts: false until then)",
                    redact_url(&check)
                )),
                Ok(r) => why.push(format!("{}: HTTP {}", redact_url(&check), r.status())),
                Err(e) => why.push(reqwest_error(e)),
            }
        }
        Err(why.join("; "))
    }
}

/// A reqwest error on one line, its URL shown without user name or password.
fn reqwest_error(e: reqwest::Error) -> String {
    let url = e.url().map(redact_url);
    let text = error_chain(&e.without_url());
    match url {
        Some(url) => format!("{url}: {text}"),
        None => text,
    }
}

/// An error with its causes, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_classified() {
        assert_eq!(
            classify(200, br#"{"id":"Q1","duplicate":true}"#),
            Verdict::Accepted {
                queue_id: "Q1".into(),
                duplicate: true
            }
        );
        assert!(matches!(
            classify(200, b"not json"),
            Verdict::Retry(RetryReason::Unexpected(200, _))
        ));
        assert_eq!(
            classify(400, br#"{"error":"no recipients"}"#),
            Verdict::Rejected {
                status: 400,
                reason: "no recipients".into()
            }
        );
        assert!(matches!(
            classify(403, b"x"),
            Verdict::Rejected { status: 403, .. }
        ));
        assert!(matches!(
            classify(413, b""),
            Verdict::Rejected { status: 413, .. }
        ));
        assert_eq!(classify(401, b""), Verdict::Retry(RetryReason::WrongKey));
        assert_eq!(classify(429, b""), Verdict::Retry(RetryReason::RateLimited));
        assert!(matches!(
            classify(503, br#"{"error":"queue down"}"#),
            Verdict::Retry(RetryReason::Unavailable(503, ref e)) if e == "queue down"
        ));
        assert!(matches!(
            classify(404, b""),
            Verdict::Retry(RetryReason::Unexpected(404, _))
        ));
    }

    #[test]
    fn only_answers_that_say_nothing_of_the_message_mean_no_raw_form() {
        for status in [404, 405, 415] {
            assert!(refuses_raw(&classify(status, b"")), "{status}");
        }
        // What an old post office's form parser says of a body: about the message, so never
        // a reason to post it again in another form (and raw bodies never go to `/`).
        let body = br#"{"error": "field \"email\" is missing"}"#;
        for status in [200, 400, 401, 403, 413, 429, 500, 503] {
            assert!(!refuses_raw(&classify(status, body)), "{status}");
        }
    }

    #[test]
    fn an_old_post_office_refusing_a_signed_post_means_retry_not_bounce() {
        let old = classify(400, br#"{"error":"field \"key\" is missing"}"#);
        assert!(matches!(
            older_than_signing(old),
            Verdict::Retry(RetryReason::Unexpected(400, ref why)) if why.contains("sign_posts")
        ));
        // Any other 400 stays a refusal.
        let other = classify(400, br#"{"error":"no recipients"}"#);
        assert!(matches!(
            older_than_signing(other),
            Verdict::Rejected { status: 400, .. }
        ));
    }
}
