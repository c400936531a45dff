//! `POST /`: the hedwig wire protocol (README.md, "Wire protocol"; the body's types are
//! [`hedwig_core::wire`]). Checks the host's key, the envelope, the size
//! and the host's policy (envelope sender and From:, [`crate::from_policy`]), then queues the message and answers 200 only after beanstalkd
//! acknowledged the put, and after the ledger's `queued` event was put in the events tube of
//! the same server (or could not be: the ledger never stops mail). A message queued while its
//! host is held gets a `held` event per recipient with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use beanstalk::Error as QueueError;
use hedwig_core::address::{parse_reverse_path, Mailbox, Recipient};
use hedwig_core::signing::Signed;
use hedwig_core::wire::{Accepted, Submission};
use hedwig_queue::event::{Event, Outcome, RecipientEvent, What};
use hedwig_queue::job::{encode_parts, Envelope};

use crate::body::Budget;
use crate::dedupe::{Claim, Pending};
use crate::error::Reject;
use crate::from_policy::{self, FromRefusal};
use crate::policy::{RateRefusal, Refusal};
use crate::queue::Target;
use crate::server::Conn;
use crate::state::AppState;

/// Most recipients in one post.
pub const MAX_RECIPIENTS: usize = 1000;

/// The two intake endpoints and the forms of body they take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostForm {
    /// `POST /`: a form or JSON body, by its content type (form when none), as every mailman
    /// and the original hedwig clients post.
    Classic,
    /// `POST /raw` (issue 18): the raw form ([`hedwig_core::wire::RAW_CONTENT_TYPE`]), whatever
    /// the content type says. A path of its own, so that a raw body never reaches a post
    /// office older than the form: that one answers 404 without reading it, where its `/`
    /// would read the message's text as form fields.
    Raw,
}

impl PostForm {
    /// The largest body read for this form.
    fn body_limit(self, state: &AppState) -> usize {
        match self {
            PostForm::Classic => state.body_limit,
            PostForm::Raw => state.raw_body_limit,
        }
    }

    /// The endpoint's path, as signatures name it.
    pub fn endpoint(self) -> &'static str {
        match self {
            PostForm::Classic => "/",
            PostForm::Raw => hedwig_core::wire::RAW_ENDPOINT,
        }
    }
}

/// Reads a submission from a body of `form`; `signed`: the key is not in the body.
pub fn parse(
    headers: &HeaderMap,
    body: &[u8],
    signed: bool,
    form: PostForm,
) -> Result<Submission, Reject> {
    let is_json = || {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            })
    };
    let parsed = match form {
        PostForm::Raw => Submission::from_raw_with(body, !signed),
        PostForm::Classic if is_json() => Submission::from_json_with(body, !signed),
        PostForm::Classic => Submission::from_form_with(body, !signed),
    };
    parsed.map_err(|e| Reject::bad_request(e.to_string()))
}

/// The signing headers of a request, if it is signed (see [`hedwig_core::signing`]).
pub(crate) fn signed_headers(headers: &HeaderMap) -> Result<Option<Signed>, Reject> {
    Signed::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .map_err(|e| Reject::bad_request(e.to_string()))
}

/// Checks a signed request's headers, before its body is read: the date inside the replay
/// window, the host's name, and the signature under one of the secrets. `endpoint` is the
/// endpoint's own path (`/` or `/check`), whatever prefix a proxy adds.
pub(crate) fn authenticate_signed(
    state: &AppState,
    signed: &Signed,
    endpoint: &str,
) -> Result<String, Reject> {
    let window = state.config.replay_window.as_secs();
    if !signed.fresh(hedwig_core::unix_now(), window) {
        return Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "{} is more than {window} seconds from the post office's clock \
                 (a replayed request, or a clock that is wrong)",
                hedwig_core::signing::DATE
            ),
        ));
    }
    let fqdn = hedwig_core::key::normalize_fqdn(&signed.host)
        .map_err(|e| Reject::bad_request(format!("{}: {e}", hedwig_core::signing::HOST)))?;
    let valid = state.secrets.0.iter().any(|secret| {
        signed.verify(
            &hedwig_core::key::derive_key(secret, &fqdn),
            "POST",
            endpoint,
        )
    });
    if !valid {
        return Err(Reject::unauthorized());
    }
    Ok(fqdn)
}

