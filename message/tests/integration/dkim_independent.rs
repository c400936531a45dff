//! DKIM signatures made by `hedwig_message::dkim::Signer` verify with an independent
//! verifier: python3-dkim (dkimpy), fetching the public keys over DNS from a real
//! authoritative server (`hedwig_testkit::dns::DnsServer`) on loopback.
//!
//! RSA-2048 and Ed25519, alone and together, on ASCII, 8-bit (Latin-1) and UTF-8 messages;
//! and the verifier rejects a tampered body, a tampered header, an added From: and a key
//! the DNS does not publish.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hedwig_message::dkim::{DkimConfig, DkimKey, Signer};
use hedwig_testkit::dns::{DnsServer, Zone};

const NOW: u64 = 1_795_407_331;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn signer(keys: &[(&str, &str, &str)]) -> Signer {
    Signer::new(&DkimConfig {
        keys: keys
            .iter()
            .map(|(domain, selector, file)| DkimKey {
                domain: domain.to_string(),
                selector: selector.to_string(),
                algorithm: None,
                key_file: testdata(file),
            })
            .collect(),
        default_domain: None,
    })
    .unwrap()
}

/// The zone publishing every test key, from the signer's own view of its keys.
fn zone() -> Zone {
    let all = signer(&[
        ("example.test", "rsa", "rsa2048.pem"),
        ("example.test", "ed", "ed25519.pem"),
        ("bücher.test", "rsa", "rsa2048-pkcs8.pem"),
        ("bücher.test", "ed", "ed25519.pem"),
    ]);
    all.keys()
        .iter()
        .fold(Zone::new(), |zone, key| zone.txt(&key.dns_name(), &key.txt))
}

const ASCII: &[u8] = b"From: Alice Example <alice@example.test>\r\n\
To: Bob <bob@example.org>,\r\n Carol <carol@example.net>\r\n\
Cc: dave@example.net\r\n\
Subject:   Folded   and\r\n\
\tspaced   subject\r\n\
Date: Mon, 23 Nov 2026 04:15:31 +0000\r\n\
Message-ID: <ascii-1@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
List-Unsubscribe: <mailto:unsub@example.test?subject=unsubscribe>\r\n\
X-Mailer: not signed\r\n\
\r\n\
Hello Bob,   with  spaces   \r\n\
\r\n\
.leading dot and trailing blank lines\r\n\
\r\n\
\r\n";

/// ISO-8859-1 bytes in a header and the body, sent as 8BITMIME.
const LATIN1: &[u8] = b"From: Ren\xe9 <rene@example.test>\r\n\
To: bob@example.org\r\n\
Subject: Caf\xe9 cr\xe8me\r\n\
Date: Mon, 23 Nov 2026 04:15:31 +0000\r\n\
Message-ID: <latin1-1@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Gr\xfc\xdfe aus K\xf6ln, \xe0 bient\xf4t.\r\n\
\xff\xfe\x80 raw high bytes\r\n";

/// An SMTPUTF8 message: UTF-8 addresses, header and body, an IDN From: domain.
const UTF8: &str = "From: José Müller <josé@bücher.test>\r\n\
To: 用户@例子.广告\r\n\
Subject: Grüße — 你好 ✉\r\n\
Date: Mon, 23 Nov 2026 04:15:31 +0000\r\n\
Message-ID: <utf8-1@bücher.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Ärger über Öl? Ça va. 日本語のテキスト。\r\n";

struct Verdict {
    passed: bool,
    /// `<index> <d> <s> <a> pass|fail` per signature.
    lines: Vec<String>,
}

/// Runs the python3-dkim helper against `message`, with DNS at `dns`.
async fn verify(dns: &DnsServer, message: &[u8]) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("message.eml");
    std::fs::write(&path, message).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim_verify.py");
    let run = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(dns.addr().ip().to_string())
        .arg(dns.addr().port().to_string())
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the verifier finishes within 60 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("verifier: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    Verdict {
        passed: out.status.success(),
        lines: stdout.lines().map(str::to_string).collect(),
    }
}

