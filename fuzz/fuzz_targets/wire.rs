//! The postoffice's wire-format decoder: `postoffice::intake::parse` (form-urlencoded or JSON
//! body, by Content-Type) into `hedwig_core::wire::Submission`, then what intake does with it
//! before queueing: the addresses, the fqdn, the message bytes and the job encoding.
//!
//! Input: the first byte picks the form: bit 1 set, raw (`application/vnd.hedwig.raw`); else
//! its low bit JSON (1) or form (0); the rest is the body. Checked:
//! - no panic;
//! - a decoded submission survives re-encoding: `to_form` posted again, and the same fields as
//!   a JSON body, and as a raw body, decode to the same submission (a raw one's message taken
//!   as `Email::new` would carry it);
//! - a parsed mailbox prints without control characters (no SMTP command injection through an
//!   address) and parses again to itself; a normalized fqdn normalizes to itself;
//! - the message bytes survive `Email::new` / `into_message` and the job body encoding.
#![no_main]

use hedwig_core::address::{parse_reverse_path, Mailbox, Recipient};
use hedwig_core::wire::{Email, RawHeader, Submission};
use hedwig_queue::job::{decode_parts, encode_parts, Envelope};
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use libfuzzer_sys::fuzz_target;

fn check_mailbox(mailbox: &Mailbox) {
    let shown = mailbox.to_string();
    assert!(
        !shown.bytes().any(|b| b.is_ascii_control()),
        "control character in accepted address {shown:?}"
    );
    assert!(!mailbox
        .ascii_domain
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' '));
    let again = Mailbox::parse(&shown).expect("a printed mailbox parses again");
    assert_eq!(&again, mailbox);
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    let content_type = if first & 2 == 2 {
        hedwig_core::wire::RAW_CONTENT_TYPE
    } else if first & 1 == 1 {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let form = if first & 2 == 2 {
        postoffice::intake::PostForm::Raw
    } else {
        postoffice::intake::PostForm::Classic
    };
    let Ok(mut submission) = postoffice::intake::parse(&headers, body, false, form) else {
        return;
    };
    if submission.email.raw.is_some() {
        // The same submission as a raw body again, then in the form other senders use.
        let Email {
            mailfrom, rcpttos, ..
        } = submission.email.clone();
        let message = submission
            .email
            .clone()
            .into_message()
            .expect("raw message");
        let raw = RawHeader {
            fqdn: Some(submission.fqdn.clone()),
            key: Some(submission.key.clone()),
            mailfrom: mailfrom.clone(),
            rcpttos: rcpttos.clone(),
            id: submission.id.clone(),
            app: submission.app.clone(),
            fixups: submission.fixups.clone(),
        }
        .encode(&[&message]);
        let again = Submission::from_raw_with(&raw, true).expect("raw re-encoding decodes");
        assert_eq!(again, submission, "raw round trip");
        submission.email = Email::new(mailfrom, rcpttos, message);
    }

    // Re-encoding as a sender would.
    let form = serde_urlencoded::to_string(submission.to_form()).expect("form encodes");
    let again = Submission::from_form(form.as_bytes()).expect("to_form output decodes");
    assert_eq!(again, submission, "form round trip");
    let mut object = serde_json::json!({
        "fqdn": submission.fqdn,
        "key": submission.key,
        "email": submission.email,
    });
    if let Some(id) = &submission.id {
        object["id"] = serde_json::Value::String(id.clone());
    }
    let again = Submission::from_json(object.to_string().as_bytes()).expect("JSON decodes");
    assert_eq!(again, submission, "JSON round trip");

    // What intake checks next.
    if let Ok(fqdn) = hedwig_core::key::normalize_fqdn(&submission.fqdn) {
        assert_eq!(
            hedwig_core::key::normalize_fqdn(&fqdn).ok().as_ref(),
            Some(&fqdn)
        );
    }
    let sender = parse_reverse_path(&submission.email.mailfrom);
    if let Ok(Some(mailbox)) = &sender {
        check_mailbox(mailbox);
    }
    let mut recipients = Vec::new();
    for rcpt in &submission.email.rcpttos {
        if let Ok(mailbox) = Mailbox::parse(rcpt) {
            check_mailbox(&mailbox);
            recipients.push(Recipient::from_mailbox(mailbox));
        }
    }
    let Email {
        mailfrom, rcpttos, ..
    } = submission.email.clone();
    let Ok(message) = submission.email.into_message() else {
        return;
    };
    let rebuilt = Email::new(mailfrom, rcpttos, message.clone());
    assert_eq!(rebuilt.into_message().expect("rebuilt email"), message);

    let mail_from = match sender {
        Ok(Some(m)) => m.to_string(),
        _ => String::new(),
    };
    let mut envelope = Envelope::new("Q".into(), submission.fqdn, mail_from, recipients);
    envelope.message_id = submission.id;
    let job = encode_parts(&envelope, &message);
    let (decoded, bytes) = decode_parts(&job).expect("job decodes");
    assert_eq!(decoded, envelope);
    // What the intake writes, the worker parses again at decode: to the same mailbox.
    for (got, sent) in decoded.rcpt_to.iter().zip(&envelope.rcpt_to) {
        assert_eq!(got.mailbox().ok(), sent.mailbox().ok(), "{sent}");
    }
    assert_eq!(bytes, &message[..]);
});