/// Whether the legacy (unsigned) `fqdn` + `key` are right.
fn key_valid(state: &AppState, fqdn: &str, key: &str) -> bool {
    state
        .secrets
        .0
        .iter()
        .any(|secret| hedwig_core::key::verify_key(secret, fqdn, key))
}

/// Handles one post (to the endpoint of `form`) end to end. A signed post is authenticated from its headers before its
/// body is read, and is read under the full budgets; an unsigned one (an old client with the
/// key in the body) is read only within the small unauthenticated share, or refused at once.
pub async fn submit(
    state: &Arc<AppState>,
    peer: Option<SocketAddr>,
    conn: Option<&Arc<Conn>>,
    headers: &HeaderMap,
    body: Body,
    form: PostForm,
) -> Result<Accepted, Reject> {
    if let Some(signed) = signed_headers(headers)? {
        let fqdn = authenticate_signed(state, &signed, form.endpoint())
            .map_err(|r| r.about(signed.host.clone(), None))?;
        if let Some(conn) = conn {
            conn.authenticated();
        }
        let _slot = state
            .requests
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Reject::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        let body = crate::body::read(
            headers,
            body,
            form.body_limit(state),
            state.config.request_timeout,
            Budget::Authenticated {
                total: &state.bytes_in_flight,
            },
        )
        .await
        .map_err(|r| r.about(fqdn.clone(), None))?;
        if hedwig_core::signing::content_digest(&body.bytes) != signed.digest {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "the body does not match {}",
                    hedwig_core::signing::CONTENT_SHA256
                ),
            )
            .about(fqdn, None));
        }
        let submission =
            parse(headers, &body.bytes, true, form).map_err(|r| r.about(fqdn.clone(), None))?;
        let _budget = body.into_permits();
        let message_id = submission.id.clone();
        if !submission.fqdn.is_empty()
            && hedwig_core::key::normalize_fqdn(&submission.fqdn)
                .ok()
                .as_deref()
                != Some(fqdn.as_str())
        {
            return Err(Reject::bad_request(format!(
                "fqdn {:?} in the body is not the signing host",
                submission.fqdn
            ))
            .about(fqdn, message_id));
        }
        if submission.id.is_none() {
            // The message id is the nonce that makes a replay inside the window harmless.
            return Err(Reject::bad_request("a signed post needs an id").about(fqdn, None));
        }
        return queue_submission(state, peer, fqdn.clone(), submission)
            .await
            .map_err(|reject| reject.about(fqdn, message_id));
    }

    let _reading = conn.map(|c| c.reading_unsigned());
    let _slot = unsigned_slot(state).await?;
    let body = crate::body::read(
        headers,
        body,
        form.body_limit(state),
        state.config.request_timeout,
        Budget::Unauthenticated {
            total: &state.bytes_in_flight,
            share: &state.unauthenticated_bytes,
        },
    )
    .await?;
    let submission = parse(headers, &body.bytes, false, form)?;
    let _budget = body.into_permits();
    // From here on a refusal names the claimed host and message id in the log.
    let (claimed, message_id) = (submission.fqdn.clone(), submission.id.clone());
    let fqdn = hedwig_core::key::normalize_fqdn(&submission.fqdn).map_err(|e| {
        Reject::bad_request(format!("fqdn: {e}")).about(claimed.clone(), message_id.clone())
    })?;
    if !key_valid(state, &fqdn, &submission.key) {
        return Err(Reject::unauthorized().about(claimed, message_id));
    }
    if state.policies.require_signed(&fqdn) {
        return Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            "this host must sign its posts (require_signed); unsigned posts are refused",
        )
        .about(claimed, message_id));
    }
    queue_submission(state, peer, fqdn, submission)
        .await
        .map_err(|reject| reject.about(claimed, message_id))
}

