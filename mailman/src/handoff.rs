//! The hand-off after the final `.`: spool the message, offer it to the postoffice while the
//! client waits (up to `forward_deadline`, through [`crate::post`]), and pick the reply. What
//! is not taken here goes to the background retries ([`crate::retry`]). (Delivery to the
//! recipients is the worker's job, not mailman's.)
//!
//! Every message gets one log line here with its message id, client, sender, recipients, size
//! and outcome (`forwarded`, `rejected`, `spooled`, `refused`), the `app` that sent it (a
//! container or an SMTP AUTH login, empty when unknown), and `fixed`: the header fields
//! [`crate::fixup`] added (`date,message-id,from,to`, `bcc` for removed `Bcc:` fields). The
//! same list is kept in the spool header and posted as `fixups`, so the ledger records it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::post::{Poster, RetryReason, Verdict};
use crate::smtp::reply::{self, Reply};
use crate::smtp::Message;
use crate::spool::{Spool, SpoolError, SpoolHeader};

/// What every session and the background retries share.
pub struct Core {
    pub settings: Settings,
    pub spool: Spool,
    pub poster: Poster,
    pub metrics: Metrics,
    /// The registry behind `metrics` and the draining flag `/health` reads.
    pub shell: Arc<hedwig_service::ops::Shell>,
    /// Messages for the background retries, with the number of attempts so far.
    pub retry: mpsc::UnboundedSender<(SpoolHeader, u32)>,
    /// Signalled when a post succeeds: the retry loop then retries what it holds without
    /// waiting out each message's backoff.
    pub postoffice_up: tokio::sync::Notify,
    /// The container map, with `docker.socket` set.
    pub docker: Option<Arc<crate::docker::Resolver>>,
}

