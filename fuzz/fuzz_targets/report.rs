//! The bounce listener's report reader (`hedwig_message::report::parse`) and the VERP token
//! check (`hedwig_core::verp`) on arbitrary input.
//!
//! Checked:
//! - no panic;
//! - what the reader keeps is bounded: at most `MAX_GROUPS` recipient groups, every value at
//!   most `MAX_VALUE` characters with no control characters, every `Status` an enhanced status
//!   code, every `Action` lowercase;
//! - the input as a token never verifies under the test key unless it is that key's token
//!   (checked by making the token of what it decodes to, and comparing);
//! - the input as a recipient (UTF-8, 1 to 256 octets) round-trips through a token.
#![no_main]

use hedwig_core::verp::VerpKey;
use hedwig_message::report::{parse, Report, MAX_GROUPS, MAX_VALUE};
use libfuzzer_sys::fuzz_target;

const QID: &str = "018F2A3B4C5D0123456789AB";

fn bounded(v: &str) {
    assert!(v.chars().count() <= MAX_VALUE, "value too long");
    assert!(
        !v.chars().any(char::is_control),
        "control character kept: {v:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Report::Delivery(groups)) => {
            assert!(!groups.is_empty() && groups.len() <= MAX_GROUPS);
            for g in &groups {
                let parts: Vec<&str> = g.status.split('.').collect();
                assert_eq!(parts.len(), 3, "{:?}", g.status);
                assert_eq!(g.action, g.action.to_ascii_lowercase());
                for v in [
                    &g.final_recipient,
                    &g.original_recipient,
                    &g.diagnostic,
                    &g.remote_mta,
                ]
                .into_iter()
                .flatten()
                {
                    bounded(v);
                }
                bounded(&g.action);
            }
        }
        Ok(Report::Feedback(f)) => {
            assert!(!f.feedback_type.is_empty());
            bounded(&f.feedback_type);
            f.user_agent.iter().for_each(|v| bounded(v));
            assert!(f.original_rcpt_to.len() <= MAX_GROUPS);
            f.original_rcpt_to.iter().for_each(|v| bounded(v));
        }
        Err(_) => {}
    }
    let key = VerpKey::new("fuzz verp key");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(v) = key.verify(text) {
            // Only the key's own token (in any case) verifies.
            let made = key
                .token(&v.queue_id, &v.recipient)
                .expect("it made this one");
            assert_eq!(made, text.to_ascii_lowercase());
        }
        if !text.is_empty() && text.len() <= hedwig_core::verp::MAX_RECIPIENT {
            let token = key.token(QID, text).expect("any recipient up to the limit");
            let v = key.verify(&token).expect("its own token verifies");
            assert_eq!((v.queue_id.as_str(), v.recipient.as_str()), (QID, text));
        }
    }
});