/// One of the `max_unauthenticated_requests` slots, waited for at most `request_timeout`;
/// then 503. Only unsigned requests wait here (holding their connection, not a body).
async fn unsigned_slot(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, Reject> {
    let wait = state.config.request_timeout;
    match tokio::time::timeout(wait, state.unauthenticated_requests.clone().acquire_owned()).await
    {
        Ok(Ok(slot)) => Ok(slot),
        Ok(Err(_)) => Err(Reject::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")),
        Err(_) => Err(Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many unsigned posts in progress; retry later (signed posts are not limited by this)",
        )),
    }
}

async fn queue_submission(
    state: &Arc<AppState>,
    peer: Option<SocketAddr>,
    fqdn: String,
    submission: Submission,
) -> Result<Accepted, Reject> {
    if let Some(id) = &submission.id {
        check_message_id(id).map_err(|why| Reject::bad_request(format!("id: {why}")))?;
    }
    if let Some(app) = &submission.app {
        check_app(app).map_err(|why| Reject::bad_request(format!("app: {why}")))?;
    }
    check_fixups(&submission.fixups)
        .map_err(|why| Reject::bad_request(format!("fixups: {why}")))?;
    let email = submission.email;
    let sender = parse_reverse_path(&email.mailfrom)
        .map_err(|e| Reject::bad_request(format!("mailfrom: {e}")))?;
    // Address literals would make the worker connect to any address (issue 11 F10); a bounce
    // to a literal sender too.
    let literals = &state.config.address_literals;
    if let Some(sender) = &sender {
        literals
            .check(&sender.ascii_domain)
            .map_err(|why| Reject::bad_request(format!("mailfrom: {sender}: {why}")))?;
    }
    if email.rcpttos.is_empty() {
        return Err(Reject::bad_request("no recipients"));
    }
    if email.rcpttos.len() > MAX_RECIPIENTS {
        return Err(Reject::bad_request(format!(
            "{} recipients; at most {MAX_RECIPIENTS} per message",
            email.rcpttos.len()
        )));
    }
    let mut recipients = Vec::with_capacity(email.rcpttos.len());
    for rcpt in &email.rcpttos {
        let mailbox =
            Mailbox::parse(rcpt).map_err(|e| Reject::bad_request(format!("rcpttos: {e}")))?;
        literals
            .check(&mailbox.ascii_domain)
            .map_err(|why| Reject::bad_request(format!("rcpttos: {mailbox}: {why}")))?;
        // Parsed here once; the job carries the text, the worker parses it at decode.
        recipients.push(Recipient::from_mailbox(mailbox));
    }
    let mail_from = sender.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let mut message = email
        .into_message()
        .map_err(|e| Reject::bad_request(e.to_string()))?;
    // Taken out of every message, whether or not this host may choose its lane with it.
    let lane_header = crate::lanes::take_lane_header(&mut message);
    if message.len() as u64 > state.config.max_message_size.0 {
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "message is {} bytes; the limit is {}",
                message.len(),
                state.config.max_message_size.0
            ),
        ));
    }

    state
        .policies
        .admit(&fqdn, sender.as_ref().map(|m| m.ascii_domain.as_str()))
        .map_err(|refusal| match refusal {
            Refusal::Revoked => Reject::new(StatusCode::FORBIDDEN, "host revoked"),
            Refusal::SenderDomain(domain) => Reject::new(
                StatusCode::FORBIDDEN,
                format!("sender domain {domain} is not allowed for this host"),
            ),
        })?;
    let dkim_domains = from_policy::check(
        state.policies.policy(&fqdn),
        sender.is_none().then_some(fqdn.as_str()),
        &message,
    )
    .map_err(|refusal| match refusal {
        FromRefusal::Several(n) => Reject::bad_request(format!(
            "the message has {n} From: header fields; exactly one is allowed (RFC 5322 §3.6)"
        )),
        FromRefusal::NoDomain(address) => Reject::new(
            StatusCode::FORBIDDEN,
            format!("From: address {address:?} has no domain this host may use"),
        ),
        FromRefusal::Domain(domain) => Reject::new(
            StatusCode::FORBIDDEN,
            format!("From: domain {domain} is not allowed for this host"),
        ),
    })?;
    // Suppressed recipients leave the message here (recorded as `suppressed` below); an
    // in-memory lookup each, never a wait on the store.
    let suppressed = take_suppressed(state, &mail_from, &message, &mut recipients);
    state.metrics.suppressed(&fqdn, suppressed.len());
    let pending = match &submission.id {
        Some(id) => match state.dedupe.claim(&fqdn, id).await {
            Claim::Seen(queue_id) => {
                state.metrics.duplicate(&fqdn);
                tracing::info!(
                    queue_id = %queue_id, host = %fqdn, message_id = %id,
                    outcome = "duplicate", "repeat of a queued message id; not queued again"
                );
                return Ok(Accepted {
                    id: queue_id,
                    duplicate: true,
                });
            }
            Claim::New(pending) => Some(pending),
        },
        None => None,
    };

    // Taken last: a post refused for its From:, and a repeat of a queued id (a replay, or
    // mailman retrying after a lost answer), spend no tokens. A refusal here drops `pending`,
    // which releases the id.
    // The rate limit counts recipients: a post to n recipients takes n tokens (suppressed
    // ones are not sent, and cost nothing).
    if !recipients.is_empty() {
        state
            .policies
            .take_rate(&fqdn, recipients.len())
            .map_err(|refusal| match refusal {
                RateRefusal::Later { retry_after } => Reject::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "rate limit exceeded for this host ({} recipients); retry in {}s",
                        recipients.len(),
                        retry_after.as_secs()
                    ),
                ),
                // Could never pass: refused for good, not retried.
                RateRefusal::OverBurst { recipients, burst } => Reject::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{recipients} recipients exceed this host's rate burst of {burst} \
                     recipients; split the message"
                    ),
                ),
            })?;
    }

    let (lane, lane_by) = state.lanes.choose(
        &fqdn,
        state.policies.policy(&fqdn),
        crate::lanes::Request {
            header: lane_header.as_deref(),
            app: submission.app.as_ref(),
            sender_domain: sender.as_ref().map(|m| m.ascii_domain.as_str()),
        },
    );
    tracing::debug!(host = %fqdn, lane = %lane, by = lane_by.as_str(), "lane chosen");
    let mut envelope = Envelope::new(hedwig_core::new_queue_id(), fqdn, mail_from, recipients);
    envelope.message_id = submission.id;
    envelope.app = submission.app;
    envelope.fixups = submission.fixups;
    envelope.lane = Some(lane);
    envelope.client_ip = peer.map(|p| p.ip().to_string());
    envelope.dkim_domains = Some(dkim_domains);
    // The put and the record of its outcome run in their own task. When the client goes away
    // (a killed mailman, a timeout), hyper drops this request's future; a put that beanstalkd
    // may already have taken must still end in `pending.complete`, or the sender's retry of
    // the same id would be queued a second time (found by the fault-injection run).
    let task = if envelope.rcpt_to.is_empty() {
        tokio::spawn(record_all_suppressed(
            state.clone(),
            envelope,
            message,
            suppressed,
            pending,
        ))
    } else {
        tokio::spawn(put_and_record(
            state.clone(),
            envelope,
            message,
            suppressed,
            pending,
        ))
    };
    match task.await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "the queueing task failed");
            Err(Reject::unavailable())
        }
    }
}