/// Spools `message`, tries the postoffice, and returns the reply for the client.
pub async fn hand_off(core: &Arc<Core>, mut message: Message) -> Reply {
    let id = hedwig_core::new_queue_id();
    let now = hedwig_core::unix_now();
    // Header refusals and fix-ups (issue 19), before anything is measured or spooled.
    let fixups = crate::fixup::apply(
        &message.body,
        &crate::fixup::Input {
            add: core.settings.add_missing_headers,
            refuse: core.settings.refuse_bad_headers,
            refuse_8bit: core.settings.refuse_8bit_headers,
            mail_from: &message.mail_from,
            smtputf8: message.smtputf8,
            now,
            id: &id,
            fqdn: &core.settings.fqdn,
        },
    )
    .map(|outcome| match outcome.message {
        std::borrow::Cow::Owned(fixed) => (Some(fixed), outcome.fixed),
        std::borrow::Cow::Borrowed(_) => (None, outcome.fixed),
    });
    let fixups: Vec<String> = match fixups {
        Ok((body, fixed)) => {
            if let Some(body) = body {
                message.body = body;
            }
            fixed.into_iter().map(str::to_owned).collect()
        }
        Err(refusal) => {
            core.metrics.messages_refused.inc();
            tracing::info!(
                message_id = %id,
                client = %message.client,
                from = %message.mail_from,
                to = %message.rcpt_to.join(","),
                size = message.body.len(),
                outcome = "refused",
                queue_id = "",
                detail = %refusal,
                "message"
            );
            return reply::bad_header(&refusal);
        }
    };
    let fixed = fixups.join(",");
    let mut received = message.received_header(&core.settings.fqdn, &id, now);
    if let Some(app) = message.app.as_ref().filter(|_| core.settings.app_header) {
        received.push_str(&app_header(&app.name));
    }
    let size = received.len() + message.body.len();
    let header = SpoolHeader {
        v: 1,
        id: id.clone(),
        mail_from: message.mail_from,
        rcpt_to: message.rcpt_to,
        client: message.client.to_string(),
        received_at: now,
        size: size as u64,
        app: message.app,
        fixups,
    };
    let to = header.rcpt_to.join(",");
    let app = header.app.as_ref().map(|a| a.name.as_str()).unwrap_or("");
    let log = |outcome: &str, detail: &str, queue_id: &str| {
        tracing::info!(
            message_id = %id,
            client = %header.client,
            app,
            from = %header.mail_from,
            to = %to,
            size,
            outcome,
            queue_id,
            detail,
            fixed = %fixed,
            "message"
        );
    };
    // What is posted is the message with our Received: header; the postoffice measures that
    // against the same limit, so refuse here rather than say 250 and be refused later.
    if size > core.settings.max_message_size {
        core.metrics.messages_refused.inc();
        log(
            "refused",
            "over max_message_size with the Received: header",
            "",
        );
        return reply::too_big(size, core.settings.max_message_size);
    }
    // A mail loop (issue 11 F2): refuse before spooling, counting the header added here.
    let limit = core.settings.max_received_headers;
    let hops = crate::smtp::hops::count_received(&message.body, limit) + 1;
    if hops > limit {
        core.metrics.messages_refused.inc();
        log(
            "refused",
            &format!("mail loop? {hops} Received: headers, max_received_headers is {limit}"),
            "",
        );
        return reply::too_many_hops();
    }
    match core
        .spool
        .store(&header, &[received.as_bytes(), &message.body])
        .await
    {
        Ok(()) => {}
        Err(SpoolError::Full { used, max }) => {
            core.metrics.messages_refused.inc();
            log(
                "refused",
                &format!("spool full ({used} of {max} bytes)"),
                "",
            );
            return reply::spool_full();
        }
        Err(err) => {
            core.metrics.messages_refused.inc();
            tracing::error!(%err, message_id = %id, "cannot spool a message");
            log("refused", "spool error", "");
            return reply::local_error();
        }
    }
    let mut bytes = received.into_bytes();
    bytes.extend_from_slice(&message.body);
    drop(message.body);

    let post = {
        let core = core.clone();
        let header = header.clone();
        tokio::spawn(async move {
            core.poster
                .post(&header, bytes, core.settings.forward_timeout)
                .await
        })
    };
    let mut post = post;
    match tokio::time::timeout(core.settings.forward_deadline, &mut post).await {
        Ok(Ok(Verdict::Accepted {
            queue_id,
            duplicate,
        })) => {
            core.spool.remove(&id);
            core.postoffice_up.notify_one();
            core.metrics.messages_forwarded_inline.inc();
            key_accepted(core);
            log(
                "forwarded",
                if duplicate { "duplicate" } else { "" },
                &queue_id,
            );
            reply::queued(&id, &queue_id)
        }
        Ok(Ok(Verdict::Rejected { status, reason })) => {
            core.spool.remove(&id);
            core.metrics.messages_rejected.inc();
            log("rejected", &format!("{status} {reason}"), "");
            reply::rejected(status, &reason)
        }
        Ok(Ok(Verdict::Retry(reason))) => {
            note_failure(core, &reason);
            core.spool.note_attempt(&id, &reason.to_string());
            core.metrics.messages_spooled.inc();
            log("spooled", &reason.to_string(), "");
            let _ = core.retry.send((header, 1));
            reply::queued_locally(&id)
        }
        Ok(Err(join)) => {
            tracing::error!(%join, message_id = %id, "post task failed");
            core.spool.note_attempt(&id, "post task failed");
            core.metrics.messages_spooled.inc();
            log("spooled", "post task failed", "");
            let _ = core.retry.send((header, 1));
            reply::queued_locally(&id)
        }
        Err(_deadline) => {
            // The post goes on; its answer is settled like a background attempt's.
            core.metrics.messages_spooled.inc();
            log("spooled", "postoffice slower than forward_deadline", "");
            let core = core.clone();
            tokio::spawn(async move {
                let verdict = match post.await {
                    Ok(v) => v,
                    Err(e) => Verdict::Retry(RetryReason::Unexpected(0, e.to_string())),
                };
                settle_later(&core, header, 1, verdict);
            });
            reply::queued_locally(&id)
        }
    }
}

