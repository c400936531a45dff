//! Bounces for messages the postoffice refused for good after the client was told `250`
//! (issue 11 F8): an RFC 3464 report built with `hedwig-message`'s DSN builder, spooled like
//! any message and posted through the postoffice from the null sender to the envelope sender.
//!
//! Never for the null sender (a bounce is never answered with a bounce, RFC 5321 §6.1 and
//! RFC 3464 §2.3.4). The refused message itself stays in `rejected/` for an operator.

use std::sync::Arc;

use hedwig_core::address::Recipient;
use hedwig_message::dsn;
use hedwig_queue::job::{Envelope, Failure};

use crate::handoff::Core;
use crate::spool::SpoolHeader;

/// The RFC 3463 status and SMTP-like code a postoffice refusal maps to.
fn status_for(status: u16) -> (&'static str, u16) {
    match status {
        // the sending host or the sender's domain is not allowed
        403 => ("5.7.1", 550),
        // too big
        413 => ("5.3.4", 552),
        // the postoffice could not read the envelope or message
        _ => ("5.6.0", 554),
    }
}

/// Builds the bounce for `header` (refused with `status` and `reason`) and hands it to the
/// retry loop. Errors are logged: the original message stays in `rejected/` either way.
pub async fn bounce_refused(core: Arc<Core>, header: SpoolHeader, status: u16, reason: String) {
    let id = header.id.clone();
    let sender = header.mail_from.trim();
    if sender.is_empty() || sender == "<>" {
        tracing::warn!(message_id = %id, status, "no bounce for a message from the null sender");
        return;
    }
    let message = match core.spool.load_rejected(&id) {
        Ok(spooled) => spooled.message,
        Err(err) => {
            // The report can still be made, without the original headers.
            tracing::warn!(%err, message_id = %id, "bouncing without the original headers");
            Vec::new()
        }
    };
    let now = hedwig_core::unix_now();
    let (dsn_code, code) = status_for(status);
    let failed: Vec<(String, Failure)> = header
        .rcpt_to
        .iter()
        .map(|rcpt| {
            (
                rcpt.clone(),
                Failure {
                    at: now,
                    reason: "rejected".into(),
                    code: Some(code),
                    dsn: Some(dsn_code.into()),
                    response: format!("the postoffice refused the message ({status}): {reason}"),
                    relay: None,
                },
            )
        })
        .collect();
    let original = Envelope::new(
        id.clone(),
        core.settings.fqdn.clone(),
        header.mail_from.clone(),
        header.rcpt_to.iter().map(Recipient::parse).collect(),
    );
    let params = dsn::Params {
        hostname: &core.settings.fqdn,
        from: None,
        original: &original,
        message: &message,
        failed: &failed,
        now,
        // Postfix's bounce_size_limit and friends (issue 11 F4): a bounce stays small.
        limits: dsn::Limits::default(),
    };
    let report = match dsn::build(&params) {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(%err, message_id = %id, "cannot build a bounce");
            return;
        }
    };
    let bounce = SpoolHeader {
        v: 1,
        id: hedwig_core::new_queue_id(),
        mail_from: String::new(),
        rcpt_to: vec![header.mail_from.clone()],
        client: "local bounce".into(),
        received_at: now,
        size: report.len() as u64,
        app: None,
        fixups: Vec::new(),
    };
    match core.spool.store(&bounce, &[&report]).await {
        Ok(()) => {
            tracing::info!(
                message_id = %id,
                bounce_id = %bounce.id,
                to = %header.mail_from,
                status,
                "bounce made for a message refused after 250; posting it from the null sender"
            );
            let _ = core.retry.send((bounce, 0));
        }
        Err(err) => {
            tracing::error!(%err, message_id = %id, "cannot spool the bounce; the sender is not told")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_permanent_codes() {
        assert_eq!(status_for(403), ("5.7.1", 550));
        assert_eq!(status_for(413), ("5.3.4", 552));
        assert_eq!(status_for(400), ("5.6.0", 554));
    }
}