/// Puts the job, then records the outcome: the id in the duplicate window, metrics, the log.
async fn put_and_record(
    state: Arc<AppState>,
    envelope: Envelope,
    message: Vec<u8>,
    suppressed: Vec<(Recipient, String)>,
    pending: Option<Pending>,
) -> Result<Accepted, Reject> {
    let job = encode_parts(&envelope, &message);
    let started = Instant::now();
    // The `queued` event's time is taken before the put: once beanstalkd has the job a worker
    // may deliver it before this task runs again, and the timeline must not show the
    // delivery first.
    let queued_at = hedwig_queue::event::now_millis();
    let target = if state.holds.is_held(&envelope.host).await {
        Target::Held
    } else {
        Target::Outbound
    };
    let lane = envelope
        .lane
        .as_deref()
        .unwrap_or(&state.config.default_lane);
    let priority = state.lanes.priority(&envelope.host, lane);
    let put = state
        .queue
        .put(&envelope.host, target, &job, priority, state.config.job_ttr)
        .await;
    state
        .metrics
        .queue_seconds
        .observe(started.elapsed().as_secs_f64());
    match put {
        Ok(placed) => {
            if let Some(pending) = pending {
                pending.complete(&envelope.queue_id).await;
            }
            state.metrics.queued(&envelope.host, message.len());
            tracing::info!(
                queue_id = %envelope.queue_id,
                message_id = envelope.message_id.as_deref().unwrap_or("-"),
                host = %envelope.host,
                client = envelope.client_ip.as_deref().unwrap_or("-"),
                from = %envelope.mail_from,
                to = %envelope.rcpt_to.join(","),
                size = message.len(),
                app = envelope.app.as_ref().map_or("-", |a| a.name.as_str()),
                lane = %lane,
                priority,
                job = placed.job_id,
                beanstalkd = %placed.server,
                outcome = if target == Target::Held { "held" } else { "queued" },
                "message queued"
            );
            // Before the answer: once mailman has its 200 the ledger has the message (or the
            // outage was logged). To the server the job is on, so the writer that drains
            // that server sees the message arrive before its worker's outcomes.
            if let Some(events) = &state.events {
                let event = hedwig_queue::event::queued_event(
                    &envelope,
                    &message,
                    target == Target::Held,
                    queued_at,
                );
                let mut batch = with_suppressed(event, &suppressed, queued_at);
                if target == Target::Held {
                    batch.extend(held_events(&envelope, queued_at));
                }
                events.record(&placed.server, batch).await;
            }
            Ok(Accepted {
                id: envelope.queue_id,
                duplicate: false,
            })
        }
        Err(err) => {
            // A buried put was already taken back by `Queue::put`.
            tracing::error!(
                queue_id = %envelope.queue_id, host = %envelope.host, error = %err,
                outcome = "unavailable", "beanstalkd did not take the message"
            );
            if matches!(err.source, QueueError::JobTooBig) {
                return Err(Reject::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "message larger than the queue's job size limit",
                ));
            }
            Err(Reject::unavailable())
        }
    }
}