/// Counts a failed post; a refused key turns `/health` unhealthy and is logged as an error,
/// once per `key_check_interval` however many posts get the 401.
pub fn note_failure(core: &Core, reason: &RetryReason) {
    core.metrics.forward_failed(reason);
    if *reason == RetryReason::WrongKey {
        key_refused(core, &reason.to_string());
    }
}

/// The postoffice refuses our key (401): flag it and log it, at most once per
/// `key_check_interval` (and at once when it was accepted before).
pub fn key_refused(core: &Core, why: &str) {
    let was = core.metrics.wrong_key.swap(true, Ordering::Relaxed);
    let now = hedwig_core::unix_now();
    let last = core.metrics.wrong_key_logged.load(Ordering::Relaxed);
    let due = !was || now >= last.saturating_add(core.settings.key_check_interval.as_secs().max(1));
    if due
        && core
            .metrics
            .wrong_key_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(
            fqdn = %core.settings.fqdn,
            "{why}; /health is unhealthy and messages stay in the spool until the key is accepted"
        );
    }
}

/// The postoffice accepts our key: clear the flag, saying so when it was set.
pub fn key_accepted(core: &Core) {
    if core.metrics.wrong_key.swap(false, Ordering::Relaxed) {
        tracing::info!(fqdn = %core.settings.fqdn, "the postoffice accepts our key again; /health is healthy");
    }
}

/// Acts on the answer to a post made after the client was told `250`.
pub fn settle_later(core: &Arc<Core>, header: SpoolHeader, attempts: u32, verdict: Verdict) {
    let id = &header.id;
    match verdict {
        Verdict::Accepted {
            queue_id,
            duplicate,
        } => {
            core.spool.remove(id);
            key_accepted(core);
            core.metrics.messages_forwarded_later.inc();
            tracing::info!(
                message_id = %id,
                from = %header.mail_from,
                to = %header.rcpt_to.join(","),
                size = header.size,
                outcome = "forwarded",
                queue_id = %queue_id,
                duplicate,
                attempts,
                "spooled message forwarded"
            );
        }
        Verdict::Rejected { status, reason } => {
            // The client was told 250 already; keep the message for an operator.
            core.spool.note_attempt(
                id,
                &format!("refused by the post office: {status} {reason}"),
            );
            core.spool.set_aside(id);
            core.metrics.messages_set_aside.inc();
            tracing::error!(
                message_id = %id,
                from = %header.mail_from,
                to = %header.rcpt_to.join(","),
                outcome = "set-aside",
                status,
                reason = %reason,
                "postoffice refused a spooled message for good; moved to rejected/"
            );
            // The client heard 250: the sender must hear of the failure (issue 11 F8).
            tokio::spawn(crate::bounce::bounce_refused(
                core.clone(),
                header,
                status,
                reason,
            ));
        }
        Verdict::Retry(reason) => {
            note_failure(core, &reason);
            core.spool.note_attempt(id, &reason.to_string());
            if reason == RetryReason::WrongKey {
                // Said once per key_check_interval by note_failure; not once per retry.
                tracing::debug!(message_id = %id, attempts, %reason, "forward failed, will retry");
            } else {
                tracing::warn!(message_id = %id, attempts, %reason, "forward failed, will retry");
            }
            let _ = core.retry.send((header, attempts));
        }
    }
}

/// The `X-Hedwig-App:` field for `name` (`app_header`): letters, digits and `.-_@+` kept,
/// anything else (a name is the container's or the login's, but it goes into a header) `_`.
fn app_header(name: &str) -> String {
    let clean: String = name
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("X-Hedwig-App: {clean}\r\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_app_header_is_one_safe_line() {
        assert_eq!(
            super::app_header("shop-web-1"),
            "X-Hedwig-App: shop-web-1\r\n"
        );
        assert_eq!(
            super::app_header("a b\r\nBcc: x@y"),
            "X-Hedwig-App: a_b__Bcc__x@y\r\n"
        );
    }
}