#[tokio::test]
async fn rsa_and_ed25519_verify_on_ascii_8bit_and_utf8() {
    let dns = DnsServer::start(zone()).await;
    let rsa = signer(&[
        ("example.test", "rsa", "rsa2048.pem"),
        ("bücher.test", "rsa", "rsa2048-pkcs8.pem"),
    ]);
    let ed = signer(&[
        ("example.test", "ed", "ed25519.pem"),
        ("bücher.test", "ed", "ed25519.pem"),
    ]);
    let both = signer(&[
        ("example.test", "rsa", "rsa2048.pem"),
        ("example.test", "ed", "ed25519.pem"),
        ("bücher.test", "ed", "ed25519.pem"),
        ("bücher.test", "rsa", "rsa2048-pkcs8.pem"),
    ]);
    for (name, message) in [
        ("ascii", ASCII),
        ("latin-1", LATIN1),
        ("utf-8", UTF8.as_bytes()),
    ] {
        let domain = if name == "utf-8" {
            "xn--bcher-kva.test"
        } else {
            "example.test"
        };
        for (signer_name, signer, expected) in [
            ("rsa", &rsa, vec![("rsa", "rsa-sha256")]),
            ("ed25519", &ed, vec![("ed", "ed25519-sha256")]),
            (
                "both",
                &both,
                if name == "utf-8" {
                    vec![("ed", "ed25519-sha256"), ("rsa", "rsa-sha256")]
                } else {
                    vec![("rsa", "rsa-sha256"), ("ed", "ed25519-sha256")]
                },
            ),
        ] {
            let signed = signer.sign_message(message, NOW).unwrap();
            // The message itself is untouched after the signature fields.
            assert!(signed.ends_with(message));
            let verdict = verify(&dns, &signed).await;
            assert!(
                verdict.passed,
                "{name} signed with {signer_name}: {:?}",
                verdict.lines
            );
            let want: Vec<String> = expected
                .iter()
                .enumerate()
                .map(|(i, (s, a))| format!("{i} {domain} {s} {a} pass"))
                .collect();
            assert_eq!(verdict.lines, want, "{name} signed with {signer_name}");
        }
    }
    // The keys really came from DNS.
    let asked: Vec<String> = dns.queries().into_iter().map(|(n, _)| n).collect();
    for name in [
        "rsa._domainkey.example.test.",
        "ed._domainkey.example.test.",
        "rsa._domainkey.xn--bcher-kva.test.",
        "ed._domainkey.xn--bcher-kva.test.",
    ] {
        // The query log shows IDN labels as Unicode.
        let unicode = name.replace("xn--bcher-kva", "bücher");
        assert!(
            asked.iter().any(|a| a == name || *a == unicode),
            "{name} never asked: {asked:?}"
        );
    }
}

/// Replaces the first occurrence of `from` after the signature fields.
fn tamper(signed: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = signed
        .windows(from.len())
        .position(|w| w == from)
        .expect("the text to tamper with");
    [&signed[..at], to, &signed[at + from.len()..]].concat()
}

#[tokio::test]
async fn tampering_fails_verification() {
    let dns = DnsServer::start(zone()).await;
    let both = signer(&[
        ("example.test", "rsa", "rsa2048.pem"),
        ("example.test", "ed", "ed25519.pem"),
    ]);
    let signed = both.sign_message(LATIN1, NOW).unwrap();
    assert!(
        verify(&dns, &signed).await.passed,
        "the untampered message passes"
    );

    let body = tamper(&signed, b"K\xf6ln", b"K\xf6lN");
    let header = tamper(&signed, b"Subject: Caf\xe9", b"Subject: Cafe");
    // Oversigning: a second From: added on top breaks the signature.
    let extra_from = [&b"From: mallory@evil.test\r\n"[..], &signed[..]].concat();
    for (what, message) in [
        ("body", body),
        ("subject", header),
        ("extra From", extra_from),
    ] {
        let verdict = verify(&dns, &message).await;
        assert!(
            !verdict.passed,
            "tampered {what} passed: {:?}",
            verdict.lines
        );
        assert_eq!(verdict.lines.len(), 2);
        assert!(
            verdict.lines.iter().all(|l| l.ends_with(" fail")),
            "{what}: {:?}",
            verdict.lines
        );
    }

    // Relaxed canonicalization: whitespace changes in headers and body still verify.
    let rewrapped = tamper(
        &signed,
        b"Subject: Caf\xe9 cr\xe8me",
        b"Subject:   Caf\xe9    cr\xe8me  ",
    );
    let verdict = verify(&dns, &rewrapped).await;
    assert!(verdict.passed, "relaxed whitespace: {:?}", verdict.lines);
}