/// Takes the recipients on the suppression list out of `recipients`: each with the scope of
/// its entry (and its list, for an entry of one `List-Id:`, read from `message` only then).
fn take_suppressed(
    state: &AppState,
    mail_from: &str,
    message: &[u8],
    recipients: &mut Vec<Recipient>,
) -> Vec<(Recipient, String)> {
    let Some(set) = &state.suppressions else {
        return Vec::new();
    };
    let set = set.view();
    if set.is_empty() {
        return Vec::new();
    }
    let domain = hedwig_ledger::suppress::domain_of(mail_from);
    let now = hedwig_queue::event::now_millis();
    let list = crate::suppression::MessageList::of(message);
    let mut suppressed = Vec::new();
    recipients.retain(|r| {
        let key = hedwig_ledger::suppress::normalize(r.as_str());
        match set.suppressed(domain.as_deref(), &key, &list, now) {
            Some(scope) => {
                suppressed.push((r.clone(), scope));
                false
            }
            None => true,
        }
    });
    suppressed
}

/// The `suppressed` events of the recipients taken out, just after the `queued` event, whose
/// recipient list gets them back (the message's timeline shows every recipient it had).
fn with_suppressed(
    mut queued: Event,
    suppressed: &[(Recipient, String)],
    queued_at: u64,
) -> Vec<Event> {
    if let What::Queued(q) = &mut queued.what {
        q.recipients
            .extend(suppressed.iter().map(|(r, _)| r.as_str().to_owned()));
    }
    let events = suppressed.iter().map(|(r, scope)| {
        let mut event = Event::now(
            queued.queue_id.clone(),
            What::Recipient(RecipientEvent {
                recipient: r.as_str().to_owned(),
                outcome: Outcome::Suppressed,
                mx: None,
                ip: None,
                tls: None,
                code: None,
                dsn: None,
                reply: format!("on the suppression list (scope {scope}); not sent"),
                attempt: None,
                by: None,
                list_id: None,
                source_ip: None,
                pool: None,
                sender_domain: None,
            }),
        );
        event.at = queued_at + 1;
        event
    });
    std::iter::once(queued.clone()).chain(events).collect()
}

