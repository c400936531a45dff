//! The DKIM signer (`hedwig_message::dkim::Signer`) on arbitrary messages, as the worker calls
//! it: on `hedwig_message::smtp_form(message)`, and also on the raw bytes.
//!
//! The signer has an Ed25519 key for `example.test` (from message/testdata) and that domain as
//! the default, so every message with a parsable From: is signed (the seeds' From: domains
//! are `example.test`, a subdomain of it, or others that fall back to the default). Checked:
//! - no panic, signing never fails with a good key; a message is signed exactly when
//!   `signing_domain` names a domain;
//! - the `DKIM-Signature:` fields are ASCII, CRLF-terminated, folded with WSP, lines of at
//!   most 998 octets, and name the expected domain and selector;
//! - `sign_message` is the signature fields followed by the message, byte for byte;
//! - signing is repeatable (Ed25519 is deterministic; the time is fixed);
//! - `smtp_form` gives CRLF-only lines of at most 998 octets and is idempotent.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hedwig_message::dkim::{DkimConfig, DkimKey, Signer};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_795_407_331;

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let key_file =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../message/testdata/ed25519.pem");
        Signer::new(&DkimConfig {
            keys: vec![DkimKey {
                domain: "example.test".into(),
                selector: "fuzz".into(),
                algorithm: None,
                key_file,
            }],
            default_domain: Some("example.test".into()),
        })
        .expect("test key loads")
    })
}

fn check_signature(fields: &[u8]) {
    assert!(fields.starts_with(b"DKIM-Signature: "), "{fields:?}");
    assert!(fields.ends_with(b"\r\n"));
    assert!(fields.is_ascii(), "non-ASCII signature field");
    let text = std::str::from_utf8(fields).expect("ASCII");
    for line in text[..text.len() - 2].split("\r\n") {
        assert!(line.len() <= 998, "signature line of {} octets", line.len());
        assert!(!line.contains(['\r', '\n']), "bare CR/LF in {line:?}");
        assert!(
            line.starts_with("DKIM-Signature: ") || line.starts_with([' ', '\t']),
            "unfolded continuation {line:?}"
        );
    }
    let unfolded = text.replace("\r\n\t", " ").replace("\r\n ", " ");
    assert!(unfolded.contains("d=example.test;"), "{unfolded}");
    assert!(unfolded.contains("s=fuzz;"), "{unfolded}");
}

fn sign(message: &[u8]) {
    let signer = signer();
    let domain = signer.signing_domain(message);
    let Some(fields) = signer.sign(message, NOW).expect("signing works") else {
        // Documented: no parsable From: means no signature.
        assert_eq!(domain, None, "a signing domain but no signature");
        assert_eq!(signer.sign_message(message, NOW).expect("copy"), message);
        return;
    };
    assert_eq!(domain, Some("example.test"), "signed for another domain");
    check_signature(&fields);
    let again = signer.sign(message, NOW).expect("signing works");
    assert_eq!(
        again.as_deref(),
        Some(&fields[..]),
        "signing is not repeatable"
    );
    let whole = signer.sign_message(message, NOW).expect("signing works");
    assert_eq!(&whole[..fields.len()], &fields[..]);
    assert_eq!(&whole[fields.len()..], message);
}

fuzz_target!(|data: &[u8]| {
    let wire = hedwig_message::smtp_form(data);
    for (i, &b) in wire.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && wire[i - 1] == b'\r', "bare LF after smtp_form");
        }
        if b == b'\r' {
            assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR after smtp_form");
        }
    }
    for line in wire.split(|&b| b == b'\n') {
        assert!(
            line.len() <= 999,
            "line of {} octets after smtp_form",
            line.len()
        );
    }
    assert_eq!(
        &*hedwig_message::smtp_form(&wire),
        &*wire,
        "smtp_form is not idempotent"
    );
    sign(&wire);
    sign(data);
});
