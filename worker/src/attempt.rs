//! One delivery attempt of a whole job: the per-message step between reserving a job and
//! recording its outcome.
//!
//! The loop check (`hop_limit`), the effective return path, bare LFs and over-long lines fixed
//! (so that the signature covers exactly what the receiver gets), the DKIM signature (for the
//! domains the post office authorised), then the recipients grouped by domain and every domain
//! delivered in parallel ([`crate::deliver`]). Returns one outcome per recipient.
//!
//! Not here: reserving, touching, recording and deleting the job ([`crate::queue`]), what the
//! outcomes mean for the job ([`crate::plan`]).

use hedwig_core::address::Recipient;
use hedwig_core::unix_now;
use hedwig_queue::job::Job;

use crate::deliver::group_by_domain;
use crate::metrics::MessageCounter;
use crate::plan::Outcome;
use crate::queue::Worker;

impl Worker {
    /// Delivers every recipient of `job`, one domain at a time in parallel.
    pub async fn attempt(&self, job: &Job) -> Vec<(Recipient, Outcome)> {
        let env = &job.envelope;
        // RFC 5321 §6.3: a message going round in a circle is not delivered again.
        let hops = crate::hops::received_count(&job.message);
        let limit = self.config.hop_limit;
        if hops > limit {
            self.metrics.count(MessageCounter::Loop, &env.host);
            tracing::warn!(
                queue_id = %env.queue_id, host = %env.host, from = %env.mail_from, hops, limit,
                "{}: mail loop: {hops} Received headers, more than hop_limit {limit}; not delivered",
                env.queue_id
            );
            let outcome = Outcome::failed(&crate::error::Error::Loop { hops }, None);
            return env
                .rcpt_to
                .iter()
                .map(|r| (r.clone(), outcome.clone()))
                .collect();
        }
        let mail_from = self
            .config
            .return_path
            .apply(&env.host, &env.mail_from)
            .to_string();
        // Bare LFs (old hedwig clients send them) and over-long lines are fixed before
        // signing, so that the signature covers exactly what the receiver gets.
        let wire = hedwig_message::smtp_form(&job.message);
        // Bulk hosts' mail: a one-click unsubscribe link per recipient, so a copy (and a
        // signature) per recipient.
        let unsubscribe = self
            .unsubscribe
            .as_deref()
            .and_then(|u| Some((u, u.plan(env, &wire)?)));
        let signed;
        let message: &[u8] = if unsubscribe.is_some() || self.signer.is_none() {
            &wire // signed per recipient below, or not at all
        } else {
            signed = self.sign(env, wire.to_vec()).await;
            &signed
        };
        // The sender goes into a command line: never send one that is not a valid path
        // (a CR or LF in it would inject SMTP commands).
        let wire_from = match hedwig_core::address::parse_reverse_path(&mail_from) {
            Ok(Some(mailbox)) => mailbox.wire(),
            Ok(None) => String::new(),
            Err(e) => {
                let error = crate::error::Error::BadAddress(format!("sender: {e}"));
                let outcome = Outcome::failed(&error, None);
                return env
                    .rcpt_to
                    .iter()
                    .map(|r| (r.clone(), outcome.clone()))
                    .collect();
            }
        };
        // The recipients were parsed when the job was decoded: grouped here, sent in their
        // wire form, reported as queued, without parsing them again.
        let (groups, mut outcomes) = group_by_domain(&env.rcpt_to);
        // The IP pool of the sending host and the sender as the host gave it (before any
        // return path or VERP rewriting).
        let pool = self
            .deliverer
            .pools
            .choose(&env.host, &env.mail_from)
            .map(|p| &**p);
        let verp = self
            .verp
            .as_deref()
            .filter(|v| v.bounce_domain(&env.mail_from).is_some());
        if verp.is_some() || unsubscribe.is_some() {
            let (mail_from, wire_from, unsubscribe) = (&mail_from, &wire_from, &unsubscribe);
            let now = unix_now();
            // One transaction per recipient, each with its own return path and unsubscribe
            // link; a domain's recipients one after another (on a reused connection), domains
            // in parallel.
            let deliveries = groups.iter().map(|(domain, rcpts)| async move {
                let mut out = Vec::new();
                for rcpt in rcpts {
                    // Made of the token's base32 and a checked host name: safe on the wire as
                    // it is (it is not re-parsed: the local part is often longer than the 64
                    // octets hedwig's address parser allows; see hedwig_core::verp).
                    let (from, wire) = match verp
                        .and_then(|v| v.return_path(&env.mail_from, &env.queue_id, rcpt.as_ref()))
                    {
                        Some(path) => (path.clone(), path),
                        None => (mail_from.clone(), wire_from.clone()),
                    };
                    let copy;
                    let body: &[u8] = match unsubscribe {
                        Some((u, plan)) => {
                            let mut m = u
                                .fields(plan, &env.queue_id, rcpt.as_ref(), now)
                                .unwrap_or_default();
                            m.extend_from_slice(message);
                            copy = self.sign(env, m).await;
                            &copy
                        }
                        None => message,
                    };
                    let one = std::slice::from_ref(rcpt);
                    out.extend(
                        self.deliverer
                            .deliver_domain_via(
                                pool,
                                env.tls_report,
                                &env.host,
                                domain,
                                &from,
                                &wire,
                                one,
                                body,
                            )
                            .await,
                    );
                }
                out
            });
            for result in futures_util::future::join_all(deliveries).await {
                outcomes.extend(result);
            }
            return outcomes;
        }
        let deliveries = groups.iter().map(|(domain, rcpts)| {
            self.deliverer.deliver_domain_via(
                pool,
                env.tls_report,
                &env.host,
                domain,
                &mail_from,
                &wire_from,
                rcpts,
                message,
            )
        });
        for result in futures_util::future::join_all(deliveries).await {
            outcomes.extend(result);
        }
        outcomes
    }

    /// `message` DKIM-signed for the domains the post office authorised (or, for a bounce,
    /// our own name), or as it is when there is no signer or signing fails (logged). Never
    /// for a domain just because the From: names it.
    async fn sign(&self, env: &hedwig_queue::job::Envelope, message: Vec<u8>) -> Vec<u8> {
        let Some(signer) = &self.signer else {
            return message;
        };
        let authorised =
            hedwig_message::dkim::authorised_domains(env, &message, self.config.ehlo_name());
        // An RSA signature is about a millisecond of CPU: keep it off the threads that drive
        // every other delivery's timeouts.
        let (signer, message) = (signer.clone(), std::sync::Arc::new(message));
        let input = message.clone();
        let result = tokio::task::spawn_blocking(move || {
            signer.sign_message_for(&input, &authorised, unix_now())
        })
        .await;
        let unsigned = || std::sync::Arc::unwrap_or_clone(message);
        match result {
            Ok(Ok(signed)) => signed,
            Ok(Err(e)) => {
                tracing::error!(queue_id = %env.queue_id, "DKIM signing failed, sending unsigned: {e}");
                unsigned()
            }
            Err(e) => {
                tracing::error!(queue_id = %env.queue_id, "DKIM signing task failed, sending unsigned: {e}");
                unsigned()
            }
        }
    }
}
