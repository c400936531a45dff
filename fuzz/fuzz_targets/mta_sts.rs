//! The worker's MTA-STS parsers (`worker::mta_sts::policy`) on arbitrary policy files and TXT
//! records, as a policy host or a DNS server could serve them.
//!
//! Checked:
//! - no panic;
//! - a parsed policy's `max_age` is within the RFC 8461 limit, and `enforce`/`testing` have at
//!   least one MX pattern;
//! - the policy written back as a file (`version`, `mode`, each `mx`, `max_age`) parses to the
//!   same policy;
//! - a TXT id, when found, is 1 to 32 letters and digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker::mta_sts::policy::{parse_policy, parse_txt, Mode, MAX_AGE_LIMIT};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = parse_policy(data) {
        assert!(policy.max_age.as_secs() <= MAX_AGE_LIMIT);
        assert!(policy.mode == Mode::None || !policy.mx.is_empty());
        let mut text = format!("version: STSv1\nmode: {}\n", policy.mode.as_str());
        for mx in &policy.mx {
            text.push_str(&format!("mx: {mx}\n"));
        }
        text.push_str(&format!("max_age: {}\n", policy.max_age.as_secs()));
        assert_eq!(
            parse_policy(text.as_bytes()).as_ref(),
            Ok(&policy),
            "{text}"
        );
    }
    let text = String::from_utf8_lossy(data);
    if let Some(id) = parse_txt(text.split('\n')) {
        assert!((1..=32).contains(&id.len()));
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
});