#[tokio::test]
async fn a_key_that_dns_does_not_publish_fails() {
    // DNS publishes a different RSA key under the selector than the one that signed.
    let other = hedwig_message::dkim::generate(hedwig_message::dkim::Algorithm::Rsa).unwrap();
    let dns = DnsServer::start(Zone::new().txt("rsa._domainkey.example.test", &other.txt)).await;
    let rsa = signer(&[("example.test", "rsa", "rsa2048.pem")]);
    let verdict = verify(&dns, &rsa.sign_message(ASCII, NOW).unwrap()).await;
    assert!(!verdict.passed, "{:?}", verdict.lines);
    assert_eq!(
        verdict.lines,
        vec!["0 example.test rsa rsa-sha256 fail".to_string()]
    );

    // And a message without any signature is not a pass either.
    let verdict = verify(&dns, ASCII).await;
    assert!(!verdict.passed);
}

/// `header` added to `signed` at the top of the header block, or at its bottom (just before
/// the empty line that ends it).
fn add_header(signed: &[u8], header: &[u8], at_bottom: bool) -> Vec<u8> {
    if !at_bottom {
        return [header, signed].concat();
    }
    let end = signed
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block")
        + 2;
    [&signed[..end], header, &signed[end..]].concat()
}

/// RFC 6376 §8.15: every header field that carries meaning is signed once per occurrence
/// plus once more, so a second Subject:, a Reply-To: or another Cc: added after signing (on
/// top, where a verifier that takes fields bottom-up would not look without oversigning, or
/// at the bottom) breaks the signature; the unchanged message still passes.
#[tokio::test]
async fn headers_added_after_signing_fail_verification() {
    let dns = DnsServer::start(zone()).await;
    let rsa = signer(&[("example.test", "rsa", "rsa2048.pem")]);
    let signed = rsa.sign_message(ASCII, NOW).unwrap();
    let verdict = verify(&dns, &signed).await;
    assert!(verdict.passed, "unchanged: {:?}", verdict.lines);
    // A field the signer does not cover may still be added (a receiver's trace fields).
    let received = add_header(&signed, b"X-Added: by a relay\r\n", false);
    assert!(verify(&dns, &received).await.passed, "an unsigned field");

    let mut passed = Vec::new();
    for (header, at_bottom) in [
        (&b"Subject: Urgent: wire the money\r\n"[..], false),
        (b"Subject: Urgent: wire the money\r\n", true),
        (b"Reply-To: mallory@evil.test\r\n", false),
        (b"Reply-To: mallory@evil.test\r\n", true),
        (b"Cc: mallory@evil.test\r\n", false),
        (b"To: mallory@evil.test\r\n", false),
        (b"Sender: mallory@evil.test\r\n", false),
        (b"Date: Tue, 24 Nov 2026 04:15:31 +0000\r\n", false),
        (b"Message-ID: <other@evil.test>\r\n", false),
        (b"Content-Type: text/html\r\n", false),
        (b"Content-Transfer-Encoding: base64\r\n", false),
        (b"MIME-Version: 1.0\r\n", false),
        (b"List-Unsubscribe: <https://evil.test/u>\r\n", false),
        (
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            false,
        ),
        (b"In-Reply-To: <x@evil.test>\r\n", false),
        (b"References: <x@evil.test>\r\n", false),
    ] {
        let tampered = add_header(&signed, header, at_bottom);
        let verdict = verify(&dns, &tampered).await;
        if verdict.passed {
            passed.push(format!(
                "{} ({})",
                String::from_utf8_lossy(header).trim_end(),
                if at_bottom { "bottom" } else { "top" }
            ));
        }
    }
    assert!(
        passed.is_empty(),
        "still verified after adding: {passed:#?}"
    );
}