/// `held` for each recipient of a message queued while its host is held (its job went to the
/// held tube), just after the `queued` event: a webhook endpoint that asks for `held` hears of
/// it as it does when a worker sets a job aside for a hold made after it was queued, and
/// `postoffice release` later records `released` for the same recipients.
fn held_events(envelope: &Envelope, queued_at: u64) -> Vec<Event> {
    envelope
        .rcpt_to
        .iter()
        .map(|rcpt| {
            let mut event = Event::now(
                envelope.queue_id.clone(),
                What::Recipient(RecipientEvent {
                    recipient: rcpt.to_string(),
                    outcome: Outcome::Held,
                    mx: None,
                    ip: None,
                    tls: None,
                    code: None,
                    dsn: None,
                    reply: format!(
                        "host {} is held; queued in the held tube until `postoffice release`",
                        envelope.host
                    ),
                    attempt: None,
                    by: None,
                    source_ip: None,
                    pool: None,
                    list_id: None,
                    sender_domain: None,
                }),
            );
            event.at = queued_at + 1;
            event
        })
        .collect()
}

/// A post whose every recipient is suppressed: nothing is queued, the post succeeds (the
/// client must not retry), and the ledger gets the message and each recipient `suppressed`.
async fn record_all_suppressed(
    state: Arc<AppState>,
    envelope: Envelope,
    message: Vec<u8>,
    suppressed: Vec<(Recipient, String)>,
    pending: Option<Pending>,
) -> Result<Accepted, Reject> {
    let queued_at = hedwig_queue::event::now_millis();
    if let Some(pending) = pending {
        pending.complete(&envelope.queue_id).await;
    }
    let all: Vec<&str> = suppressed.iter().map(|(r, _)| r.as_str()).collect();
    tracing::info!(
        queue_id = %envelope.queue_id,
        message_id = envelope.message_id.as_deref().unwrap_or("-"),
        host = %envelope.host,
        from = %envelope.mail_from,
        to = %all.join(","),
        app = envelope.app.as_ref().map_or("-", |a| a.name.as_str()),
        outcome = "suppressed",
        "every recipient is on the suppression list; nothing queued"
    );
    if let Some(events) = &state.events {
        // To the server the host's jobs go to, as a queued message's events would.
        let order = state.queue.order(&envelope.host);
        let server = order
            .first()
            .and_then(|&i| state.queue.addrs().nth(i))
            .map(str::to_owned);
        if let Some(server) = server {
            let event = hedwig_queue::event::queued_event(&envelope, &message, false, queued_at);
            events
                .record(&server, with_suppressed(event, &suppressed, queued_at))
                .await;
        }
    }
    Ok(Accepted {
        id: envelope.queue_id,
        duplicate: false,
    })
}

/// Longest sender message id accepted (mailman's are 24 characters).
pub const MAX_MESSAGE_ID: usize = 255;

/// The sender's message id is kept in the duplicate memory, the job and every log line of the
/// message: bounded in length, and nothing in it that could break a log line or a header.
fn check_message_id(id: &str) -> Result<(), String> {
    if id.len() > MAX_MESSAGE_ID {
        return Err(format!("{} bytes long; at most {MAX_MESSAGE_ID}", id.len()));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{id:?} contains a space or a control character"));
    }
    Ok(())
}

/// Longest text in an app identity (a Docker container name is at most 253 bytes).
const MAX_APP_FIELD: usize = 255;

/// An app identity goes into logs, the ledger and webhooks: short printable text only.
fn check_app(app: &hedwig_core::wire::App) -> Result<(), String> {
    if app.name.is_empty() {
        return Err("name is empty".into());
    }
    let fields = [
        ("name", Some(&app.name)),
        ("image", app.image.as_ref()),
        ("compose_project", app.compose_project.as_ref()),
        ("compose_service", app.compose_service.as_ref()),
        ("lane", app.lane.as_ref()),
    ];
    for (key, value) in fields {
        let Some(value) = value else { continue };
        if value.len() > MAX_APP_FIELD {
            return Err(format!(
                "{key} is {} bytes long; at most {MAX_APP_FIELD}",
                value.len()
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("{key} {value:?} contains a control character"));
        }
    }
    Ok(())
}

/// Most header fix-ups named in one post (mailman makes at most five).
pub const MAX_FIXUPS: usize = 16;
/// Longest fix-up name (mailman's longest is `message-id`).
pub const MAX_FIXUP_NAME: usize = 32;

/// The header fix-ups a mailman names (issue 19) go into the job, the ledger, `postoffice
/// trace` and the console: a few short names of lowercase ASCII letters, digits and `-`.
/// Names are not checked against mailman's list, so that a newer mailman with a new fix-up
/// is not refused by this post office (the field only records what mailman did).
fn check_fixups(fixups: &[String]) -> Result<(), String> {
    if fixups.len() > MAX_FIXUPS {
        return Err(format!("{} names; at most {MAX_FIXUPS}", fixups.len()));
    }
    for name in fixups {
        if name.is_empty() || name.len() > MAX_FIXUP_NAME {
            return Err(format!(
                "{:?} is {} bytes long; 1 to {MAX_FIXUP_NAME}",
                name.escape_debug().to_string(),
                name.len()
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "{:?} has a character other than a-z, 0-9 and -",
                name.escape_debug().to_string()
            ));
        }
    }
    Ok(())
}

/// `POST /check`: whether the host's key would be accepted (mailman asks at start-up). A
/// signed check carries no body; an unsigned one carries `fqdn` and `key` and is read within
/// the unauthenticated share.
pub async fn check(state: &AppState, headers: &HeaderMap, body: Body) -> Result<String, Reject> {
    let fqdn = if let Some(signed) = signed_headers(headers)? {
        let fqdn = authenticate_signed(state, &signed, "/check")?;
        let body = crate::body::read(
            headers,
            body,
            64 * 1024,
            state.config.request_timeout,
            Budget::Authenticated {
                total: &state.bytes_in_flight,
            },
        )
        .await?;
        if hedwig_core::signing::content_digest(&body.bytes) != signed.digest {
            return Err(Reject::unauthorized());
        }
        fqdn
    } else {
        let _slot = unsigned_slot(state).await?;
        let body = crate::body::read(
            headers,
            body,
            64 * 1024,
            state.config.request_timeout,
            Budget::Unauthenticated {
                total: &state.bytes_in_flight,
                share: &state.unauthenticated_bytes,
            },
        )
        .await?;
        #[derive(serde::Deserialize)]
        struct Fields {
            fqdn: String,
            #[serde(alias = "secret")]
            key: String,
        }
        let fields: Fields = serde_urlencoded::from_bytes(&body.bytes)
            .or_else(|_| serde_json::from_slice(&body.bytes))
            .map_err(|_| Reject::bad_request("expected fields fqdn and key"))?;
        let fqdn = hedwig_core::key::normalize_fqdn(&fields.fqdn)
            .map_err(|e| Reject::bad_request(format!("fqdn: {e}")))?;
        if !key_valid(state, &fqdn, &fields.key) {
            return Err(Reject::unauthorized());
        }
        if state.policies.require_signed(&fqdn) {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "this host must sign its requests (require_signed)",
            ));
        }
        fqdn
    };
    if state.policies.is_revoked(&fqdn) {
        return Err(Reject::new(StatusCode::FORBIDDEN, "host revoked"));
    }
    Ok(fqdn)
}

#[cfg(test)]
mod tests {
    use super::check_fixups;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fixups_are_few_short_safe_names() {
        assert!(check_fixups(&[]).is_ok());
        assert!(check_fixups(&names(&["date", "message-id", "from", "to", "bcc"])).is_ok());
        // A name this post office does not know (a newer mailman's) is kept, not refused.
        assert!(check_fixups(&names(&["mime-version2"])).is_ok());
        for bad in ["", "Date", "to\r\nx", "a b", "<script>", "da,te", "\u{e9}"] {
            assert!(check_fixups(&names(&[bad])).is_err(), "{bad:?}");
        }
        assert!(check_fixups(&names(&[&"x".repeat(33)])).is_err());
        assert!(check_fixups(&names(&[&"x".repeat(32)])).is_ok());
        assert!(check_fixups(&vec!["date".to_string(); 17]).is_err());
        assert!(check_fixups(&vec!["date".to_string(); 16]).is_ok());
    }
}
